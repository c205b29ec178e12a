"""meshlab's pytest plugin: the fixtures checks use, and the report the CLI renders.

Registered through the `pytest11` entry point, so it is loaded in every pytest run but
does nothing until a check asks for the `lab` fixture. A checker module names its lab:

    pytestmark = pytest.mark.lab("01-hello-mesh")

Options (set by `meshlab check`; all optional when running pytest by hand):
    --meshlab-path DIR       grade the lab files in DIR (default: the lab's workspace)
    --meshlab-run-dir DIR    keep state and logs there
    --meshlab-report FILE    write one JSON line per event (start, check, error, end)
    --meshlab-go FIFO        once collected, wait for a line `go DIGEST` on FIFO before
                             running (a checker `meshlab watch` started ahead of a save;
                             DIGEST, if any, is of the files that just passed preflight)

The report is how `meshlab check` learns results while the run goes on (it draws the
progress bar from it): the first line lists the checks, one line per finished check
follows (id, title, status, message, expected, received, hint, logs, notes), then the end.
A check adds a note (shown with its result, whatever the verdict) with pytest's
`record_property("note", "p50 1.2 ms")`.
"""

from __future__ import annotations

import json
import os
import time
import traceback
from pathlib import Path
from typing import IO, Iterator

import pytest

from meshlab.course import Course, Lab, load_course
from meshlab.errors import MeshlabError
from meshlab.grading.failures import CheckFailed
from meshlab.grading.raised import Raised
from meshlab.preflight import PASSED_ENV
from meshlab.session import LabSession, run_dir_for

_REPORT = pytest.StashKey["_Report"]()
_SESSION_ERROR = pytest.StashKey[MeshlabError]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("meshlab", "meshlab lab checks")
    group.addoption("--meshlab-path", metavar="DIR", help="grade the lab files in DIR")
    group.addoption("--meshlab-run-dir", metavar="DIR", help="state and logs of the run")
    group.addoption("--meshlab-report", metavar="FILE", help="write JSON-lines results to FILE")
    group.addoption("--meshlab-go", metavar="FIFO", help="wait for `go DIGEST` on FIFO before running the checks")


def pytest_configure(config: pytest.Config) -> None:
    global _full_trace
    config.addinivalue_line("markers", "lab(slug): the lab a checker module grades")
    config.addinivalue_line("markers", "meshlab_check(title, hint): a graded check and its hint")
    _full_trace = bool(config.getoption("fulltrace", default=False))
    path = config.getoption("--meshlab-report", default=None)
    if path:
        config.stash[_REPORT] = _Report(Path(path))


_full_trace = False  # pytest's --full-trace (the hook below has no config of its own)


@pytest.hookimpl(tryfirst=True)
def pytest_keyboard_interrupt(excinfo: pytest.ExceptionInfo[BaseException]) -> None:
    """Cut a Ctrl-C's traceback (or a pytest.exit's) down to where it struck, before
    pytest's terminal formats it. It formats every frame, reading and parsing each one's
    whole source file, to print one line (the last frame) unless --full-trace is given;
    and it does so before the session ends, so the lab kept running meanwhile: half a
    second with a checker's stack, seconds on a busy machine, between the learner's
    Ctrl-C and the lab's stop."""
    if _full_trace:
        return
    traceback = excinfo.traceback
    for index in range(len(traceback) - 1, -1, -1):
        if not traceback[index].ishidden(excinfo):
            excinfo.traceback = traceback[index:]  # from the frame pytest shows on
            break
    excinfo.value.__suppress_context__ = True  # an exception being handled there is not shown either


class _Report:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = open(path, "w", encoding="utf-8")

    def write(self, event: str, **fields: object) -> None:
        self._file.write(json.dumps({"event": event, "time": time.time(), **fields}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _check_info(item: pytest.Item) -> dict:
    marker = item.get_closest_marker("meshlab_check")
    title = marker.kwargs.get("title") if marker else None
    if not title:
        doc = getattr(item.obj, "__doc__", None) or item.name
        title = doc.strip().splitlines()[0]
    return {"id": item.name, "title": title, "hint": marker.kwargs.get("hint") if marker else None}


def pytest_collection_finish(session: pytest.Session) -> None:
    go = session.config.getoption("--meshlab-go", default=None)
    if go:
        _wait_for_go(Path(go))
    report = session.config.stash.get(_REPORT, None)
    if report:
        report.write("start", checks=[_check_info(item) for item in session.items])


def _wait_for_go(fifo: Path) -> None:
    """Block until the watcher says go; the files' preflight digest comes with it."""
    with open(fifo, encoding="utf-8") as pipe:
        line = pipe.readline()
    if not line.startswith("go"):
        pytest.exit("called off before it ran", returncode=0)
    digest = line[2:].strip()
    if digest:
        os.environ[PASSED_ENV] = digest


def _lab_of(request: pytest.FixtureRequest, course: Course) -> Lab:
    slugs = {m.args[0] for item in request.session.items for m in item.iter_markers("lab")}
    if len(slugs) != 1:
        raise pytest.UsageError(
            "a checker module must name exactly one lab with pytestmark = pytest.mark.lab('NN-slug'); "
            f"this run names {sorted(slugs) or 'none'}")
    return course.find(slugs.pop())


@pytest.fixture(scope="session")
def lab_folder(request: pytest.FixtureRequest) -> Path:
    """The folder being graded, for a check that starts nothing of the lab's manifest
    (one that brings up the learner's own compose file, for instance)."""
    spec = _lab_of(request, load_course())
    return Path(request.config.getoption("--meshlab-path") or spec.workspace).resolve()


@pytest.fixture(scope="session")
def lab(request: pytest.FixtureRequest) -> Iterator[LabSession]:
    """The lab under test, started once per run (or attached to, if the learner left it
    running with `meshlab start`), stopped at the end if this run started it."""
    config = request.config
    try:
        course = load_course()
        spec = _lab_of(request, course)
        lab_dir = Path(config.getoption("--meshlab-path") or spec.workspace).resolve()
        run_dir = Path(config.getoption("--meshlab-run-dir") or run_dir_for(course, spec, lab_dir))
        session = LabSession.open(spec, lab_dir, run_dir)
    except MeshlabError as error:
        # The input or the machine is broken: no check can say anything useful.
        config.stash[_SESSION_ERROR] = error
        report = config.stash.get(_REPORT, None)
        if report:
            report.write("error", error=error.to_dict())
        pytest.exit(str(error), returncode=2)
    try:
        yield session
    finally:
        session.close()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A check starts with the whole lab, its fixtures too: what an earlier check left
    stopped comes back first (`LabSession.stopped`)."""
    session = _active_session(item)
    if session is not None:
        session.restore()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_call(item: pytest.Item) -> None:
    """A check does not start while the learner's code in a service has raised: the
    exception is the cause of whatever the check would find, and waiting for a service
    that serves nothing takes long."""
    session = _active_session(item)
    raised = session.raised() if session is not None else None
    if raised is not None:
        raise _raised_failure(session, raised)


def _raised_failure(session: LabSession, raised: Raised) -> CheckFailed:
    return CheckFailed(
        raised.summary,
        expected=f"{raised.service} runs your code without an exception",
        received=raised.details(),
        hint=f"fix {raised.where.file} line {raised.where.line}; the whole traceback is in "
             f"{session.runtime.log_path(raised.service)}",
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    result: pytest.TestReport = outcome.get_result()
    report = item.config.stash.get(_REPORT, None)
    failed_setup = result.when == "setup" and not result.passed
    if report is None or not (result.when == "call" or failed_setup):
        return
    if failed_setup and item.config.stash.get(_SESSION_ERROR, None) is not None:
        return  # reported once as an error event
    entry = {**_check_info(item), "status": "pass" if result.passed else "fail",
             "duration": round(result.duration, 3)}
    # Information a check measured for the learner, pass or fail (pytest's built-in
    # `record_property("note", text)`); never a verdict.
    notes = [str(value) for name, value in result.user_properties if name == "note"]
    if notes:
        entry["notes"] = notes
    if result.skipped:
        entry["status"] = "skip"
        entry["message"] = str(call.excinfo.value) if call.excinfo else ""
    elif not result.passed and call.excinfo is not None:
        error = call.excinfo.value
        session = _active_session(item)
        raised = session.raised() if session is not None else None
        if raised is not None and isinstance(error, CheckFailed) and error.summary != raised.summary:
            # The learner's code raised while the check ran: that is the cause to show.
            error = _raised_failure(session, raised)
        if isinstance(error, CheckFailed):
            entry.update(message=error.summary, expected=error.expected, received=error.received,
                         hint=error.hint or entry["hint"])
        elif isinstance(error, MeshlabError):
            entry.update(status="error", message=str(error))
        elif isinstance(error, AssertionError):
            entry["message"] = str(error).strip() or "an assertion failed"
        else:
            entry.update(status="error", message=f"the check could not run: {type(error).__name__}: {error}",
                         output="".join(traceback.format_exception(error))[-3000:])
        if session is not None:
            entry["logs"] = session.logs()
    report.write("check", **entry)


def _active_session(item: pytest.Item) -> LabSession | None:
    fixture_defs = item._fixtureinfo.name2fixturedefs.get("lab") if hasattr(item, "_fixtureinfo") else None
    if not fixture_defs:
        return None
    cached = getattr(fixture_defs[-1], "cached_result", None)
    if cached and isinstance(cached[0], LabSession):
        return cached[0]
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    report = session.config.stash.get(_REPORT, None)
    if report:
        report.write("end", exitstatus=int(exitstatus))
        report.close()
