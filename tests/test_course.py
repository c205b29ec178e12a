"""Course and lab manifests: what loads, and how a broken manifest is reported."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from meshlab.course import load_course
from meshlab.errors import CourseError, UnknownLab

GOOD_LAB = """\
title: Demo
summary: A demo lab.
time: 1h15m
edit: [envoy.yaml]
services:
  app:
    python: meshlab.apps.hello
    args: [--port, "18080"]
    ports: {http: 18080}
  proxy:
    envoy: envoy.yaml
    ports: {listener: 18000, admin: 18001}
    after: [app]
hints: [one, two]
"""


def make_course(tmp_path: Path, lab_yaml: str, slug: str = "01-demo") -> Path:
    (tmp_path / "course.yaml").write_text(f"title: Test course\nlabs:\n  - {slug}\n")
    folder = tmp_path / "labs" / slug
    folder.mkdir(parents=True)
    (folder / "lab.yaml").write_text(textwrap.dedent(lab_yaml))
    return tmp_path


def test_real_course_loads_and_finds_labs_by_number_or_slug(course):
    lab = course.find("1")
    assert lab.slug == "01-hello-mesh"
    assert course.find("01") is lab and course.find("01-hello-mesh") is lab and course.find("hello-mesh") is lab
    assert lab.checks.is_file(), "every lab has a checker module"
    assert lab.solution.is_dir()
    assert [s.name for s in lab.services] == ["app", "sidecar"]


def test_unknown_lab_lists_the_known_ones(course):
    with pytest.raises(UnknownLab) as caught:
        course.find("99")
    assert "01 (01-hello-mesh)" in caught.value.fix


def test_a_good_manifest_loads(tmp_path):
    course = load_course(make_course(tmp_path, GOOD_LAB))
    lab = course.labs[0]
    assert (lab.number, lab.title, lab.time_minutes) == (1, "Demo", 75)
    proxy = lab.service("proxy")
    assert proxy.kind == "envoy" and proxy.admin_port == 18001 and proxy.inputs == ("envoy.yaml",)
    assert lab.ports() == [("app", "http", 18080), ("proxy", "listener", 18000), ("proxy", "admin", 18001)]


@pytest.mark.parametrize("change, message, line", [
    (("title: Demo", "title: Demo\ncolour: blue"), "unknown key 'colour'", 2),
    (("    after: [app]", "    after: [db]"), "unknown service 'db'", 13),
    (("    ports: {http: 18080}", "    ports: {http: 18000}"), "port 18000 is declared by both", 12),
    (("    ports: {listener: 18000, admin: 18001}", "    ports: {listener: 18000}"), "must declare its admin port", 12),
    (("    python: meshlab.apps.hello", "    python: meshlab.apps.hello\n    command: [x]"), "exactly one of", 6),
    (("    args: [--port, \"18080\"]", "    args: [--port, \"18080\"]\n    ready: soon"), "must be one of: live, admin", 9),
    (("time: 1h15m", "time: soon"), "must look like 45m", 3),
    (("    ports: {http: 18080}", "    ports: {http: 99999}"), "must be a number 1-65535", 9),
])
def test_manifest_mistakes_are_reported_with_their_line(tmp_path, change, message, line):
    old, new = change
    assert old in GOOD_LAB
    make_course(tmp_path, GOOD_LAB.replace(old, new))
    with pytest.raises(CourseError) as caught:
        load_course(tmp_path)
    assert message in str(caught.value)
    assert caught.value.where is not None and caught.value.where.line == line, caught.value.where


def test_lab_folder_names_follow_the_pattern(tmp_path):
    make_course(tmp_path, GOOD_LAB, slug="demo")
    with pytest.raises(CourseError, match="must be named NN-words"):
        load_course(tmp_path)
