"""Load generation: fortio when it is installed, the built-in engine otherwise.

    result = load.run("http://127.0.0.1:10000/", requests=1000, concurrency=10)
    result.count(503), result.durations.percentile(99), result.header(503, "x-envoy-overloaded")

Both engines return a `LoadResult` shaped after fortio's JSON (`to_fortio()`).
`engine="builtin"` forces the built-in one, which checks use when they need what only
it records (the headers of a sample response per status code); counting responses by a
header (`count_header=`) always uses it.
"""

from __future__ import annotations

from meshlab.errors import InputError, ToolMissing
from meshlab.load import fortio
from meshlab.load.engine import OnProgress, Plan
from meshlab.load.engine import run as run_builtin
from meshlab.load.results import NO_RESPONSE, PERCENTILES, Bucket, Histogram, LoadResult

ENGINES = ("auto", "builtin", "fortio")


def plan(url: str, *, requests: int | None = None, duration: float | None = None, concurrency: int = 8,
         qps: float = 0.0, method: str = "GET", headers: dict[str, str] | None = None, timeout: float = 10.0,
         insecure: bool = False, count_header: str | None = None) -> Plan:
    """A Plan, or an InputError saying what is wrong with the request for one."""
    try:
        return Plan(url, requests=requests, duration=duration, concurrency=concurrency, qps=qps, method=method,
                    headers=tuple((headers or {}).items()), timeout=timeout, insecure=insecure,
                    count_header=count_header)
    except ValueError as exc:
        raise InputError(f"cannot run this load: {exc}",
                         fix="for example: meshlab load http://127.0.0.1:10000/ -n 1000 -c 10") from None


def engine_for(choice: str = "auto") -> tuple[str, str | None]:
    """("fortio", binary) or ("builtin", None) for CHOICE (auto: fortio if installed)."""
    if choice not in ENGINES:
        raise InputError(f"unknown load engine {choice!r}", fix=f"use one of: {', '.join(ENGINES)}")
    if choice == "builtin":
        return "builtin", None
    binary = fortio.find()
    if binary is None:
        if choice == "fortio":
            raise ToolMissing("fortio is not installed",
                                     fix="install fortio, or use the built-in engine (--engine builtin)")
        return "builtin", None
    return "fortio", binary


def run(url: str, *, engine: str = "auto", on_progress: OnProgress | None = None, **options: object) -> LoadResult:
    """Send the load that OPTIONS describe (see `plan`) to URL and return what it measured."""
    chosen = plan(url, **options)
    name, binary = engine_for("builtin" if chosen.count_header and engine == "auto" else engine)
    if name == "fortio" and chosen.count_header:
        raise InputError("fortio cannot count responses by a header", fix="use --engine builtin")
    if name == "fortio":
        return fortio.run(chosen, binary)
    return run_builtin(chosen, on_progress=on_progress)


__all__ = ["ENGINES", "NO_RESPONSE", "PERCENTILES", "Bucket", "Histogram", "LoadResult", "Plan", "engine_for",
           "plan", "run", "run_builtin"]
