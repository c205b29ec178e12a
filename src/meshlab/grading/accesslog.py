"""Envoy's JSON access log, as checks read it: one JSON object per request, written by
the lab's Envoy to /dev/stdout, which the runtime keeps (`runtime.access_log_path`).

The labs' starters configure the format (keep it when you edit):

    json_format: {path: "%REQ(:PATH)%", response_code: "%RESPONSE_CODE%",
                  response_flags: "%RESPONSE_FLAGS%", duration: "%DURATION%", ...}

Envoy writes the log in batches (the labs pass `--file-flush-interval-msec`), so a
check that sent N requests waits until N new entries are there (`AccessLog.wait`).
Response flags say what Envoy did to a request, in its own words (`FLAGS`).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Iterable

from meshlab.grading.failures import CheckFailed
from meshlab.grading.polling import eventually

FLAGS = {
    "UO": "upstream overflow: a circuit breaker refused the request",
    "UH": "no healthy upstream host",
    "URX": "the retry limit was reached",
    "UT": "upstream request timeout",
    "FI": "fault injection: the request was aborted",
    "DI": "fault injection: the request was delayed",
    "UF": "upstream connection failure",
    "UC": "upstream connection terminated",
    "URR": "upstream remote reset",
    "DC": "downstream (client) connection terminated",
    "NR": "no route configured",
}

REQUIRED_FIELDS = ("response_code", "response_flags", "duration")
_FORMAT_HINT = ("keep the starter's access_log block (a JSON log to /dev/stdout with path, response_code, "
                "response_flags and duration) in the HTTP connection manager")


class AccessLog:
    """The JSON access log at PATH; `position()` marks a place, `since(mark)` reads on."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def position(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def since(self, position: int = 0) -> list[dict]:
        """The entries written after POSITION (complete lines only; other lines are skipped)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(position)
                data = handle.read()
        except FileNotFoundError:
            return []
        entries = []
        for line in data.split(b"\n")[:-1]:  # the last piece is unfinished (or empty)
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict):
                entries.append(entry)
        return entries

    def wait(self, position: int, count: int, *, timeout: float = 5.0, where=None) -> list[dict]:
        """The entries after POSITION once there are at least COUNT of them matching
        WHERE (a predicate); fails the check, saying why, when they do not come."""
        entries: list[dict] = []

        def enough() -> bool:
            entries[:] = [e for e in self.since(position) if where is None or where(e)]
            return len(entries) >= count

        if not eventually(enough, timeout):
            raise CheckFailed(
                f"Envoy's access log has {len(entries)} matching entries, expected {count}",
                expected=f"one JSON line per request in {self.path.name}",
                received=f"{len(entries)} after {timeout:.0f} s" +
                         ("" if self.since(position) else " (nothing new at all)"),
                hint=_FORMAT_HINT)
        return entries


def require_fields(entries: Iterable[dict]) -> None:
    """Fail the check if the log lacks the fields the checks read."""
    for entry in entries:
        missing = [name for name in REQUIRED_FIELDS if name not in entry]
        if missing:
            raise CheckFailed("Envoy's access log does not have the fields the checks read",
                              expected="JSON entries with " + ", ".join(REQUIRED_FIELDS),
                              received=f"an entry without {', '.join(missing)}: {json.dumps(entry)[:200]}",
                              hint=_FORMAT_HINT)


def flags(entry: dict) -> set[str]:
    """The response flags of ENTRY ("UO", "DI"...; Envoy writes "-" for none)."""
    value = str(entry.get("response_flags") or "-")
    return set() if value == "-" else set(value.split(","))


def count_flags(entries: Iterable[dict]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for entry in entries:
        counts.update(flags(entry))
    return counts


def with_flag(entries: Iterable[dict], flag: str) -> list[dict]:
    return [e for e in entries if flag in flags(e)]


def duration_s(entry: dict) -> float:
    """Envoy's own duration of the request (DURATION is in milliseconds)."""
    return float(entry.get("duration") or 0) / 1000.0


def describe_flags(counts: Counter[str]) -> str:
    if not counts:
        return "no response flags"
    return ", ".join(f"{flag} x {n}" for flag, n in sorted(counts.items()))
