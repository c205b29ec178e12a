"""Starting and stopping process groups so that nothing outlives its lab.

Each service runs in its own session (so its process group can be signalled as a
whole, children included). A service owned by a checker also gets the kernel's
parent-death signal: if the checker dies, even by SIGKILL, the kernel kills the service.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, Sequence

import psutil

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None
# $1 is the expected parent's PID; POSIX sh sets $PPID once, as it starts: after setpriv
# has armed the signal.
_EXEC_UNLESS_ORPHANED = '[ "$PPID" = "$1" ] || exit 1; shift; exec "$@"'


def spawn(argv: Sequence[str], *, cwd: Path, env: dict[str, str], stdout: IO, stderr: IO | int,
          die_with_parent: bool, death_signal: int = signal.SIGKILL) -> subprocess.Popen:
    """Start ARGV in a new session. With DIE_WITH_PARENT, the kernel sends DEATH_SIGNAL
    to it when the calling thread's process dies (Linux); call it from a thread that
    lives as long as the service should (the main thread).

    Arming that signal runs Python code between fork and exec, which is unsafe in a
    process running other threads (a gRPC server's threads make the child crash): there
    util-linux's `setpriv --pdeathsig` arms it after the fork instead, when installed.

    Either way, a parent that dies before the signal is armed would leave the service
    running, so once armed the child checks that its parent is still the caller and
    gives up otherwise: after setpriv that check is a shell's $PPID (about a millisecond
    per spawn; a Python start would cost twenty)."""
    parent = os.getpid()
    setpriv = shutil.which("setpriv") if die_with_parent and threading.active_count() > 1 else None
    if setpriv is not None:
        return subprocess.Popen(
            [setpriv, "--pdeathsig", signal.Signals(death_signal).name[3:], "--",
             "/bin/sh", "-c", _EXEC_UNLESS_ORPHANED, "sh", str(parent), *argv], cwd=cwd, env=env,
            stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr, start_new_session=True)

    def arm_parent_death() -> None:
        if _libc is not None:
            _libc.prctl(_PR_SET_PDEATHSIG, int(death_signal), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was armed
            os._exit(1)

    return subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
        start_new_session=True,
        preexec_fn=arm_parent_death if die_with_parent else None,
    )


def spawn_detached(argv: Sequence[str], *, cwd: Path, env: dict[str, str], stdout: IO, stderr: IO | int) -> int:
    """Start ARGV as a daemon (see meshlab.runtime.detach) and return its PID. It is not
    our child: it survives us, and only its PID lets us stop it."""
    read_end, write_end = os.pipe()
    try:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "meshlab.runtime.detach", str(write_end), *argv],
            cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=stdout, stderr=stderr,
            start_new_session=True, pass_fds=(write_end,),
        )
        os.close(write_end)
        write_end = -1
        with os.fdopen(read_end, "rb") as pipe:
            read_end = -1
            pid = int(pipe.read().decode().strip() or 0)
        launcher.wait(timeout=10)
    finally:
        for fd in (read_end, write_end):
            if fd >= 0:
                os.close(fd)
    if not pid:
        raise OSError(f"could not start {argv[0]} in the background")
    return pid


def group_of(pid: int) -> int:
    """PID's process group (PID itself if it is already gone)."""
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return pid


def alive(pid: int, create_time: float | None = None) -> bool:
    """True if PID runs and is the same process (same start time) we started."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return create_time is None or abs(proc.create_time() - create_time) < 0.01
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


def create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.NoSuchProcess:
        return None


def terminate_group(pgid: int, pid: int, *, popen: subprocess.Popen | None = None,
                    grace: float = 3.0) -> None:
    """SIGTERM the whole group, wait up to GRACE seconds, then SIGKILL what is left."""
    terminate_groups([(pgid, pid, popen)], grace=grace)


def terminate_groups(groups: Sequence[tuple[int, int, subprocess.Popen | None]], *, grace: float = 3.0) -> None:
    """terminate_group for several groups (PGID, PID, POPEN) at once: every group is
    signalled before any is waited for, so a lab's services end side by side."""
    members = {pid: _group_members(pgid) | {pid} for pgid, pid, _ in groups}
    for pgid, _, _ in groups:
        _signal_group(pgid, signal.SIGTERM)
    popens = [popen for _, _, popen in groups if popen is not None]
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for popen in popens:
            popen.poll()
        if not any(_running(p) for pids in members.values() for p in pids):
            # Every one has ended: reap without waiting. A Popen whose poll a Ctrl-C
            # cut short (between its lock's acquire and the try that releases it)
            # can no longer reap, and a wait on it would last the whole grace; its
            # zombie goes with this process.
            for popen in popens:
                popen.poll()
            return
        time.sleep(0.005)
    for pgid, pid, _ in groups:
        _signal_group(pgid, signal.SIGKILL)
        for p in members[pid]:
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    for popen in popens:
        try:
            popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid: int) -> set[int]:
    # /proc's numbered entries when there is one: six times cheaper than psutil's process
    # objects, and every stop of every service asks.
    pids = ([int(entry) for entry in os.listdir("/proc") if entry.isdigit()] if os.path.isdir("/proc")
            else psutil.pids())
    members = set()
    for pid in pids:
        try:
            if os.getpgid(pid) == pgid:
                members.add(pid)
        except (ProcessLookupError, PermissionError):
            continue
    return members


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last LINES lines of a log file ('' when there is none)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 64 * 1024))
            data = handle.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])
