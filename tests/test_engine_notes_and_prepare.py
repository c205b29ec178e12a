"""Two small engine features: notes a check records for the learner (shown whatever
the verdict), and prepare steps that find the course's own tools on PATH."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from meshlab.checking import CheckResult, LabResult, _fill
from meshlab.course import load_lab
from meshlab.runtime.local import run_prepare_steps

CHECKER = '''
import pytest

@pytest.mark.meshlab_check(title="measures", hint=None)
def test_measures(record_property):
    record_property("note", "p50 1.0 ms")
    record_property("other", "not a note")

def test_fails_with_note(record_property):
    record_property("note", "seen before failing")
    assert False, "the verdict"
'''


def test_notes_reach_the_report_for_passing_and_failing_checks(tmp_path: Path):
    (tmp_path / "test_notes.py").write_text(CHECKER)
    report = tmp_path / "report.jsonl"
    subprocess.run([sys.executable, "-m", "pytest", str(tmp_path / "test_notes.py"), "-q", "-p", "no:cacheprovider",
                    "-o", "addopts=", "--rootdir", str(tmp_path), "--meshlab-report", str(report)],
                   cwd=tmp_path, capture_output=True, text=True, timeout=120)
    events = [json.loads(line) for line in report.read_text().splitlines()]
    checks = {e["id"]: e for e in events if e["event"] == "check"}
    assert checks["test_measures"]["status"] == "pass"
    assert checks["test_measures"]["notes"] == ["p50 1.0 ms"]
    assert checks["test_fails_with_note"]["status"] == "fail"
    assert checks["test_fails_with_note"]["notes"] == ["seen before failing"]

    result = LabResult(lab="x", number=1, title="x", path=".", status="error")
    _fill(result, events, 1, tmp_path / "out")
    assert [c.notes for c in result.checks] == [["p50 1.0 ms"], ["seen before failing"]]
    assert CheckResult(id="a", title="a", status="pass").notes == []


def test_prepare_steps_find_the_course_tools_first_on_path(tmp_path: Path, monkeypatch):
    lab_dir = tmp_path / "labs" / "09-prep"
    lab_dir.mkdir(parents=True)
    (lab_dir / "lab.yaml").write_text(
        "title: prep\nprepare:\n  - [sh, -c, 'command -v meshlab > found.txt']\n"
        "services:\n  app:\n    python: meshlab.apps.hello\n    args: [--port, '1']\n")
    lab = load_lab(tmp_path, "09-prep")
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # as when the virtualenv is not activated
    run_prepare_steps(lab, lab_dir)
    found = (lab_dir / "found.txt").read_text().strip()
    assert Path(found).parent == Path(sys.executable).parent
    assert os.environ["PATH"] == "/usr/bin:/bin"  # the caller's environment is left alone
