"""A learner's file that a check rewrites for a while, then gives back exactly.

Some behaviour can only be checked by changing an input while the lab runs (a control
plane must follow its intent file without a restart). The learner must get their file
back as it was: same bytes, same mode, same modification time (so `meshlab watch` sees
no change and does not re-check in a loop).

    with BorrowedFile(lab.dir / "intent.yaml", keep=lab.runtime.run_dir) as intent:
        written_at = intent.write(text)

A copy goes to KEEP before the first change; leaving the block (also on an error,
Ctrl-C or SIGTERM) puts it back and removes the copy. A run killed outright leaves the
copy behind: the next BorrowedFile of the same file restores it before anything else.
Writes replace the file atomically (write aside, then rename): a reader never sees
half a file.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from types import FrameType


class BorrowedFile:
    def __init__(self, path: Path, *, keep: Path):
        self.path = Path(path)
        self._copy = Path(keep) / f"{self.path.name}.borrowed"
        self._meta = Path(keep) / f"{self.path.name}.borrowed.json"
        self._previous_handler: object = None

    def __enter__(self) -> "BorrowedFile":
        self.recover()
        self._save()
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.recover()
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)
                self._previous_handler = None

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")

    def write(self, text: str) -> float:
        """Replace the file's content; returns the time (time.time()) it changed."""
        _replace(self.path, text.encode("utf-8"))
        return time.time()

    def recover(self) -> bool:
        """Put back the learner's version if a copy of it is kept; True if one was."""
        if not self._meta.is_file():
            return False
        meta = json.loads(self._meta.read_text())
        if meta["existed"]:
            _replace(self.path, self._copy.read_bytes(), mode=meta["mode"])
            os.utime(self.path, ns=(meta["atime_ns"], meta["mtime_ns"]))
        else:
            self.path.unlink(missing_ok=True)
        self._copy.unlink(missing_ok=True)
        self._meta.unlink()
        return True

    def _save(self) -> None:
        self._copy.parent.mkdir(parents=True, exist_ok=True)
        meta: dict[str, object] = {"path": str(self.path), "existed": self.path.exists()}
        if self.path.exists():
            info = self.path.stat()
            self._copy.write_bytes(self.path.read_bytes())
            meta.update(mode=info.st_mode & 0o7777, atime_ns=info.st_atime_ns, mtime_ns=info.st_mtime_ns)
        # The metadata last: its presence means the copy is complete.
        self._meta.write_text(json.dumps(meta))


def _replace(path: Path, data: bytes, *, mode: int | None = None) -> None:
    aside = path.with_name(f".{path.name}.meshlab-{os.getpid()}")
    aside.write_bytes(data)
    os.chmod(aside, mode if mode is not None else (path.stat().st_mode & 0o7777 if path.exists() else 0o644))
    os.replace(aside, path)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # Turn SIGTERM into Ctrl-C, so that pytest runs the teardown that gives the file back.
    raise KeyboardInterrupt
