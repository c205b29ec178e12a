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


def test_a_manifest_without_format_is_format_1(tmp_path):
    assert "format" not in GOOD_LAB
    assert load_course(make_course(tmp_path, GOOD_LAB)).labs[0].title == "Demo"
    (tmp_path / "explicit").mkdir()
    make_course(tmp_path / "explicit", "format: 1\n" + GOOD_LAB)
    assert load_course(tmp_path / "explicit").labs[0].title == "Demo"


@pytest.mark.parametrize("value, message, fix", [
    ("2", "written in manifest format 2; this meshlab reads format 1 only", "upgrade meshlab"),
    ("one", "`format` must be 1, not 'one'", "format: 1"),
    ("true", "`format` must be 1, not True", "format: 1"),
])
def test_a_format_other_than_1_is_refused_at_its_line(tmp_path, value, message, fix):
    make_course(tmp_path, GOOD_LAB.replace("time: 1h15m", f"time: 1h15m\nformat: {value}"))
    with pytest.raises(CourseError) as caught:
        load_course(tmp_path)
    assert message in caught.value.message and fix in caught.value.fix
    assert caught.value.where.line == 4


@pytest.mark.parametrize("change, path, kind, line", [
    # The bug this guards against: an unquoted `: ` in a list item makes a mapping.
    (("hints: [one, two]", "hints:\n  - one\n  - Step 2: the route comes first"), "`hints[1]`", "a mapping", 16),
    (("hints: [one, two]", "hints: [one, two]\ntry:\n  - curl -H 'x-canary: true' http://127.0.0.1:18000/"),
     "`try[0]`", "a mapping", 16),
    (("title: Demo", "title: 2048"), "`title`", "a number", 1),
    (("title: Demo", "title:"), "`title`", "nothing", 1),
    (("summary: A demo lab.", "summary: {a: b}"), "`summary`", "a mapping", 2),
    (("edit: [envoy.yaml]", "edit: [[envoy.yaml]]"), "`edit[0]`", "a list", 4),
    (("edit: [envoy.yaml]", "edit: [envoy.yaml]\nrequires: [yes]"), "`requires[0]`", "true or false", 5),
    (("edit: [envoy.yaml]", "edit: [envoy.yaml]\nprepare:\n  - [sh, make.sh, 3]"), "`prepare[0][2]`", "a number", 6),
])
def test_every_text_of_the_manifest_must_be_a_string(tmp_path, change, path, kind, line):
    old, new = change
    assert old in GOOD_LAB
    make_course(tmp_path, GOOD_LAB.replace(old, new))
    with pytest.raises(CourseError) as caught:
        load_course(tmp_path)
    assert caught.value.message.startswith(f"{path} must be text, but YAML read {kind}"), caught.value.message
    assert caught.value.where.line == line, caught.value.where
    assert "quote" in caught.value.fix


def test_a_prepare_command_must_be_a_list(tmp_path):
    make_course(tmp_path, GOOD_LAB.replace("edit: [envoy.yaml]", "edit: [envoy.yaml]\nprepare:\n  - sh make.sh"))
    with pytest.raises(CourseError, match=r"`prepare\[0\]` must be a list") as caught:
        load_course(tmp_path)
    assert caught.value.where.line == 6


def test_text_problems_lists_every_one_in_file_order(tmp_path):
    from meshlab import yamlfile
    from meshlab.course import text_problems

    broken = GOOD_LAB.replace("hints: [one, two]", "hints:\n  - a: b\n  - fine\n  - c: d").replace(
        "summary: A demo lab.", "summary: 3")
    manifest = make_course(tmp_path, broken) / "labs" / "01-demo" / "lab.yaml"
    problems = text_problems(yamlfile.load(manifest))
    assert [(p.message.split()[0], p.where.line) for p in problems] == [
        ("`summary`", 2), ("`hints[0]`", 15), ("`hints[2]`", 17)]


def test_the_real_course_declares_its_manifest_format(course):
    for lab in course.labs:
        assert (lab.workspace / "lab.yaml").read_text().startswith("format: 1\n"), lab.slug


POD_LAB = GOOD_LAB + """\
pods:
  pod: {address: 10.77.7.2/24, iptables: capture.rules}
  remote: {address: 10.77.7.3/24}
"""


def test_services_in_pods_as_a_user_in_a_cgroup(tmp_path):
    manifest = POD_LAB.replace("    ports: {http: 18080}", "    ports: {http: 18080}\n    pod: remote\n    cgroup: apps") \
        .replace("    after: [app]", "    after: [app]\n    pod: pod\n    user: 1337\n    ports: {listener: 18080, admin: 18001}")
    manifest = manifest.replace("    ports: {listener: 18000, admin: 18001}\n", "")
    lab = load_course(make_course(tmp_path, manifest)).labs[0]
    assert [(p.name, p.ip, p.iptables) for p in lab.pods] == [("pod", "10.77.7.2", "capture.rules"),
                                                              ("remote", "10.77.7.3", None)]
    app, proxy = lab.service("app"), lab.service("proxy")
    assert (app.pod, app.cgroup, app.user) == ("remote", "apps", None)
    assert (proxy.pod, proxy.user) == ("pod", 1337)
    # 18080 twice is fine: each pod is a network of its own; and no port is on the host.
    assert lab.host_ports() == []


@pytest.mark.parametrize("change, message", [
    (("    after: [app]", "    after: [app]\n    pod: nowhere"), "runs in unknown pod 'nowhere'"),
    (("  remote: {address: 10.77.7.3/24}", "  remote: {address: 8.8.8.8/24}"), "must be a private address"),
    (("  remote: {address: 10.77.7.3/24}", "  remote: {address: 10.77.8.3/24}"), "share one subnet"),
    (("  remote: {address: 10.77.7.3/24}", "  remote: {address: 10.77.7.2/24}"), "two pods share an address"),
    (("  remote: {address: 10.77.7.3/24}", "  remote: {address: here}"), "IPv4 address with its prefix"),
    (("    after: [app]", "    after: [app]\n    user: root"), "`user` must be a uid"),
    (("    after: [app]", "    after: [app]\n    cgroup: Not/A/Name"), "`cgroup` must be a short lowercase name"),
])
def test_pod_mistakes_are_reported(tmp_path, change, message):
    old, new = change
    assert old in POD_LAB
    make_course(tmp_path, POD_LAB.replace(old, new))
    with pytest.raises(CourseError) as caught:
        load_course(tmp_path)
    assert message in str(caught.value) and caught.value.where is not None
