"""Grading one lab folder: run its checker (pytest, in a subprocess) and collect results.

The checker runs in a child process so that a crash, a hang or Ctrl-C in a check never
takes the CLI down with it, and so that it can run inside a network namespace of its
own (see `meshlab.isolation`). The child reports through a JSON-lines file (see
`meshlab.pytest_plugin`); we read it as it grows to draw progress.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from meshlab import isolation
from meshlab.course import Course, Lab, run_dir_for
from meshlab.runtime.processes import spawn, tail, terminate_group

# A check that hangs is stopped after this long (pytest-timeout, inside the child).
CHECK_TIMEOUT_S = 120

# The checker's only pytest plugins, named instead of autoloaded: every installed plugin
# (hypothesis, xdist, anyio...) would be imported at each check, and the plugins of an
# installed distribution get their whole package assertion-rewritten (meshlab's, 100+
# modules). Checks fail through CheckFailed, not bare asserts: the checker modules are
# still rewritten, the engine need not be.
CHECKER_PLUGINS = ("-p", "meshlab.pytest_plugin", "-p", "pytest_timeout")

# pytest's own plugins that no check uses and that cost time at every check: the cache
# (a folder written per run), and the hunt for unraisable exceptions, which runs the
# garbage collector over everything pytest and the checker imported as it unconfigures.
# (junitxml stays: its `record_property` is how a check adds a note.)
UNUSED_PLUGINS = ("-p", "no:cacheprovider", "-p", "no:unraisableexception", "-p", "no:threadexception",
                  "-p", "no:doctest", "-p", "no:pastebin")

# The child's entry point (pytest, set up and ended for speed: see its docstring).
CHECKER_MODULE = "meshlab.checker_process"

# How often the CLI looks at the report the checker appends to (progress, and the end).
FOLLOW_INTERVAL_S = 0.01

# How long a checker may take to stop its lab after a Ctrl-C before it is killed (its
# services then die with it, by their parent-death signal).
INTERRUPT_GRACE_S = 15

# The version of `LabResult.to_json`'s format, documented in docs/results-schema.md.
# 2 added `learner` and `finished_at`, so that collected files can be told apart.
RESULT_SCHEMA_VERSION = 2


@dataclass
class CheckResult:
    id: str
    title: str
    status: str                     # "pass", "fail", "error" or "skip"
    message: str | None = None
    expected: str | None = None
    received: str | None = None
    hint: str | None = None
    duration: float = 0.0
    logs: dict[str, str] = field(default_factory=dict)
    output: str | None = None
    notes: list[str] = field(default_factory=list)   # information measured, not a verdict


@dataclass
class LabResult:
    lab: str
    number: int
    title: str
    path: str
    status: str                     # "pass", "fail" or "error"
    checks: list[CheckResult] = field(default_factory=list)
    error: dict | None = None       # for status "error": what is broken, where, how to fix
    duration: float = 0.0
    run_dir: str | None = None
    learner: str | None = None      # who ran it (`meshlab check --learner`), for a class report
    finished_at: str | None = None  # ISO 8601 in UTC, to the second

    @property
    def passed(self) -> int:
        return sum(1 for c in self.checks if c.status == "pass")

    @property
    def exit_code(self) -> int:
        return {"pass": 0, "fail": 1}.get(self.status, 2)

    def to_json(self) -> dict:
        """One object with an entry per check, in the spirit of exercism's results.json."""
        data = asdict(self)
        data["version"] = RESULT_SCHEMA_VERSION
        data["message"] = self.error["message"] if self.error else None
        for check in data["checks"]:
            if check["status"] == "pass":
                del check["logs"]  # logs only help where something failed
        return data


Event = dict
OnEvent = Callable[[Event], None]


def run_checks(course: Course, lab: Lab, lab_dir: Path, *, isolate: bool = False,
               run_dir: Path | None = None, on_event: OnEvent | None = None,
               runtime: str | None = None, preflight_passed: str | None = None) -> LabResult:
    """Grade LAB_DIR against LAB's checker; never raises for a broken lab (status error).
    PREFLIGHT_PASSED: the digest of the files that just passed preflight (`meshlab watch`)."""
    checker = Checker(course, lab, lab_dir, isolate=isolate, run_dir=run_dir, runtime=runtime)
    return checker.run(on_event, preflight_passed=preflight_passed)


class Checker:
    """One run of a lab's checker. Started AHEAD, its process starts now (Python, pytest,
    the plugin, the checker module: the largest fixed cost of a check) and waits on a
    FIFO until `run` says go, so that `meshlab watch` pays none of that after a save."""

    def __init__(self, course: Course, lab: Lab, lab_dir: Path, *, isolate: bool = False,
                 run_dir: Path | None = None, runtime: str | None = None, ahead: bool = False):
        self.course, self.lab, self.lab_dir = course, lab, Path(lab_dir).resolve()
        self.run_dir = run_dir
        report_dir = course.state_dir / "reports"
        report_dir.mkdir(parents=True, exist_ok=True)
        stamp = f"{lab.slug}-{os.getpid()}-{time.monotonic_ns()}"
        self.report, self.output = report_dir / f"{stamp}.jsonl", report_dir / f"{stamp}.out"
        # pytest's tmp_path for the checks (lab 04's test clients' keys): a folder of this
        # check's own, removed when it ends however it ends, not kept in the system's temp
        # folder for the next three pytest sessions of the user.
        self.scratch = report_dir / f"{stamp}.tmp"
        self.go = report_dir / f"{stamp}.go" if ahead else None
        pytest_args = [
            str(lab.checks), "-q", "--no-header", *UNUSED_PLUGINS, *CHECKER_PLUGINS, "-o", "addopts=",
            "-o", f"timeout={CHECK_TIMEOUT_S}", "--rootdir", str(course.root),
            "--meshlab-path", str(self.lab_dir), "--meshlab-report", str(self.report),
            "--basetemp", str(self.scratch),
        ]
        if run_dir is not None:
            pytest_args += ["--meshlab-run-dir", str(run_dir)]
        if self.go is not None:
            os.mkfifo(self.go, 0o600)
            pytest_args += ["--meshlab-go", str(self.go)]
        process_args = ["--lab", lab.slug, *pytest_args]  # launch the lab while pytest loads
        self.argv = (isolation.wrap_python(CHECKER_MODULE, process_args) if isolate
                     else [sys.executable, "-m", CHECKER_MODULE, *process_args])
        self.env = {**os.environ, "MESHLAB_ROOT": str(course.root), "MESHLAB_STATE_DIR": str(course.state_dir),
                    "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
        if runtime is not None:
            self.env["MESHLAB_RUNTIME"] = runtime  # the checker's session starts the lab on it
        self.child: subprocess.Popen | None = None
        if ahead:
            self._spawn()

    def _spawn(self) -> None:
        with open(self.output, "wb") as out:
            # SIGTERM, not SIGKILL, if we die: the checker removes its temporary folder (keys)
            # and dies of it; the lab's processes die with it (their parent-death signal), pods
            # go with their reaper, and the next command clears the run's record.
            self.child = spawn(self.argv, cwd=self.course.root, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                               die_with_parent=True, death_signal=signal.SIGTERM)

    def start(self) -> None:
        """Start the checker's process now (it runs the checks at once); `run` follows it."""
        if self.child is None:
            self._spawn()

    def run(self, on_event: OnEvent | None = None, *, preflight_passed: str | None = None) -> LabResult:
        lab = self.lab
        result = LabResult(lab=lab.slug, number=lab.number, title=lab.title, path=str(self.lab_dir), status="error",
                           run_dir=str(self.run_dir or run_dir_for(self.course, lab, self.lab_dir)))
        started = time.monotonic()
        if self.child is None:
            if preflight_passed:
                from meshlab.preflight import PASSED_ENV

                self.env[PASSED_ENV] = preflight_passed
            self._spawn()
        child = self.child
        try:
            with _PassedOn(child) as interrupts:
                if self.go is not None:  # started ahead (so not spawned just now): waiting for the word
                    self._say_go(preflight_passed or "")
                events = _follow(self.report, child, on_event, interrupts)
            if interrupts.arrived is not None:
                raise KeyboardInterrupt  # now that the checker has stopped the lab and ended
        except KeyboardInterrupt:
            self.interrupt()
            raise
        finally:
            if self.go is not None:
                self.go.unlink(missing_ok=True)
            shutil.rmtree(self.scratch, ignore_errors=True)  # the checker may have been killed
        result.duration = round(time.monotonic() - started, 2)
        result.finished_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        _fill(result, events, child.returncode, self.output)
        if result.status != "error":
            self.report.unlink(missing_ok=True)
            self.output.unlink(missing_ok=True)
        return result

    def _say_go(self, digest: str) -> None:
        """Tell the waiting checker to run (with the digest of the files that passed
        preflight), once it has opened its end of the FIFO; a checker that died before
        that is left to `_follow`, which reports how it ended."""
        while self.child.poll() is None:
            try:
                descriptor = os.open(self.go, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: no reader yet, it is still importing
                time.sleep(0.005)
                continue
            try:
                os.write(descriptor, f"go {digest}\n".encode())
            finally:
                os.close(descriptor)
            return

    def interrupt(self) -> None:
        """Pass a Ctrl-C on to a started checker and wait while it stops the lab (the
        CLI's, between `start` and the end of `run`)."""
        child = self.child
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGINT)
            try:
                child.wait(timeout=INTERRUPT_GRACE_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        # Nobody will read what an interrupted run reported.
        for path in (self.go, self.report, self.output):
            if path is not None:
                path.unlink(missing_ok=True)

    def cancel(self) -> None:
        """Stop a checker started ahead that will not be needed (it runs no lab yet)."""
        if self.child is not None and self.child.poll() is None:
            terminate_group(self.child.pid, self.child.pid, popen=self.child)  # spawn gave it its own session
        for path in (self.go, self.report, self.output):
            if path is not None:
                path.unlink(missing_ok=True)
        shutil.rmtree(self.scratch, ignore_errors=True)


def default_learner(root: Path) -> str | None:
    """Who is checking, when `--learner` is not given: $MESHLAB_LEARNER, else git's user.name."""
    named = os.environ.get("MESHLAB_LEARNER", "").strip()
    if named:
        return named
    try:
        git = subprocess.run(["git", "config", "user.name"], cwd=root, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return git.stdout.strip() or None


class _PassedOn:
    """While a checker runs, a Ctrl-C (or SIGTERM) is passed on to it as Ctrl-C and
    noted in ARRIVED; `run` raises it once the checker has stopped the lab and ended.
    Raised where it arrived instead, it could come between the lock that Popen.poll
    takes and the `try` that releases it: no wait saw the checker end after that (15 s,
    then a kill). Only the main thread sets handlers; elsewhere, signals go as before."""

    def __init__(self, child: subprocess.Popen):
        self.child = child
        self.arrived: float | None = None  # when the first signal came
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "_PassedOn":
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._pass_on) for number in (signal.SIGINT, signal.SIGTERM)}
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)

    def _pass_on(self, number: int, frame: object) -> None:
        if self.arrived is None:
            self.arrived = time.monotonic()
            if self.child.returncode is None:  # not reaped: its PID is still its own
                os.kill(self.child.pid, signal.SIGINT)

    def overdue(self) -> bool:
        """Whether the checker had long enough to stop after the signal."""
        return self.arrived is not None and time.monotonic() - self.arrived > INTERRUPT_GRACE_S


def _follow(report: Path, child: subprocess.Popen, on_event: OnEvent | None,
            interrupts: _PassedOn | None = None) -> list[Event]:
    events: list[Event] = []
    position = 0
    while True:
        if interrupts is not None and interrupts.overdue() and child.poll() is None:
            child.kill()
        finished = child.poll() is not None
        if report.exists():
            with open(report, encoding="utf-8") as handle:
                handle.seek(position)
                while True:
                    line = handle.readline()
                    if not line.endswith("\n"):
                        break  # a line still being written: read it next time
                    position = handle.tell()
                    event = json.loads(line)
                    events.append(event)
                    if on_event:
                        on_event(event)
        if finished:
            return events
        time.sleep(FOLLOW_INTERVAL_S)


def _fill(result: LabResult, events: list[Event], returncode: int, output: Path) -> None:
    for event in events:
        if event["event"] == "check":
            fields = {k: event.get(k) for k in CheckResult.__dataclass_fields__ if k in event}
            result.checks.append(CheckResult(**fields))
        elif event["event"] == "error":
            result.error = event["error"]
    if result.error:
        result.status = "error"
    elif returncode in (0, 1) and result.checks:
        result.status = "pass" if all(c.status in ("pass", "skip") for c in result.checks) else "fail"
        if any(c.status == "error" for c in result.checks):
            result.status = "fail"
    else:
        # pytest itself failed (a broken checker module, an interrupted run): a course bug
        # or a broken environment, not the learner's mistake. Show pytest's own words.
        result.error = {
            "kind": "checker",
            "message": f"the checker did not run to completion (pytest exit code {returncode})",
            "where": None,
            "fix": f"the whole output is in {output}",
            "details": tail(output, 25),
        }
