"""Is a port free, and if not, who holds it?

Labs use fixed, documented ports so that README commands can be pasted. Before anything
starts, every declared port is tried; a busy one is reported with the process holding it
(when the operating system lets us see it), instead of a lab that half starts.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass

import psutil

from meshlab.errors import PortBusy

LOOPBACK = "127.0.0.1"


@dataclass(frozen=True)
class Holder:
    pid: int | None
    name: str | None
    cmdline: str | None

    def __str__(self) -> str:
        if self.pid is None:
            return "another process (not visible to this user)"
        what = self.cmdline or self.name or "?"
        if len(what) > 100:
            what = what[:97] + "..."
        return f"PID {self.pid} ({what})"


def is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a listener could bind HOST:PORT now (as Envoy does, with SO_REUSEADDR,
    so a connection in TIME_WAIT does not count as busy)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def holder(port: int) -> Holder | None:
    """The process listening on PORT (any address), if the system tells us."""
    try:
        connections = psutil.net_connections(kind="tcp")
    except (psutil.AccessDenied, PermissionError):
        return Holder(None, None, None)
    for conn in connections:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid is None:
                return Holder(None, None, None)
            try:
                proc = psutil.Process(conn.pid)
                return Holder(conn.pid, proc.name(), " ".join(proc.cmdline()))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return Holder(conn.pid, None, None)
    return None


def busy(ports: list[tuple[str, str, int]]) -> list[tuple[str, str, int, Holder | None]]:
    """The (service, role, port, holder) entries whose port cannot be bound."""
    return [(svc, role, port, holder(port)) for svc, role, port in ports if not is_free(port)]


def ensure_free(ports: list[tuple[str, str, int]], *, lab_ref: str) -> None:
    taken = busy(ports)
    if not taken:
        return
    lines = []
    for service, role, port, who in taken:
        lines.append(f"  127.0.0.1:{port} ({service} {role}) is held by {who or 'a process that has exited or is hidden'}")
    meshlab_holder = any(who and who.cmdline and ("meshlab" in who.cmdline or "envoy" in (who.name or ""))
                         for _, _, _, who in taken)
    fix = (f"stop what holds the port{'s' if len(taken) > 1 else ''}: `meshlab stop` stops labs started by meshlab"
           if meshlab_holder else
           "stop the process holding the port (for example `kill PID`), then try again")
    raise PortBusy(
        f"{lab_ref} needs port{'s' if len(taken) > 1 else ''} that {'are' if len(taken) > 1 else 'is'} in use",
        details="\n".join(lines),
        fix=fix,
    )


def free_port(host: str = LOOPBACK) -> int:
    """A port the kernel says is free right now (for tests and ad-hoc servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
