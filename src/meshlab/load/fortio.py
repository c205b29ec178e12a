"""fortio, when it is installed: `fortio load -json -` in a subprocess, its JSON parsed
into the same `LoadResult` the built-in engine returns.

`MESHLAB_FORTIO` names the binary (else `fortio` on PATH). fortio writes its result
to stdout with `-json -` and its log to stderr, which we keep for error messages.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from meshlab.errors import ToolMissing
from meshlab.load.engine import Plan
from meshlab.load.results import LoadResult

ENV = "MESHLAB_FORTIO"


class FortioFailed(ToolMissing):
    kind = "fortio-failed"


def find() -> str | None:
    """The fortio binary to use, or None when there is none."""
    named = os.environ.get(ENV)
    if named:
        found = shutil.which(named)
        if found is None:
            raise ToolMissing(f"{ENV}={named} is not an executable program",
                              fix=f"point {ENV} at the fortio binary, or unset it to use the built-in engine")
        return found
    return shutil.which("fortio")


def argv(binary: str, plan: Plan) -> list[str]:
    """The fortio command line that carries out PLAN."""
    args = [binary, "load", "-json", "-", "-c", str(plan.concurrency), "-qps", f"{plan.qps:g}",
            "-timeout", f"{plan.timeout:g}s"]
    args += ["-n", str(plan.requests)] if plan.requests is not None else ["-t", f"{plan.duration:g}s"]
    if plan.method.upper() != "GET":
        args += ["-X", plan.method.upper()]
    for name, value in plan.headers:
        args += ["-H", f"{name}: {value}"]
    if plan.insecure:
        args.append("-k")
    return [*args, plan.url]


def run(plan: Plan, binary: str) -> LoadResult:
    command = argv(binary, plan)
    limit = (plan.duration or 0) + plan.timeout + 60 if plan.duration else None
    proc = subprocess.run(command, capture_output=True, text=True, timeout=limit)
    log_tail = "\n".join(proc.stderr.strip().splitlines()[-10:])
    if proc.returncode != 0:
        raise FortioFailed(f"fortio exited with code {proc.returncode}", details=log_tail,
                           fix="run the command by hand to see why: " + " ".join(command))
    try:
        data = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise FortioFailed("fortio did not print a JSON result", details=log_tail or proc.stdout[-500:],
                           fix=f"check that {binary} is fortio 1.x (`{binary} version`)") from None
    return LoadResult.from_fortio(data)
