"""meshlab.runtime.detach: a daemon whose PID nobody received must not live on."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def launch(write_end: int, marker: str, log: Path) -> tuple[int, str]:
    """The launcher's exit code and what it wrote to stderr (a file: the daemon keeps
    a pipe open for as long as it lives)."""
    argv = [sys.executable, "-c", "import sys, time; time.sleep(30)", marker]
    with log.open("w") as stderr:
        code = subprocess.run([sys.executable, "-m", "meshlab.runtime.detach", str(write_end), *argv],
                              pass_fds=(write_end,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=stderr, timeout=20).returncode
    return code, log.read_text()


def test_the_daemon_runs_when_its_pid_was_read(tmp_path):
    marker = f"detach-read-{uuid.uuid4().hex}"
    read_end, write_end = os.pipe()
    try:
        code, _ = launch(write_end, marker, tmp_path / "launcher.log")
        os.close(write_end)
        pid = int(os.read(read_end, 64).decode())
    finally:
        os.close(read_end)
    try:
        assert code == 0
        time.sleep(0.3)
        assert processes_with(marker) == [pid]
    finally:
        os.kill(pid, 9)


def test_the_daemon_dies_when_nobody_reads_its_pid(tmp_path):
    # What Ctrl-C during `meshlab start` does: the starter closes its end of the pipe.
    marker = f"detach-unread-{uuid.uuid4().hex}"
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        code, stderr = launch(write_end, marker, tmp_path / "launcher.log")
    finally:
        os.close(write_end)
    assert code == 1
    assert "Traceback" not in stderr
    deadline = time.monotonic() + 5
    while processes_with(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert processes_with(marker) == []
