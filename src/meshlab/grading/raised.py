"""Python tracebacks in a service's log that pass through the learner's code.

A service the learner wrote (lab 06's control plane) may catch its own exceptions, log
them and keep running, serving nothing: every check would then wait for something
that never comes and describe the symptom. The traceback is the cause, so the checks
report it first: "your control plane raised ValueError at control_plane.py:133", with
the last frames. Only tracebacks with a frame in one of the lab's edited files count:
an app's own noise (a client that hung up) is not the learner's doing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_START = "Traceback (most recent call last):"
_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<function>.+)$')
_EXCEPTION = re.compile(r"^(?P<type>[A-Za-z_][\w.]*)(?::\s?(?P<message>.*))?$")
SHOWN_FRAMES = 3


@dataclass(frozen=True)
class Frame:
    file: str  # as the lab names it (control_plane.py) when it is the learner's, else as logged
    line: int
    function: str
    code: str
    learners: bool


@dataclass(frozen=True)
class Raised:
    service: str
    exception: str  # ValueError
    message: str
    frames: tuple[Frame, ...]

    @property
    def where(self) -> Frame:
        """The deepest frame in the learner's code: where their line raised, or called
        the library that did."""
        return [frame for frame in self.frames if frame.learners][-1]

    @property
    def summary(self) -> str:
        who = self.service.replace("-", " ").replace("_", " ")
        return f"your {who} raised {self.exception} at {self.where.file}:{self.where.line}"

    def details(self) -> str:
        """The last frames and the exception, as a learner reads them."""
        lines = [f"{frame.file}:{frame.line} in {frame.function}: {frame.code}".rstrip(": ")
                 for frame in self.frames[-SHOWN_FRAMES:]]
        lines.append(f"{self.exception}: {self.message}" if self.message else self.exception)
        return "\n".join(lines)


def learners_tracebacks(service: str, log: str, lab_dir: Path, edit: list[str]) -> list[Raised]:
    """Every traceback in LOG (a service's log) with a frame in one of the files EDIT of
    LAB_DIR, oldest first."""
    learner_files = {(Path(lab_dir) / name).resolve(): name for name in edit}
    found = []
    lines = log.splitlines()
    index = 0
    while index < len(lines):
        if lines[index].strip() != _START:
            index += 1
            continue
        frames: list[Frame] = []
        index += 1
        while index < len(lines) and (lines[index].startswith(" ") or not lines[index].strip()):
            match = _FRAME.match(lines[index])
            if match:
                code = lines[index + 1].strip() if index + 1 < len(lines) and not _FRAME.match(lines[index + 1]) \
                    and lines[index + 1].startswith("    ") else ""
                path = Path(match["file"])
                resolved = (path if path.is_absolute() else Path(lab_dir) / path).resolve()
                name = learner_files.get(resolved)
                frames.append(Frame(name or match["file"], int(match["line"]), match["function"], code,
                                    learners=name is not None))
            index += 1
        exception = _EXCEPTION.match(lines[index].strip()) if index < len(lines) else None
        if exception and any(frame.learners for frame in frames):
            found.append(Raised(service, exception["type"].rsplit(".", 1)[-1], (exception["message"] or "").strip(),
                                tuple(frames)))
    return found
