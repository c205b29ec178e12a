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
        if row["skipped"]:  # a lab this machine cannot run (lab 07 without root): said, not graded
            assert row["starter"]["status"] == row["solution"]["status"] == "skip"
            continue
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


def test_audit_names_the_commit_and_warns_of_an_uncommitted_starter(meshlab, clone):
    head = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    starter = clone / "labs" / "01-hello-mesh" / "envoy.yaml"
    starter.write_text(starter.read_text() + "# an instructor's note, not committed yet\n")
    result = meshlab("audit", "1", "--json", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    (row,) = result.json()
    assert row["graded"] == f"commit {head}"
    assert row["ok"] and result.code == 0
    assert row["warnings"] == [f"the starter has uncommitted changes (labs/01-hello-mesh/envoy.yaml); the audit "
                               f"grades commit {head}: commit them, or audit with --working-tree to grade the "
                               "files as they are"]
    text = meshlab("audit", "1", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert f"Starters graded from: commit {head}." in text.stdout and "warning: 01-hello-mesh" in text.stdout


def test_audit_of_the_working_tree_grades_the_edited_starter(meshlab, clone):
    # The instructor's edit (here: a starter that already solves the lab) is what gets graded.
    shutil.copy(clone / "solutions" / "01-hello-mesh" / "envoy.yaml", clone / "labs" / "01-hello-mesh" / "envoy.yaml")
    result = meshlab("audit", "1", "--working-tree", "--json", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    (row,) = result.json()
    assert row["graded"] == "working tree" and row["warnings"] == []
    assert result.code == 1 and "the starter passes every check" in row["problems"][0]


def test_a_failing_solution_is_shown_with_its_failing_checks(meshlab, clone):
    solution = clone / "solutions" / "01-hello-mesh" / "envoy.yaml"
    solution.write_text(solution.read_text().replace("key: x-my-injected-header,", "key: x-my-injected-headers,"))
    result = meshlab("audit", "1", env={"MESHLAB_ROOT": str(clone)}, cwd=clone)
    assert result.code == 1
    assert "01-hello-mesh: the solution's scorecard" in result.stdout
    assert "✘ Envoy adds x-my-injected-header: envoy-was-here to the app's response" in result.stdout
    assert "EXPECTED" in result.stdout and "RECEIVED" in result.stdout
    assert "the solution is graded with uncommitted changes (solutions/01-hello-mesh/envoy.yaml)" in result.stdout
