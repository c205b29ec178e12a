"""docs/adapting.md, followed step by step on a copy of the course, as an instructor
would: each change is proved by the tool the guide names (the linter, the audit, the
hint command), and each trap the guide warns about is caught with its line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import CAN_ISOLATE, ROOT

from meshlab import platform

GUIDE = (ROOT / "docs" / "adapting.md").read_text()


@pytest.fixture
def course_copy(tmp_path: Path) -> Path:
    dest = tmp_path / "course"
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(".git", ".venv", ".meshlab", "__pycache__", "compose"))
    return dest


def edit(file: Path, old: str, new: str, count: int = -1) -> None:
    text = file.read_text()
    assert old in text, (old, file)
    file.write_text(text.replace(old, new, count))


def test_the_guide_names_the_changes_it_covers():
    for section in ("## Change a port", "## Add or reword a hint", "## Add a check", "## Drop a lab from the day",
                    "## Add a lab"):
        assert section in GUIDE, section
    for command in ("meshlab dev check", "meshlab audit NN --working-tree", "meshlab hint N --all"):
        assert command in GUIDE, command


@pytest.mark.lab_runs
def test_change_a_port(cli, meshlab, course_copy):
    env = {"MESHLAB_ROOT": str(course_copy)}
    lab = course_copy / "labs" / "01-hello-mesh"
    # Steps 1-2: the manifest (ports and try lines), the starter and the solution.
    edit(lab / "lab.yaml", "listener: 10000", "listener: 10010")
    edit(lab / "lab.yaml", "127.0.0.1:10000/", "127.0.0.1:10010/")
    edit(lab / "envoy.yaml", "10000", "10010")
    edit(course_copy / "solutions" / "01-hello-mesh" / "envoy.yaml", "10000", "10010")
    # Step 3: the linter lists every README, deck and hint line that still names 10000.
    lint = cli("dev", "check", env=env, cwd=course_copy)
    assert lint.code == 1
    listed = set(re.findall(r"^(\S+?):(\d+): (?:ports-declared|readme-header):", lint.stdout, flags=re.M))
    for name in ("labs/01-hello-mesh/README.md", "slides/01-hello-mesh.md", "labs/01-hello-mesh/lab.yaml"):
        text = (course_copy / name).read_text().splitlines()
        stale = {str(n) for n, line in enumerate(text, 1) if re.search(r"(?<!\d)10000(?!\d)", line)}
        shown = {line for file, line in listed if file == name}
        # Every stale line is listed (the header paragraph once, at its first line).
        header = _paragraph_at(text, next((n for n, line in enumerate(text, 1) if line.startswith("**Time:**")), 0))
        covered = shown | (header if header & shown else set())
        assert stale - covered == set(), (name, sorted(stale - covered))
    # Step 4: the lab still proves itself on the new port (the checks read it from the manifest).
    args = ["audit", "1", "--working-tree", "--json"] + (["--isolate"] if CAN_ISOLATE else ["--no-isolate"])
    audit = meshlab(*args, env=env, cwd=course_copy)
    (row,) = audit.json()
    assert row["ok"], row["problems"]
    assert audit.code == 0 and row["graded"] == "working tree"


# Every port of the lab moved, and lab 07's pod addresses too: the checks must follow
# the manifest for traffic, Envoy's counters, Prometheus, the trace store and the pods.
MOVED = {
    "07-interception": {"15001": "15011", "15006": "15016", "15000": "15010", "5432": "5442", "8081": "8091",
                        "8080": "8090", "10.77.7.": "10.77.9."},
    "08-observability": {"9090": "9190", "16686": "16696", "4317": "4327", "10001": "10011", "10002": "10012",
                         "10003": "10013", "9901": "9911", "9902": "9912", "9903": "9913", "15091": "15191",
                         "15092": "15192", "15093": "15193", "8081": "8091", "8082": "8092", "8083": "8093"},
}


@pytest.mark.lab_runs
@pytest.mark.parametrize("slug", sorted(MOVED))
def test_change_every_port_of_a_lab(meshlab, course, course_copy, slug):
    missing = platform.unmet(course.find(int(slug[:2])).requires)
    if missing is not None:
        pytest.skip(str(missing))
    moved = MOVED[slug]
    pattern = re.compile("|".join(rf"(?<![\d.]){re.escape(old)}(?!\d)" for old in moved))
    for folder in (course_copy / "labs" / slug, course_copy / "solutions" / slug):
        for file in folder.rglob("*"):
            if file.is_file() and file.suffix in {".yaml", ".yml", ".rules", ".c", ".h", ".py", ".md"}:
                file.write_text(pattern.sub(lambda m: moved[m.group(0)], file.read_text()))
    args = ["audit", slug[:2], "--working-tree", "--json"] + (["--isolate"] if CAN_ISOLATE else ["--no-isolate"])
    audit = meshlab(*args, env={"MESHLAB_ROOT": str(course_copy)}, cwd=course_copy)
    (row,) = audit.json()
    assert row["ok"], row["problems"]


def test_add_a_hint(cli, course_copy):
    env = {"MESHLAB_ROOT": str(course_copy)}
    manifest = course_copy / "labs" / "02-canary" / "lab.yaml"
    count = len(re.findall(r"^  - ", manifest.read_text().split("\nhints:\n", 1)[1], flags=re.M))
    manifest.write_text(manifest.read_text().rstrip("\n") + "\n  - >-\n    Instructor tip: raise your hand"
                                                           " when the split looks wrong.\n")
    assert cli("dev", "check", env=env, cwd=course_copy).code == 0
    shown = cli("hint", "2", "--all", env=env, cwd=course_copy)
    assert shown.code == 0 and f"Hint {count + 1}/{count + 1}: Instructor tip: raise your hand" in shown.stdout


def test_a_hint_yaml_reads_as_a_mapping_is_refused_with_its_line(cli, course_copy):
    env = {"MESHLAB_ROOT": str(course_copy)}
    manifest = course_copy / "labs" / "02-canary" / "lab.yaml"
    manifest.write_text(manifest.read_text().rstrip("\n") + "\n  - Instructor tip: raise your hand\n")
    line = len(manifest.read_text().splitlines())
    for args in (("hint", "2"), ("dev", "check")):
        result = cli(*args, env=env, cwd=course_copy)
        assert result.code == 2, result.output
        assert f"lab.yaml:{line}" in result.stderr and "a mapping" in result.stderr, result.stderr


def test_drop_a_lab_from_the_day(cli, course_copy):
    env = {"MESHLAB_ROOT": str(course_copy)}
    edit(course_copy / "course.yaml", "  - 03-resilience\n", "")
    listed = cli("list", "--json", env=env, cwd=course_copy).json()
    assert "03-resilience" not in [lab["slug"] for lab in listed] and listed[2]["number"] == 4
    assert cli("dev", "check", env=env, cwd=course_copy).code == 0
    assert "lab 03" not in cli("doctor", env=env, cwd=course_copy).stdout


def test_add_a_lab_the_linter_guides(cli, course_copy):
    env = {"MESHLAB_ROOT": str(course_copy)}
    # A new lab begun by copying lab 01's folder: the linter names what still breaks the shape.
    shutil.copytree(course_copy / "labs" / "01-hello-mesh", course_copy / "labs" / "12-my-lab")
    edit(course_copy / "course.yaml", "  - 01-hello-mesh\n", "  - 01-hello-mesh\n  - 12-my-lab\n")
    lint = cli("dev", "check", env=env, cwd=course_copy)
    assert lint.code == 1
    for expected in ("labs/12-my-lab/README.md:1: readme-title", "slides-exist", "verification-scorecard"):
        assert expected in lint.stdout, (expected, lint.stdout)


def _paragraph_at(lines: list[str], first: int) -> set[str]:
    """The numbers (as text) of the lines of the paragraph that starts at line FIRST."""
    numbers = set()
    for n in range(first, len(lines) + 1):
        if n < 1 or not lines[n - 1].strip():
            break
        numbers.add(str(n))
    return numbers
