"""What a runtime is, and how one is chosen.

A runtime starts, stops, restarts and observes one lab's services; the session and the
checks use only what `Runtime` lists, so a lab runs unchanged on any of them:

    local    processes on this machine (`runtime/local.py`), the default
    docker   one container per service in one shared network namespace (`runtime/docker.py`)

`--runtime NAME` on the command line, or MESHLAB_RUNTIME=NAME, chooses.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Protocol

from meshlab.course import Lab, ServiceSpec
from meshlab.envoy import Admin
from meshlab.errors import MeshlabError

RUNTIMES = ("local", "docker")
ENV = "MESHLAB_RUNTIME"


class Runtime(Protocol):
    lab: Lab
    lab_dir: Path
    run_dir: Path
    # What runs now: `.services[name]` with `.pid` and `.ports` (a check may compare PIDs
    # to prove a service was not restarted).
    state: object

    @classmethod
    def attach(cls, lab: Lab, run_dir: Path) -> "Runtime | None": ...
    def start_all(self) -> None: ...
    def start(self, name: str) -> object: ...
    def stop(self, name: str) -> None: ...
    def restart(self, name: str) -> object: ...
    def stop_all(self) -> None: ...
    def sync(self) -> list[str]: ...
    def is_running(self, name: str) -> bool: ...
    def admin(self, name: str) -> Admin: ...
    # The network namespace the services share when it is not the caller's (a path to
    # enter; None: the caller's own). The checker joins it, see `LabSession.open`.
    def network_namespace(self) -> str | None: ...
    def log_path(self, name: str) -> Path: ...
    def access_log_path(self, name: str) -> Path: ...
    def logs(self, lines: int = 20) -> dict[str, str]: ...


def selected(name: str | None = None) -> str:
    """The runtime's name: NAME, else MESHLAB_RUNTIME, else local."""
    choice = (name or os.environ.get(ENV) or "local").strip().lower()
    if choice not in RUNTIMES:
        raise MeshlabError(f"there is no runtime {choice!r}", fix=f"use one of: {', '.join(RUNTIMES)} "
                                                                   f"(--runtime or {ENV})")
    return choice


def runtime_class(name: str | None = None, lab: Lab | None = None) -> type:
    """The runtime NAME (or MESHLAB_RUNTIME) selects; refused (exit 2) when it cannot run LAB,
    before anything else is asked of the machine."""
    if selected(name) == "docker":
        from meshlab.container.pod_labs import refuse_on_docker
        from meshlab.runtime.docker import DockerRuntime
        if lab is not None:
            refuse_on_docker(lab)
        return DockerRuntime
    from meshlab.runtime.local import LocalRuntime
    return LocalRuntime


def input_hashes(lab_dir: Path, spec: ServiceSpec) -> dict[str, str]:
    """A digest of each file SPEC restarts on (`inputs:`): both runtimes compare it with
    the one its running copy started from ("" for a file that is missing)."""
    hashes = {}
    for name in spec.inputs:
        path = Path(lab_dir) / name
        hashes[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
    return hashes
