"""`meshlab check N --solution`, wall time: the local runtime against the Docker runtime.

Alternates the two runtimes on the same lab in one run (so a busier machine slows both),
each through the real CLI in a fresh state folder, and prints each run, the medians and
the ratio docker/local. The Docker runs need the engine and the toolbox image
(`meshlab image build`); they publish the lab's ports on the host, so nothing else may
hold them.

    .venv/bin/python benchmarks/runtimes.py --lab 1 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_check(lab: str, runtime: str) -> float:
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-") as state:
        env = {**os.environ, "MESHLAB_ROOT": str(ROOT), "MESHLAB_STATE_DIR": state}
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "meshlab", "check", lab, "--solution", "--runtime", runtime,
                               "--json"], cwd=ROOT, env=env, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{runtime}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    assert json.loads(proc.stdout)["status"] == "pass"
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", default="1")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[float]] = {"local": [], "docker": []}
    for round_number in range(1, args.rounds + 1):
        for runtime in times:
            times[runtime].append(timed_check(args.lab, runtime))
            print(f"round {round_number}  {runtime:<6} {times[runtime][-1]:6.2f} s", flush=True)
    local, docker = (statistics.median(times[name]) for name in ("local", "docker"))
    print(f"median  local {local:.2f} s  docker {docker:.2f} s  ratio docker/local {docker / local:.2f}")


if __name__ == "__main__":
    main()
