"""What this machine offers: tools on PATH and kernel features some labs need.

A lab's manifest lists what it `requires` (a tool name like `redis-server`, or a
feature like `netns`); a missing one stops the lab before it starts, with the command
that installs it. `meshlab doctor` shows the whole table.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import sys
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from meshlab.errors import ToolMissing

# How to get each tool on Debian/Ubuntu; optional tools say so.
_INSTALL = {
    "curl": "sudo apt-get install curl",
    "openssl": "sudo apt-get install openssl",
    "redis-server": "sudo apt-get install redis-server",
    "prometheus": "sudo apt-get install prometheus",
    "hey": "sudo apt-get install hey",
    "wrk": "sudo apt-get install wrk",
    "clang": "sudo apt-get install clang llvm libbpf-dev",
    "rustc": "sudo apt-get install rustc libstd-rust-dev-wasm32",
    "iptables": "sudo apt-get install iptables",
    "ip": "sudo apt-get install iproute2",
    "unshare": "sudo apt-get install util-linux",
    "nsenter": "sudo apt-get install util-linux",
    "setpriv": "sudo apt-get install util-linux",
    "bpftool": "sudo apt-get install bpftool",
    "docker": "sudo apt-get install docker.io (and start dockerd)",
    "fortio": "optional: meshlab's built-in load engine is used without it (fortio releases: github.com/fortio/fortio)",
}

# Tools meshlab uses for any lab when they are there (doctor lists them); a lab's own
# needs are in its manifest's `requires`.
GENERAL_TOOLS = ("curl", "openssl", "fortio", "hey", "wrk", "docker", "unshare")


def install_hint(tool: str) -> str:
    return _INSTALL.get(tool, f"install `{tool}` with your package manager and make sure it is on PATH")


# What to do where a kernel feature is refused: the labs that need it run only on Linux
# with these privileges.
_PRIVILEGED_FIX = ("run the lab as root on Linux (`sudo .venv/bin/meshlab check N`), in a Linux VM, or in the "
                   "course's Docker image started with --cap-add NET_ADMIN --cap-add SYS_ADMIN --cap-add BPF")


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    probe: Callable[[], tuple[bool, str]]
    fix: str = "run as root, or on a Linux machine that allows it"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


# Capability numbers (linux/capability.h).
CAP_NET_ADMIN, CAP_SYS_ADMIN, CAP_PERFMON, CAP_BPF = 12, 21, 38, 39


def _capabilities() -> int:
    """This process's effective capabilities, as a bit set (0 where unknown)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    except OSError:
        pass
    return 0


def _missing_caps(*caps: int) -> list[str]:
    names = {CAP_NET_ADMIN: "CAP_NET_ADMIN", CAP_SYS_ADMIN: "CAP_SYS_ADMIN", CAP_PERFMON: "CAP_PERFMON",
             CAP_BPF: "CAP_BPF"}
    have = _capabilities()
    return [names[c] for c in caps if not have >> c & 1]


def _probe_netns() -> tuple[bool, str]:
    if not shutil.which("unshare"):
        return False, "unshare not found (" + install_hint("unshare") + ")"
    args = ["unshare", "--net", "true"] if _is_root() else ["unshare", "--net", "--map-root-user", "true"]
    try:
        ok = subprocess.run(args, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    return ok, "network namespaces can be created" if ok else "creating a network namespace was refused"


def _probe_iptables() -> tuple[bool, str]:
    if not shutil.which("iptables"):
        return False, install_hint("iptables")
    missing = _missing_caps(CAP_NET_ADMIN)
    return not missing, "iptables present" + ("; changing rules needs CAP_NET_ADMIN (root)" if missing else "")


def _cgroup2() -> bool:
    return any(Path(p).is_file() for p in ("/sys/fs/cgroup/unified/cgroup.procs", "/sys/fs/cgroup/cgroup.controllers"))


def _probe_pods() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"needs Linux (this is {sys.platform})"
    tools = [t for t in ("ip", "nsenter", "setpriv") if shutil.which(t) is None]
    if tools:
        return False, ", ".join(tools) + " not found (" + "; ".join(dict.fromkeys(map(install_hint, tools))) + ")"
    caps = _missing_caps(CAP_NET_ADMIN, CAP_SYS_ADMIN)
    if caps:
        return False, "missing " + " and ".join(caps) + " (creating namespaces, links and cgroups needs them)"
    if not _cgroup2():
        return False, "no cgroup v2 hierarchy is mounted"
    return True, "namespaces, veth links and cgroups can be created"


def _probe_bpf() -> tuple[bool, str]:
    if not sys.platform.startswith("linux"):
        return False, f"needs Linux (this is {sys.platform})"
    caps = _missing_caps(CAP_BPF, CAP_NET_ADMIN) if _missing_caps(CAP_SYS_ADMIN) else []
    if caps:
        return False, "missing " + " and ".join(caps) + " (loading and attaching BPF programs needs them)"
    if not _cgroup2():
        return False, "no cgroup v2 hierarchy is mounted (BPF cgroup programs attach to one)"
    try:
        ctypes.CDLL("libbpf.so.1")
    except OSError:
        return False, "libbpf.so.1 not found (sudo apt-get install libbpf1 libbpf-dev)"
    return True, "cgroup v2 mounted, libbpf.so.1 present, privileges to load programs"


FEATURES = {
    "netns": Feature("netns", "network namespaces (isolated audits, interception labs)", _probe_netns),
    "iptables": Feature("iptables", "iptables REDIRECT (interception lab)", _probe_iptables, _PRIVILEGED_FIX),
    "pods": Feature("pods", "network namespaces, veth links and cgroups a lab creates (interception lab)",
                    _probe_pods, _PRIVILEGED_FIX),
    "bpf": Feature("bpf", "eBPF cgroup programs (interception lab)", _probe_bpf, _PRIVILEGED_FIX),
}


def unmet(names: tuple[str, ...] | list[str], *, lab_ref: str = "the lab") -> ToolMissing | None:
    """The first requirement of NAMES this machine does not meet (as the error that
    says so and what to do), or None."""
    for name in names:
        feature = FEATURES.get(name)
        if feature is not None:
            ok, detail = feature.probe()
            if not ok:
                number = lab_ref.split()[1] if lab_ref.startswith("lab ") else "N"
                return ToolMissing(f"{lab_ref} needs {feature.description}: {detail}",
                                   fix=feature.fix.replace(" N`", f" {number}`") +
                                   "; `meshlab doctor` shows what this machine offers")
        elif shutil.which(name) is None:
            return ToolMissing(f"{lab_ref} needs `{name}`, which is not installed", fix=install_hint(name))
    return None


def require(names: tuple[str, ...] | list[str], *, lab_ref: str) -> None:
    """Raise ToolMissing for the first requirement this machine does not meet."""
    problem = unmet(names, lab_ref=lab_ref)
    if problem is not None:
        raise problem
