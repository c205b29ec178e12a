"""The step between the runtime and a service that runs in a pod: join the lab's
cgroup, enter the pod's network namespace, become the service's uid, then exec it.

    python .../meshlab/runtime/enter.py [--cgroup DIR] [--netns PATH] [--user UID] -- ARGV...

It runs as a script by its path and imports nothing of meshlab, so it costs a bare
interpreter start, not the engine's imports. It is the same process from start to exec (same PID), so the runtime's bookkeeping and
the kernel's parent-death signal (re-armed after the uid change, which clears it) hold
for the service itself. The uid change goes through util-linux's setpriv.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import sys

CLONE_NEWNET = 0x40000000
_PR_GET_PDEATHSIG = 2
_libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(path: str) -> None:
    """Move the calling thread (the process, if it has no other) into the network
    namespace at PATH (/run/netns/NAME)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"setns({path}): {os.strerror(error)}")
    finally:
        os.close(fd)


def parent_death_signal() -> int:
    value = ctypes.c_int(0)
    _libc.prctl(_PR_GET_PDEATHSIG, ctypes.byref(value), 0, 0, 0)
    return value.value


def as_user(uid: int, argv: list[str]) -> list[str]:
    """ARGV run as UID (and gid UID, no supplementary groups) through setpriv.

    The service keeps CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH as ambient capabilities:
    it reads the lab's files and writes its run directory as the runtime's user would
    (they live in folders only that user may enter), while every socket it opens is
    owned by UID, which is what the lab is about (iptables' owner match, BPF's uid)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise SystemExit("meshlab: setpriv (util-linux) is needed to run a service as another user")
    caps = "+dac_override,+dac_read_search"
    command = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
               f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    death = parent_death_signal()
    if death:
        command.append(f"--pdeathsig={signal.Signals(death).name[3:]}")
    return [*command, "--", *argv]


def main(args: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="enter.py")
    parser.add_argument("--cgroup", help="a cgroup v2 directory to join")
    parser.add_argument("--netns", help="a network namespace to enter (/run/netns/NAME)")
    parser.add_argument("--user", type=int, help="the uid to run as")
    parser.add_argument("argv", nargs=argparse.REMAINDER)
    options = parser.parse_args(args)
    argv = options.argv[1:] if options.argv[:1] == ["--"] else options.argv
    if not argv:
        parser.error("give the command to run after --")
    if options.cgroup:
        with open(os.path.join(options.cgroup, "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    if options.netns:
        enter_netns(options.netns)  # single-threaded here: the whole process moves
    if options.user is not None:
        argv = as_user(options.user, argv)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    sys.exit(main())
