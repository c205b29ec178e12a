"""`python -m meshlab.runtime.detach FD ARGV...`: start ARGV as a daemon.

Envoy ends itself when its parent process exits (it arms the kernel's parent-death
signal at start). A service of a detached run (`meshlab start`) must outlive the
command that started it, so it must already be a child of init when it starts: this
launcher forks, writes the child's PID to file descriptor FD, and exits; the child
waits until it has been re-parented, then execs ARGV. Waiting makes it certain, not
likely, that Envoy sees init as its parent.
"""

from __future__ import annotations

import os
import signal
import sys
import time


def main() -> None:
    pid_fd, argv = int(sys.argv[1]), sys.argv[2:]
    launcher = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(pid_fd)
        deadline = time.monotonic() + 10
        while os.getppid() == launcher and time.monotonic() < deadline:
            time.sleep(0.0005)
        try:
            os.execvp(argv[0], argv)
        finally:
            os._exit(127)
    try:
        os.write(pid_fd, f"{child}\n".encode())
    except OSError:
        # Nobody reads the PID: the command that started us was interrupted (Ctrl-C)
        # while it waited. Nothing would ever stop the child, so it must not live on.
        os.kill(child, signal.SIGKILL)
        os._exit(1)
    os.close(pid_fd)
    os._exit(0)


if __name__ == "__main__":
    main()
