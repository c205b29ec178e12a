"""`meshlab watch`: re-validate and re-check every time the learner saves a lab file.

The lab keeps running between saves; a save restarts only the services whose files
changed (an Envoy whose config changed; the app keeps its state), then the checks run
against it. A file that does not pass preflight is reported and nothing restarts:
the last good config keeps serving, as it would in a real mesh.

Saves are noticed through the kernel's file notifications (inotify, by `watchfiles`),
not by polling: the check starts as soon as the files have been quiet for QUIET
seconds (an editor may write a file in several steps, and half a file is not the
learner's config). The folders are watched, not the files, since editors save by
writing a new file and renaming it over the old one.
"""

from __future__ import annotations

import queue
import threading
from pathlib import Path
from typing import Callable

import watchfiles

from meshlab import preflight
from meshlab.checking import Checker, LabResult
from meshlab.course import Course, Lab, run_dir_for
from meshlab.errors import MeshlabError
from meshlab.runtime import LocalRuntime


def _watched_files(lab: Lab, lab_dir: Path) -> list[Path]:
    names = {*lab.edit, *(name for spec in lab.services for name in spec.inputs)}
    return sorted(lab_dir / name for name in names)


def _fingerprint(files: list[Path]) -> tuple:
    """What the learner saved, as far as a re-check is concerned: a notification with no
    change behind it (a check borrowing a file and giving it back as it was) is none."""
    stamps = []
    for path in files:
        try:
            info = path.stat()
            stamps.append((str(path), info.st_mtime_ns, info.st_size))
        except FileNotFoundError:
            stamps.append((str(path), None, None))
    return tuple(stamps)


class _Saves:
    """A thread that turns the kernel's notifications about FILES into one item on a
    queue per save: a burst of changes counts once it has been quiet for QUIET seconds."""

    def __init__(self, files: list[Path], quiet: float):
        self.saved: queue.SimpleQueue[set] = queue.SimpleQueue()
        self._stop = threading.Event()
        names = {str(path) for path in files}
        folders = sorted({str(path.parent) for path in files if path.parent.is_dir()})
        self._changes = watchfiles.watch(
            *folders, watch_filter=lambda change, path: path in names, recursive=False,
            step=max(1, int(quiet * 1000)), debounce=5000, stop_event=self._stop, raise_interrupt=False)
        self._thread = threading.Thread(target=self._run, name="meshlab-watch", daemon=True)

    def __enter__(self) -> "_Saves":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()  # watchfiles looks at it every step
        self._thread.join(5)

    def _run(self) -> None:
        for changes in self._changes:
            self.saved.put(changes)

    def next(self) -> None:
        """Wait for the next save (in short waits: Ctrl-C must get through)."""
        while True:
            try:
                self.saved.get(timeout=0.5)
                return
            except queue.Empty:
                continue


def watch(course: Course, lab: Lab, lab_dir: Path, *,
          on_result: Callable[[LabResult, list[str]], None],
          on_error: Callable[[MeshlabError], None],
          on_waiting: Callable[[list[Path]], None],
          quiet: float = 0.05, max_rounds: int | None = None) -> None:
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
    # The next round's checker, started ahead: after a save, only the checks are left to run.
    ahead = Checker(course, lab, lab_dir, run_dir=run_dir, ahead=True)
    try:
        with _Saves(files, quiet) as saves:
            while max_rounds is None or rounds < max_rounds:
                if seen is not None:
                    saves.next()
                if _fingerprint(files) == seen:
                    continue
                seen = _fingerprint(files)
                rounds += 1
                try:
                    passed = preflight.digest(lab, lab_dir)
                    preflight.prepare_and_check(lab, lab_dir)
                    if runtime is None:
                        runtime = LocalRuntime(lab, lab_dir, run_dir, owned_by="watch")  # `meshlab stop` may stop it
                        runtime.start_all()
                        restarted = [s.name for s in lab.services]
                    else:
                        restarted = runtime.sync()
                except MeshlabError as error:
                    on_error(error)
                    on_waiting(files)
                    continue
                # The checker need not validate again the files that just passed.
                checker, ahead = ahead, None
                result = checker.run(preflight_passed=passed)
                ahead = Checker(course, lab, lab_dir, run_dir=run_dir, ahead=True)
                if runtime.owner:
                    runtime.adopt()  # services the checks restarted must die with us again
                on_result(result, restarted)
                on_waiting(files)
    finally:
        if ahead is not None:
            ahead.cancel()
        if runtime is not None and owned:
            runtime.stop_all()
