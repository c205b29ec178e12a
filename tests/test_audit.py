"""`meshlab audit`: the course proves itself (every starter fails, every solution
passes), and the audit itself notices a lab that cannot tell unsolved from solved."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from conftest import ROOT

pytestmark = pytest.mark.lab_runs


@pytest.mark.timeout(1500)
def test_the_whole_course_passes_its_audit(meshlab, course):
    result = meshlab("audit", "--json", "--jobs", "2", timeout=1200)
    rows = result.json()
    assert [row["lab"] for row in rows] == [lab.slug for lab in course.labs]
    for row in rows:
        assert row["ok"], (row["lab"], row["problems"])
        assert row["starter"]["status"] == "fail" and row["solution"]["status"] == "pass"
    assert result.code == 0


@pytest.fixture
def clone(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    dest = tmp_path / "course"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest)], check=True)
    return dest


def commit(clone, message: str) -> None:
    subprocess.run(["git", "-C", str(clone), "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", message],
                   check=True)


def test_a_starter_that_already_passes_fails_the_audit(meshlab, clone):
    shutil.copy(clone / "solutions" / "01-hello-mesh" / "envoy.yaml", clone / "labs" / "01-hello-mesh" / "envoy.yaml")
    commit(clone, "starter = solution")
    result = meshlab("audit", "1", "--json", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert result.code == 1
    (row,) = result.json()
    assert not row["ok"] and "the starter passes every check" in row["problems"][0]


def test_a_broken_solution_fails_the_audit(meshlab, clone):
    solution = clone / "solutions" / "01-hello-mesh" / "envoy.yaml"
    solution.write_text(solution.read_text().replace("port_value: 8080", "port_value: 8081"))
    commit(clone, "break the solution")
    result = meshlab("audit", "1", "--json", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert result.code == 1
    (row,) = result.json()
    assert any(p.startswith("the solution fails:") for p in row["problems"])


def test_audit_grades_the_committed_starter_not_the_learners_edits(meshlab, clone):
    # A learner solved lab 1 in the workspace: the audit must still see the starter fail.
    shutil.copy(clone / "solutions" / "01-hello-mesh" / "envoy.yaml", clone / "labs" / "01-hello-mesh" / "envoy.yaml")
    result = meshlab("audit", "1", "--json", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert result.code == 0, result.output
    assert result.json()[0]["starter"]["status"] == "fail"
