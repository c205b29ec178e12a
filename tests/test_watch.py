"""`meshlab watch` for real: a save re-checks, restarting only the service whose file
changed; a broken save is reported and restarts nothing; nothing is left afterwards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CAN_ISOLATE, ROOT
from meshlab import isolation
from meshlab.runtime import stop_run
from test_teardown import processes_in

pytestmark = pytest.mark.lab_runs

SCRIPT = """
import json, sys, threading, time
from pathlib import Path
from meshlab.course import load_course
from meshlab.watch import watch

course = load_course()
lab = course.find(1)
lab_dir = Path(sys.argv[1])
saves = [Path(sys.argv[2]).read_text(), "admin: [\\n"]
events = []

def save_next():
    time.sleep(0.5)  # a later mtime than the first look
    draft = lab_dir / "envoy.yaml.draft"  # saved whole, as editors do: write, then rename
    draft.write_text(saves.pop(0))
    draft.replace(lab_dir / "envoy.yaml")

def on_result(result, restarted):
    pids = {name: s["pid"] for name, s in json.loads((Path(result.run_dir) / "state.json").read_text())["services"].items()}
    events.append({"status": result.status, "restarted": restarted, "passed": result.passed, "pids": pids})
    threading.Thread(target=save_next).start()

def on_error(error):
    events.append({"error": error.message})

watch(course, lab, lab_dir, on_result=on_result, on_error=on_error, on_waiting=lambda files: None,
      max_rounds=3)
print(json.dumps(events))
"""


def test_watch_rechecks_on_save_and_restarts_only_what_changed(lab_copy, state_dir):
    starter = lab_copy(1, base="starter", name="work")
    solution = lab_copy(1, base="solution", name="solved") / "envoy.yaml"
    argv = [sys.executable, "-c", SCRIPT, str(starter), str(solution)]
    if CAN_ISOLATE:
        argv = isolation.wrap(argv)
    env = {"MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    first, second, broken = json.loads(proc.stdout.strip().splitlines()[-1])
    assert first["status"] == "fail" and sorted(first["restarted"]) == ["app", "sidecar"]
    assert second["status"] == "pass" and second["restarted"] == ["sidecar"]
    assert second["pids"]["sidecar"] != first["pids"]["sidecar"]
    assert "is not valid YAML" in broken["error"]
    assert processes_in(starter) == []


DETACHED_SCRIPT = """
import json, sys, threading, time
from pathlib import Path
from meshlab.course import load_course
from meshlab.runtime import LocalRuntime, read_state
from meshlab.session import run_dir_for
from meshlab.watch import watch

course = load_course()
lab = course.find(1)
lab_dir = Path(sys.argv[1])
run_dir = run_dir_for(course, lab, lab_dir)
LocalRuntime(lab, lab_dir, run_dir, detached=True).start_all()  # as `meshlab start 1` does
events = []

def save_comment():
    time.sleep(0.5)
    config = lab_dir / "envoy.yaml"
    config.write_text(config.read_text() + "# saved again\\n")

def on_result(result, restarted):
    events.append({"status": result.status, "restarted": restarted})
    threading.Thread(target=save_comment).start()

watch(course, lab, lab_dir, on_result=on_result, on_error=lambda e: events.append({"error": e.message}),
      on_waiting=lambda files: None, max_rounds=2)
print(json.dumps({"events": events, "run_dir": str(run_dir),
                  "pids": {n: s.pid for n, s in read_state(run_dir).services.items()}}))
"""


def test_watch_on_a_started_lab_keeps_the_state_true_when_checks_restart_the_app(lab_copy, state_dir):
    # The README's sequence: `meshlab start 1`, `meshlab watch 1`, save. Lab 01's checks
    # stop and restart the app; the watcher must follow, not start a second app.
    solved = lab_copy(1, base="solution", name="solved")
    argv = [sys.executable, "-c", DETACHED_SCRIPT, str(solved)]
    if CAN_ISOLATE:
        argv = isolation.wrap(argv)
    env = {"MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": str(state_dir)}
    proc = subprocess.run(argv, cwd=ROOT, env={**os.environ, **env}, capture_output=True, text=True, timeout=180)
    try:
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout.strip().splitlines()[-1])
        first, second = report["events"]
        assert first["status"] == "pass" and second["status"] == "pass", report
        assert second["restarted"] == ["sidecar"]
        running = {p.pid for p in processes_in(solved)}
        assert running == set(report["pids"].values()), "the state file names other processes than run"
    finally:
        stop_run(Path(report["run_dir"])) if proc.returncode == 0 else None
    assert processes_in(solved) == []
