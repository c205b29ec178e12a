"""What this machine offers: tools on PATH and kernel features some labs need.

A lab's manifest lists what it `requires` (a tool name like `redis-server`, or a
feature like `netns`); a missing one stops the lab before it starts, with the command
that installs it. `meshlab doctor` shows the whole table.
"""

from __future__ import annotations

import os
import shutil
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
    "clang": "sudo apt-get install clang llvm",
    "rustc": "sudo apt-get install rustc libstd-rust-dev-wasm32",
    "iptables": "sudo apt-get install iptables",
    "ip": "sudo apt-get install iproute2",
    "unshare": "sudo apt-get install util-linux",
    "docker": "sudo apt-get install docker.io (and start dockerd)",
    "fortio": "optional: meshlab's built-in load engine is used without it (fortio releases: github.com/fortio/fortio)",
}

# Tools meshlab uses for any lab when they are there (doctor lists them); a lab's own
# needs are in its manifest's `requires`.
GENERAL_TOOLS = ("curl", "openssl", "fortio", "hey", "wrk", "docker", "unshare")


def install_hint(tool: str) -> str:
    return _INSTALL.get(tool, f"install `{tool}` with your package manager and make sure it is on PATH")


@dataclass(frozen=True)
class Feature:
    name: str
    description: str
    probe: Callable[[], tuple[bool, str]]


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


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
    return _is_root(), "iptables present" + ("" if _is_root() else "; changing rules needs root")


def _probe_bpf() -> tuple[bool, str]:
    cgroup2 = any(Path(p).is_dir() for p in ("/sys/fs/cgroup/unified", "/sys/fs/cgroup/cgroup.controllers"))
    bpffs = Path("/sys/fs/bpf").is_dir()
    ok = _is_root() and cgroup2 and bpffs
    return ok, f"root={_is_root()}, cgroup v2={cgroup2}, bpffs={bpffs}"


FEATURES = {
    "netns": Feature("netns", "network namespaces (isolated audits, interception labs)", _probe_netns),
    "iptables": Feature("iptables", "iptables REDIRECT (interception lab)", _probe_iptables),
    "bpf": Feature("bpf", "eBPF cgroup programs (interception lab)", _probe_bpf),
}


def require(names: tuple[str, ...] | list[str], *, lab_ref: str) -> None:
    """Raise ToolMissing for the first requirement this machine does not meet."""
    for name in names:
        feature = FEATURES.get(name)
        if feature is not None:
            ok, detail = feature.probe()
            if not ok:
                raise ToolMissing(f"{lab_ref} needs {feature.description}: {detail}",
                                  fix="run `meshlab doctor` to see what this machine offers")
        elif shutil.which(name) is None:
            raise ToolMissing(f"{lab_ref} needs `{name}`, which is not installed", fix=install_hint(name))
