"""The parsed course kept between commands (meshlab.course_cache): a change to any file
it came from is seen at once, and a broken or foreign cache is never believed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab import course_cache
from meshlab.course import load_course
from meshlab.errors import CourseError
from test_course import GOOD_LAB, make_course


def course_in(folder: Path, lab_yaml: str) -> Path:
    folder.mkdir(parents=True)
    return make_course(folder, lab_yaml)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("MESHLAB_STATE_DIR", str(folder))
    return folder


def test_a_second_load_comes_from_the_cache(tmp_path, state):
    root = course_in(tmp_path / "course", GOOD_LAB)
    first = load_course(root)
    assert (state / course_cache.CACHE_FILE).is_file()
    assert course_cache.read(root) == first
    assert load_course(root) == first


def test_an_edit_of_the_same_size_in_the_same_instant_is_seen(tmp_path, state):
    root = course_in(tmp_path / "course", GOOD_LAB)
    manifest = root / "labs" / "01-demo" / "lab.yaml"
    assert load_course(root).labs[0].service("app").ports == {"http": 18080}
    stat = manifest.stat()
    manifest.write_text(manifest.read_text().replace("18080", "18081"))
    os.utime(manifest, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same time, same size: only the text differs
    assert manifest.stat().st_size == stat.st_size
    assert load_course(root).labs[0].service("app").ports == {"http": 18081}


def test_a_lab_added_to_the_course_is_seen(tmp_path, state):
    root = course_in(tmp_path / "course", GOOD_LAB)
    assert [lab.slug for lab in load_course(root).labs] == ["01-demo"]
    second = root / "labs" / "02-more"
    second.mkdir()
    (second / "lab.yaml").write_text(GOOD_LAB.replace("18080", "28080").replace("18000", "28000")
                                     .replace("18001", "28001"))
    (root / "course.yaml").write_text("title: Test course\nlabs:\n  - 01-demo\n  - 02-more\n")
    assert [lab.slug for lab in load_course(root).labs] == ["01-demo", "02-more"]


def test_a_broken_course_is_never_kept(tmp_path, state):
    root = course_in(tmp_path / "course", GOOD_LAB.replace("title: Demo\n", ""))
    for _ in range(2):
        with pytest.raises(CourseError, match="lacks `title`"):
            load_course(root)
    assert not (state / course_cache.CACHE_FILE).exists()


@pytest.mark.parametrize("content", [b"", b"not a pickle", b"\x80\x05K\x01."])
def test_an_unreadable_or_foreign_cache_is_ignored(tmp_path, state, content):
    root = course_in(tmp_path / "course", GOOD_LAB)
    state.mkdir()
    (state / course_cache.CACHE_FILE).write_bytes(content)
    assert load_course(root).labs[0].title == "Demo"


def test_another_course_is_not_served_from_this_ones_cache(tmp_path, state):
    one = course_in(tmp_path / "one", GOOD_LAB)
    two = course_in(tmp_path / "two", GOOD_LAB.replace("title: Demo", "title: Other"))
    assert load_course(one).labs[0].title == "Demo"
    assert load_course(two).labs[0].title == "Other"
    assert load_course(one).labs[0].title == "Demo"


def test_a_command_served_from_the_cache_needs_no_yaml_parser(tmp_path, state):
    root = course_in(tmp_path / "course", GOOD_LAB)
    load_course(root)
    probe = "import sys, json; from meshlab.course import load_course; load_course(sys.argv[1]); " \
            "print(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", probe, str(root)], env={**os.environ}, capture_output=True,
                          text=True, timeout=60, check=True)
    modules = set(json.loads(proc.stdout))
    assert "yaml" not in modules and "meshlab.yamlfile" not in modules
