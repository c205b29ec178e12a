"""`meshlab doctor`: can this machine run the course, and what is missing?"""

from __future__ import annotations

import platform as py_platform
import shutil
import sys
from dataclasses import asdict, dataclass

from meshlab import __version__, ports
from meshlab.course import Course
from meshlab.envoy import PINNED_VERSION, find_binary
from meshlab.errors import MeshlabError
from meshlab.platform import FEATURES, OPTIONAL_TOOLS, install_hint
from meshlab.runtime import read_state


@dataclass
class Finding:
    group: str          # "core", "ports", "features", "tools"
    name: str
    status: str         # "ok", "missing" (required), "warn", "absent" (optional)
    detail: str
    fix: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


def diagnose(course: Course | None, course_error: MeshlabError | None = None) -> list[Finding]:
    found = [Finding("core", "python", "ok" if sys.version_info >= (3, 11) else "missing",
                     f"{py_platform.python_version()} at {sys.executable}",
                     None if sys.version_info >= (3, 11) else "meshlab needs Python 3.11 or newer")]
    found.append(Finding("core", "meshlab", "ok", f"{__version__}, course at {course.root}" if course else __version__))
    if course_error is not None:
        found.append(Finding("core", "course", "missing", course_error.message, course_error.fix))
    found.append(_envoy())
    if course is not None:
        found.extend(_ports(course))
    for feature in FEATURES.values():
        ok, detail = feature.probe()
        found.append(Finding("features", feature.name, "ok" if ok else "absent",
                             f"{feature.description}: {detail}"))
    for tool in OPTIONAL_TOOLS:
        path = shutil.which(tool)
        found.append(Finding("tools", tool, "ok" if path else "absent", path or "not installed",
                             None if path else install_hint(tool)))
    return found


def _envoy() -> Finding:
    try:
        binary = find_binary()
    except MeshlabError as error:
        return Finding("core", "envoy", "missing", error.message, error.fix)
    version = binary.version()
    if version != PINNED_VERSION:
        return Finding("core", "envoy", "warn", f"{version} at {binary.path} (from {binary.source})",
                       f"the course is tested with Envoy {PINNED_VERSION}; stats and messages may differ")
    return Finding("core", "envoy", "ok", f"{version} at {binary.path} (from {binary.source})")


def _ports(course: Course) -> list[Finding]:
    """Each lab port: free, held by a meshlab run, or held by something else."""
    ours: dict[int, str] = {}
    runs = course.state_dir / "runs"
    for run_dir in runs.iterdir() if runs.is_dir() else []:
        state = read_state(run_dir)
        for service in (state.services.values() if state else []):
            for port in service.ports.values():
                ours[port] = f"lab {state.lab} (meshlab run; `meshlab stop` ends it)"
    found = []
    seen = set()
    for lab in course.labs:
        for service, role, port in lab.ports():
            if port in seen:
                continue
            seen.add(port)
            name = f"127.0.0.1:{port}"
            users = ", ".join(sorted({f"lab {l.number:02d}" for l in course.labs
                                      for _, _, p in l.ports() if p == port}))
            if ports.is_free(port):
                found.append(Finding("ports", name, "ok", f"free ({users})"))
            elif port in ours:
                found.append(Finding("ports", name, "warn", f"in use by {ours[port]}"))
            else:
                found.append(Finding("ports", name, "warn", f"in use by {ports.holder(port) or 'another process'}",
                                     f"{users} cannot start until it is free"))
    return found


def healthy(findings: list[Finding]) -> bool:
    return not any(f.status == "missing" for f in findings)

