"""`meshlab watch`: re-validate and re-check every time the learner saves a lab file.

The lab keeps running between saves; a save restarts only the services whose files
changed (an Envoy whose config changed; the app keeps its state), then the checks run
against it. A file that does not pass preflight is reported and nothing restarts:
the last good config keeps serving, as it would in a real mesh.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from meshlab import preflight
from meshlab.checking import LabResult, run_checks
from meshlab.course import Course, Lab
from meshlab.errors import MeshlabError
from meshlab.runtime import LocalRuntime
from meshlab.session import run_dir_for


def _watched_files(lab: Lab, lab_dir: Path) -> list[Path]:
    names = {*lab.edit, *(name for spec in lab.services for name in spec.inputs)}
    return sorted(lab_dir / name for name in names)


def _fingerprint(files: list[Path]) -> tuple:
    stamps = []
    for path in files:
        try:
            info = path.stat()
            stamps.append((str(path), info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamps.append((str(path), None, None))
    return tuple(stamps)


def _settled(files: list[Path], quiet: float) -> tuple:
    """The fingerprint once the files stopped changing for QUIET seconds: an editor may
    write a file in several steps, and half a file is not the learner's config."""
    current = _fingerprint(files)
    while True:
        time.sleep(quiet)
        later = _fingerprint(files)
        if later == current:
            return current
        current = later


def watch(course: Course, lab: Lab, lab_dir: Path, *,
          on_result: Callable[[LabResult, list[str]], None],
          on_error: Callable[[MeshlabError], None],
          on_waiting: Callable[[list[Path]], None],
          poll_interval: float = 0.3, quiet: float = 0.2, max_rounds: int | None = None) -> None:
    """Run until interrupted (or MAX_ROUNDS checks, for tests)."""
    lab_dir = Path(lab_dir).resolve()
    run_dir = run_dir_for(course, lab, lab_dir)
    runtime = LocalRuntime.attach(lab, run_dir)
    if runtime is not None and runtime.lab_dir != lab_dir:
        raise MeshlabError(f"lab {lab.slug} is already running from {runtime.lab_dir}",
                           fix=f"stop it first: meshlab stop {lab.number}")
    owned = runtime is None
    files = _watched_files(lab, lab_dir)
    rounds = 0
    seen = None
    try:
        while max_rounds is None or rounds < max_rounds:
            if _fingerprint(files) == seen:
                time.sleep(poll_interval)
                continue
            seen = _settled(files, quiet)
            rounds += 1
            try:
                preflight.prepare_and_check(lab, lab_dir)
                if runtime is None:
                    runtime = LocalRuntime(lab, lab_dir, run_dir)
                    runtime.start_all()
                    restarted = [s.name for s in lab.services]
                else:
                    restarted = runtime.sync()
            except MeshlabError as error:
                on_error(error)
                on_waiting(files)
                continue
            result = run_checks(course, lab, lab_dir, run_dir=run_dir)
            if runtime.owner:
                runtime.adopt()  # services the checks restarted must die with us again
            on_result(result, restarted)
            on_waiting(files)
    finally:
        if runtime is not None and owned:
            runtime.stop_all()
