"""`meshlab doctor`: can this machine run the course, and what is missing?

The findings cover the core (Python, Envoy), the ports the labs bind, and the tools and
kernel features the course's labs require (plus the optional tools meshlab uses when
present). From them comes the verdict an instructor wants before a workshop: which labs
are ready on this machine and, for each one that is not, what is missing and its fix.
"""

from __future__ import annotations

import platform as py_platform
import shutil
import sys
from dataclasses import asdict, dataclass

from meshlab import __version__, ports
from meshlab.course import Course, Lab
from meshlab.envoy import PINNED_VERSION, find_binary
from meshlab.errors import MeshlabError
from meshlab.platform import FEATURES, GENERAL_TOOLS, install_hint
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
    required = _required(course)
    # Namespaces serve every lab (isolated audits); other features only the labs that require them.
    for name in ("netns", *sorted(n for n in required if n in FEATURES and n != "netns")):
        feature = FEATURES[name]
        ok, detail = feature.probe()
        status = "ok" if ok else ("missing" if name in required else "absent")
        found.append(Finding("features", feature.name, status, f"{feature.description}: {detail}",
                             None if ok else feature.fix))
    tools = sorted(n for n in required if n not in FEATURES)
    for tool in [*tools, *(t for t in GENERAL_TOOLS if t not in tools)]:
        path = shutil.which(tool)
        status = "ok" if path else ("missing" if tool in required else "absent")
        found.append(Finding("tools", tool, status, path or "not installed", None if path else install_hint(tool)))
    found.extend(_docker(course))
    return found


def _docker(course: Course | None) -> list[Finding]:
    """The Docker engine and the course's images: optional (the Docker path, `--runtime docker`)."""
    from meshlab.container.engine import connect, describe, likely_present

    if not likely_present():
        return [Finding("docker", "engine", "absent", "no Docker engine", install_hint("docker"))]
    try:
        info = describe(connect(timeout=5))
    except MeshlabError as error:
        return [Finding("docker", "engine", "absent", error.message, error.fix)]
    found = [Finding("docker", "engine", "ok", f"Docker {info.version} (API {info.api_version}, "
                                               f"{info.os}/{info.architecture})")]
    from meshlab.container.engine import TOOLBOX_IMAGE
    from meshlab.container.images import image_is_stale

    for name, image_id in info.images.items():
        make = "meshlab image base" if "base" in name else "meshlab image build"
        if image_id and name == TOOLBOX_IMAGE and course is not None and image_is_stale(connect(), course.root):
            found.append(Finding("docker", name, "warn", f"{image_id}, built from other sources than this checkout",
                                 "rebuild it: meshlab image build"))
            continue
        found.append(Finding("docker", name, "ok" if image_id else "absent", image_id or "not built",
                             None if image_id else make))
    found.append(_compose())
    return found


def _compose() -> Finding:
    """Compose: for the labs' sandboxes (compose/) and lab 01's Docker part."""
    from meshlab.container.project import compose_command

    try:
        return Finding("docker", "compose", "ok", " ".join(compose_command()))
    except MeshlabError as error:
        return Finding("docker", "compose", "absent", error.message, error.fix)


def _required(course: Course | None) -> dict[str, list[str]]:
    """Each tool or feature some lab requires, with the labs that require it."""
    needed: dict[str, list[str]] = {}
    for lab in course.labs if course else ():
        for name in lab.requires:
            needed.setdefault(name, []).append(f"{lab.number:02d}")
    return needed


@dataclass
class LabReadiness:
    """Whether one lab can run on this machine, and if not, what stops it."""

    lab: Lab
    missing: list[Finding]

    @property
    def ready(self) -> bool:
        return not self.missing

    def to_json(self) -> dict:
        return {"number": self.lab.number, "slug": self.lab.slug, "ready": self.ready,
                "missing": [{"what": f.name, "detail": f.detail, "fix": f.fix} for f in self.missing]}


def readiness(course: Course, findings: list[Finding]) -> list[LabReadiness]:
    """Per lab: the core findings that fail everything, then its own requirements and ports."""
    core = [f for f in findings if f.group == "core" and f.status == "missing"]
    by_name = {f.name: f for f in findings if f.group in ("features", "tools")}
    busy = {f.name: f for f in findings if f.group == "ports" and f.fix}  # held by something not meshlab's
    rows = []
    for lab in course.labs:
        missing = list(core)
        missing += [by_name[name] for name in lab.requires if by_name.get(name) and by_name[name].status != "ok"]
        missing += [busy[f"127.0.0.1:{port}"] for _, _, port in lab.host_ports() if f"127.0.0.1:{port}" in busy]
        rows.append(LabReadiness(lab, missing))
    return rows


def verdict(rows: list[LabReadiness]) -> str:
    """One line: `ready for labs 01-06, 09 on this machine`, and which are not."""
    ready = [row.lab.number for row in rows if row.ready]
    not_ready = [row.lab.number for row in rows if not row.ready]
    if not rows:
        return "the course has no labs"
    if not ready:
        return f"not ready for any lab on this machine ({_ranges(not_ready)} need what is listed below)"
    line = f"ready for labs {_ranges(ready)} on this machine"
    return line + (f"; not for {_ranges(not_ready)} (see below)" if not_ready else "")


def _ranges(numbers: list[int]) -> str:
    """[1, 2, 3, 5] -> '01-03, 05'."""
    parts, start = [], None
    for index, number in enumerate(numbers):
        if start is None:
            start = number
        if index + 1 == len(numbers) or numbers[index + 1] != number + 1:
            parts.append(f"{start:02d}" if start == number else f"{start:02d}-{number:02d}")
            start = None
    return ", ".join(parts)


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
        for service, role, port in lab.host_ports():
            if port in seen:
                continue
            seen.add(port)
            name = f"127.0.0.1:{port}"
            users = ", ".join(sorted({f"lab {l.number:02d}" for l in course.labs
                                      for _, _, p in l.host_ports() if p == port}))
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

