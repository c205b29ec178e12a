"""Errors meshlab reports to a person, never as a traceback.

Every error says what is wrong, where (file:line:column when there is one) and how to
fix it. The CLI prints them and exits 2: the input or the environment is broken, which
is different from a check failing (exit 1).

    MeshlabError                 anything meshlab reports without a traceback
    ├── InputError               the learner's files are wrong
    │   ├── YamlSyntaxError      not YAML at all: file, line, column
    │   └── EnvoyConfigError     Envoy refused the config: YAML path, line, did-you-mean
    ├── CourseError              a lab manifest or the course manifest is wrong (authors)
    │   └── UnknownLab           LAB names no lab of the course
    └── EnvironmentProblem       this machine cannot run the lab as it is
        ├── PortBusy             a port the lab needs is taken; who holds it
        ├── ToolMissing          a program is not installed; how to install it
        └── ServiceFailed        a process exited or never became ready; its log tail
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Location:
    """A place in a file, 1-based like an editor shows it."""

    file: Path
    line: int | None = None
    column: int | None = None

    def __str__(self) -> str:
        text = str(self.file)
        if self.line is not None:
            text += f":{self.line}"
            if self.column is not None:
                text += f":{self.column}"
        return text


class MeshlabError(Exception):
    """Base of every error meshlab explains instead of crashing."""

    exit_code = 2
    kind = "error"

    def __init__(self, message: str, *, where: Location | None = None, fix: str | None = None,
                 details: str | None = None):
        super().__init__(message)
        self.message = message
        self.where = where
        self.fix = fix
        self.details = details

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "message": self.message,
            "where": str(self.where) if self.where else None,
            "fix": self.fix,
            "details": self.details,
        }

    def __str__(self) -> str:
        parts = [self.message]
        if self.where:
            parts.append(f"  at {self.where}")
        if self.details:
            parts.append(self.details)
        if self.fix:
            parts.append(f"  fix: {self.fix}")
        return "\n".join(parts)


class InputError(MeshlabError):
    kind = "input"


class YamlSyntaxError(InputError):
    kind = "yaml"


class EnvoyConfigError(InputError):
    kind = "envoy-config"


class CourseError(MeshlabError):
    kind = "course"


class UnknownLab(CourseError):
    kind = "unknown-lab"


class EnvironmentProblem(MeshlabError):
    kind = "environment"


class PortBusy(EnvironmentProblem):
    kind = "port-busy"


class ToolMissing(EnvironmentProblem):
    kind = "tool-missing"


class ServiceFailed(EnvironmentProblem):
    kind = "service-failed"
