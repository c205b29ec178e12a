"""What the Mini-Mesh's sidecars add to a request: latency p50/p90/p99 of one hop and of
the whole web -> api -> db path with mutual TLS at a fixed request rate, against the
same apps with no mesh, measured in one run.

    sudo .venv/bin/python benchmarks/mesh_overhead.py                  # the recorded run
    sudo .venv/bin/python benchmarks/mesh_overhead.py --rate 100 --seconds 10

Lab 11's solution runs (a copy, in pods of its own). The baseline is the same apps
(meshlab.apps.tier, redis-server) started a second time in the mesh's control pod,
where no capture rule exists, calling each other on the pod's loopback. Rows:

- `one hop, no mesh`: a client in the control pod to the baseline api on 127.0.0.1
  (`?alone=1`: api answers without calling Redis);
- `one hop, mesh`: a client in web's pod to api's virtual address: captured into web's
  sidecar, mutual TLS to api's sidecar, the app;
- `path, no mesh` / `path, mesh`: web's app, which calls api, which counts in Redis.

A client sends at a fixed rate (one request every 1/RATE s, each timed from its
scheduled start, so a slow answer delays nothing it should not: no coordinated
omission) on one kept-alive connection from inside the pod; the rows take turns in short
bursts (--rounds), so the shared machine's other work lands on all of them alike.
Ratios are to the row's no-mesh baseline of the same shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from meshlab import workspace  # noqa: E402
from meshlab.course import load_course  # noqa: E402
from meshlab.mesh import inject, manifest  # noqa: E402
from meshlab.runtime.netns import NetnsTransport  # noqa: E402
from meshlab.session import LabSession, run_dir_for  # noqa: E402


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": pick(0.50) * 1000, "p90": pick(0.90) * 1000, "p99": pick(0.99) * 1000}


def fixed_rate(netns: str, url: str, rate: float, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of RATE requests a second for SECONDS from inside NETNS; errors."""
    latencies, errors = [], 0
    with httpx.Client(transport=NetnsTransport(netns), timeout=10.0, trust_env=False) as http:
        for _ in range(20):                       # warm the connection pools on the way
            http.get(url)
        start = time.perf_counter()
        for index in range(int(rate * seconds)):
            scheduled = start + index / rate
            delay = scheduled - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            try:
                ok = http.get(url).status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - scheduled)
            errors += not ok
    return latencies, errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--seconds", type=float, default=10.0, help="per row (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="turns the rows take (default 5)")
    parser.add_argument("--json", action="store_true")
    options = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("pods need root: run with sudo")

    course = load_course(ROOT)
    lab = course.find(11)
    scratch = Path(tempfile.mkdtemp(prefix="meshlab-bench-"))
    lab_dir = workspace.solution_tree(course, lab, scratch / "lab")
    session = LabSession.open(lab, lab_dir, run_dir_for(course, lab, lab_dir))
    baseline: list[subprocess.Popen] = []
    rows = []
    try:
        pods = session.runtime.pods
        mesh = manifest.load(lab.mesh)
        where = inject.addresses(mesh)
        # The same apps again, without sidecars, in the control pod (no capture rules).
        control = pods.netns_path(inject.CONTROL_POD)
        enter = ["nsenter", f"--net={control}", "--"]
        baseline.append(subprocess.Popen([*enter, shutil.which("redis-server"), "--port", "9379", "--bind",
                                          "127.0.0.1", "--save", "", "--appendonly", "no"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        baseline.append(subprocess.Popen([*enter, sys.executable, "-m", "meshlab.apps.tier", "--name", "api",
                                          "--version", "v1", "--port", "9081", "--redis", "127.0.0.1:9379"],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        baseline.append(subprocess.Popen([*enter, sys.executable, "-m", "meshlab.apps.tier", "--name", "web",
                                          "--version", "v1", "--port", "9080", "--upstream",
                                          "http://127.0.0.1:9081"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL))
        space = pods.namespace(inject.CONTROL_POD)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not all(space.can_connect("127.0.0.1", p) for p in (9379, 9081, 9080)):
            time.sleep(0.1)
        plan = [
            ("one hop, no mesh", control, "http://127.0.0.1:9081/?alone=1"),
            ("one hop, mesh", pods.netns_path("web-v1"), f"http://{where.services['api']}:8080/?alone=1"),
            ("path, no mesh", control, "http://127.0.0.1:9080/"),
            ("path, mesh", pods.netns_path("web-v1"), "http://127.0.0.1:8080/"),
        ]
        # Rows take turns, ROUNDS times: a burst of the shared machine's other work lands
        # on every row alike instead of on whichever ran at that moment.
        samples: dict[str, list[float]] = {name: [] for name, _, _ in plan}
        failed: dict[str, int] = {name: 0 for name, _, _ in plan}
        for _ in range(options.rounds):
            for name, netns, url in plan:
                latencies, errors = fixed_rate(netns, url, options.rate, options.seconds / options.rounds)
                samples[name] += latencies
                failed[name] += errors
        for name, _, _ in plan:
            rows.append({"row": name, "requests": len(samples[name]), "errors": failed[name],
                         **percentiles(samples[name]), "mean": statistics.fmean(samples[name]) * 1000})
    finally:
        for process in baseline:
            process.terminate()
        for process in baseline:
            process.wait(10)
        session.close()
        shutil.rmtree(scratch, ignore_errors=True)

    by_name = {row["row"]: row for row in rows}
    for row in rows:
        base = by_name[row["row"].replace("mesh", "no mesh")] if row["row"].endswith(", mesh") else row
        for q in ("p50", "p90", "p99"):
            row[f"{q}_added"] = row[q] - base[q]
        row["p50_ratio"] = row["p50"] / base["p50"]
    if options.json:
        print(json.dumps({"rate": options.rate, "seconds": options.seconds, "rows": rows}, indent=2))
        return
    print(f"{platform.node()} · {os.cpu_count()} cores · load {os.getloadavg()[0]:.1f} · {options.rate:.0f} req/s "
          f"for {options.seconds:.0f} s per row in {options.rounds} turns · {time.strftime('%Y-%m-%d')}")
    print(f"{'row':<18} {'n':>5} {'err':>4} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'p50 x':>6} "
          f"{'added p50/p90/p99 ms':>22}")
    for row in rows:
        added = f"{row['p50_added']:.2f}/{row['p90_added']:.2f}/{row['p99_added']:.2f}"
        print(f"{row['row']:<18} {row['requests']:>5} {row['errors']:>4} {row['p50']:>8.2f} {row['p90']:>8.2f} "
              f"{row['p99']:>8.2f} {row['p50_ratio']:>6.2f} {added:>22}")


if __name__ == "__main__":
    main()
