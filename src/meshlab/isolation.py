"""Run a command in a network namespace of its own.

Labs use fixed ports (10000, 9901, 8080...) so that README commands can be pasted. That
is right for a learner and wrong for an audit: another program may hold those ports,
and two labs cannot run at once. In a fresh network namespace every port is free and
nothing is shared, so `meshlab audit` can grade labs in parallel on any machine where
namespaces are allowed (root, or unprivileged user namespaces).

`python -m meshlab.isolation CMD...` is the step inside the namespace: bring up the
loopback interface (a new namespace starts with it down), give the run a /run/netns of
its own, then exec CMD.

Named network namespaces (`ip netns add ml11-web-v1`, a lab's pods) live in /run/netns,
which a new network namespace alone still shares with the host: a lab's pods started in
isolation would replace the same-named pods of a learner's running lab. So the run also
gets a mount namespace of its own with an empty tmpfs on /run/netns.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import socket
import struct
import subprocess
import sys
from functools import lru_cache

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1


def _unshare_args() -> list[str]:
    root = hasattr(os, "geteuid") and os.geteuid() == 0
    # --mount: a private mount namespace (util-linux makes its propagation private)
    return ["unshare", "--net", "--mount"] if root else ["unshare", "--net", "--mount", "--map-root-user"]


@lru_cache(maxsize=1)
def available() -> bool:
    """True when this process may create network namespaces."""
    if not sys.platform.startswith("linux") or shutil.which("unshare") is None:
        return False
    try:
        return subprocess.run([*_unshare_args(), "true"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def wrap(argv: list[str]) -> list[str]:
    """ARGV, to be run inside a new network namespace with loopback up."""
    return [*_unshare_args(), "--", sys.executable, "-m", "meshlab.isolation", *argv]


def wrap_python(module: str, args: list[str]) -> list[str]:
    """`python -m MODULE --isolated ARGS` in a new network namespace: for a module that
    calls `set_up_namespace` itself when given --isolated, which saves the interpreter
    start that `wrap` spends on it."""
    return [*_unshare_args(), "--", sys.executable, "-m", module, "--isolated", *args]


def set_up_namespace() -> None:
    """What a process started in a fresh namespace does first: loopback up, /run/netns its own."""
    bring_up_loopback()
    private_netns_dir()


def bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def private_netns_dir(path: str = "/run/netns") -> None:
    """An empty tmpfs on PATH, seen only in this mount namespace; nothing when that is not
    allowed (then the names stay shared, as before)."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "meshlab-netns", path], capture_output=True,
                   timeout=10)


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit("usage: python -m meshlab.isolation COMMAND [ARGS...]")
    set_up_namespace()
    os.execvp(sys.argv[1], sys.argv[1:])


if __name__ == "__main__":
    main()
