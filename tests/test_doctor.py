"""`meshlab doctor` gives an instructor a verdict: which labs this machine is ready for,
and for each lab that is not, what is missing and how to get it."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from meshlab import doctor
from meshlab.course import load_course


@pytest.fixture
def course_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "course"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv", ".meshlab", "__pycache__"))
    return dest


def require(course_root: Path, slug: str, name: str) -> None:
    manifest = course_root / "labs" / slug / "lab.yaml"
    manifest.write_text(manifest.read_text() + f"requires: [{name}]\n")


def test_a_lab_needing_a_missing_tool_is_named_with_its_fix(cli, course_copy):
    require(course_copy, "02-canary", "no-such-tool-here")
    result = cli("doctor", "--json", env={"MESHLAB_ROOT": str(course_copy)}, cwd=course_copy)
    assert result.code == 1, result.output
    report = result.json()
    lab02 = next(lab for lab in report["labs"] if lab["slug"] == "02-canary")
    assert not lab02["ready"]
    assert [m for m in lab02["missing"] if not m["what"].startswith("127.0.0.1:")] == [
        {"what": "no-such-tool-here", "detail": "not installed",
         "fix": "install `no-such-tool-here` with your package manager and make sure it is on PATH"}]
    # The other labs lack nothing but, perhaps, a port some other program holds here.
    for lab in report["labs"]:
        if lab["slug"] != "02-canary":
            assert all(m["what"].startswith("127.0.0.1:") for m in lab["missing"]), lab
    assert 2 in _numbers(report["verdict"].split("not for")[-1])


def _numbers(ranges: str) -> set[int]:
    """'01-06, 09 (see below)' -> {1, ..., 6, 9}."""
    found = set()
    for low, high in re.findall(r"(\d\d)(?:-(\d\d))?", ranges):
        found.update(range(int(low), int(high or low) + 1))
    return found
    text = cli("doctor", env={"MESHLAB_ROOT": str(course_copy)}, cwd=course_copy)
    assert "not for 02" in text.stdout and "lab 02 (02-canary): no-such-tool-here" in text.stdout


def test_only_the_features_the_course_requires_are_listed(course_copy):
    # Labs 07 and 11 require the interception features; without them, only namespaces are listed.
    manifest = course_copy / "labs" / "07-interception" / "lab.yaml"
    manifest.write_text(manifest.read_text().replace("requires: [pods, iptables, bpf, clang]", "requires: []"))
    manifest = course_copy / "labs" / "11-mini-mesh" / "lab.yaml"
    manifest.write_text(manifest.read_text().replace("requires: [pods, iptables, redis-server]", "requires: []"))
    findings = doctor.diagnose(load_course(course_copy))
    assert {f.name for f in findings if f.group == "features"} == {"netns"}
    require(course_copy, "03-resilience", "bpf")
    findings = doctor.diagnose(load_course(course_copy))
    assert {f.name for f in findings if f.group == "features"} == {"netns", "bpf"}


@pytest.mark.parametrize("numbers, text", [([1, 2, 3], "01-03"), ([1, 3, 4, 6], "01, 03-04, 06"), ([7], "07")])
def test_lab_numbers_read_as_ranges(numbers, text):
    assert doctor._ranges(numbers) == text
