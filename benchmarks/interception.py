"""What capture costs: the same Envoy reached directly, through iptables REDIRECT,
through an eBPF connect4 redirect, and the remote app with no Envoy at all, in one run.

    sudo .venv/bin/python benchmarks/interception.py [--requests 3000] [--concurrency 4] [--connects 300]

Starts lab 07 with its solution (pods on the real kernel; needs root), then runs a
client inside the pods for each path, to the same remote app (10.77.7.3:8080):

- no Envoy:  a process of podb outside the redirected cgroup calls the app;
- direct:    a process of pod calls Envoy's outbound listener on 127.0.0.1:15001 (loopback
             is not captured) and names the destination in `x-envoy-original-dst-host`;
- iptables:  a process of pod calls 10.77.7.3:8080 and nat OUTPUT redirects it;
- eBPF:      a process in podb's `mesh` cgroup calls 10.77.7.3:8080 and connect4 redirects it.

Each path is measured twice: keep-alive load (the built-in engine, CONCURRENCY
connections, REQUESTS requests: per-packet cost) and CONNECTS sequential requests on a
new connection each (per-connection cost: NAT and conntrack setup vs a rewritten
connect()). Ratios are against `direct` (the cost of capture) and `no Envoy`.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REMOTE = "10.77.7.3:8080"


# -- the client, run inside a pod ------------------------------------------------------

def client(url: str, headers: dict[str, str], requests: int, concurrency: int, connects: int) -> dict:
    from meshlab.load import plan as load_plan
    from meshlab.load.engine import run

    result = run(load_plan(url, requests=requests, concurrency=concurrency,
                           headers=headers))
    host, _, rest = url[len("http://"):].partition("/")
    address, port = host.split(":")
    samples, via_envoy = [], 0
    for _ in range(connects):
        start = time.perf_counter()
        connection = http.client.HTTPConnection(address, int(port), timeout=10)
        connection.request("GET", "/" + rest, headers=headers)
        response = connection.getresponse()
        response.read()
        samples.append(time.perf_counter() - start)
        via_envoy += response.getheader("x-envoy-upstream-service-time") is not None
        connection.close()
    samples.sort()
    return {
        "ok": result.ok, "total": result.total, "rps": result.actual_qps,
        "p50": result.durations.percentile(50) * 1000, "p99": result.durations.percentile(99) * 1000,
        "connect_p50": samples[len(samples) // 2] * 1000, "connect_p99": samples[int(len(samples) * 0.99)] * 1000,
        "via_envoy": via_envoy, "connects": connects,
    }


# -- the driver --------------------------------------------------------------------------

def start_lab(workdir: Path):
    from meshlab import workspace
    from meshlab.course import load_course
    from meshlab.runtime import LocalRuntime
    from meshlab.runtime.local import run_prepare_steps

    course = load_course(ROOT)
    lab = course.find(7)
    folder = workdir / "lab"
    starter = workspace.pristine_starter(course, lab, workdir / "starter", working_tree=True)
    workspace.solution_tree(course, lab, folder, starter=starter)
    # Only for this benchmark: the ORIGINAL_DST cluster may also take its destination from
    # a header, so that the same Envoy can be called directly. Absent header: unchanged.
    config = folder / "envoy.yaml"
    config.write_text(config.read_text().replace(
        "    lb_policy: CLUSTER_PROVIDED\n",
        "    lb_policy: CLUSTER_PROVIDED\n    original_dst_lb_config: { use_http_header: true }\n", 1))
    run_prepare_steps(lab, folder)
    runtime = LocalRuntime(lab, folder, workdir / "run")
    runtime.start_all()
    return runtime


def measure(runtime, pod: str, cgroup: str | None, url: str, headers: dict[str, str], args) -> dict:
    from meshlab.runtime import enter

    launcher = [sys.executable, enter.__file__, "--netns", runtime.pods.netns_path(pod)]
    if cgroup:
        launcher += ["--cgroup", runtime.pods.record.cgroups[cgroup]]
    command = [*launcher, "--", sys.executable, __file__, "--client", url, "--headers", json.dumps(headers),
               "--requests", str(args.requests), "--concurrency", str(args.concurrency),
               "--connects", str(args.connects)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        sys.exit(f"the client for {url} in {pod} failed:\n{proc.stderr}")
    return json.loads(proc.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--connects", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--client", help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        print(json.dumps(client(args.client, json.loads(args.headers), args.requests, args.concurrency,
                                args.connects)))
        return
    if os.geteuid() != 0:
        sys.exit("this benchmark creates namespaces and loads BPF programs: run it as root")
    paths = [
        ("no Envoy", "podb", None, f"http://{REMOTE}/", {}),
        ("direct", "pod", None, "http://127.0.0.1:15001/", {"x-envoy-original-dst-host": REMOTE}),
        ("iptables", "pod", None, f"http://{REMOTE}/", {}),
        ("eBPF", "podb", "mesh", f"http://{REMOTE}/", {}),
    ]
    with tempfile.TemporaryDirectory(prefix="meshlab-bench-") as temporary:
        runtime = start_lab(Path(temporary))
        try:
            rounds: dict[str, list[dict]] = {name: [] for name, *_ in paths}
            for _ in range(args.rounds):
                for name, pod, cgroup, url, headers in paths:  # interleaved: a busy moment hits all
                    rounds[name].append(measure(runtime, pod, cgroup, url, headers, args))
        finally:
            runtime.stop_all()
    load = os.getloadavg()
    print(f"{time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, {platform.platform()}, Python "
          f"{platform.python_version()}, load average {load[0]:.1f}; {args.requests} keep-alive requests over "
          f"{args.concurrency} connections, {args.connects} new connections; median of {args.rounds} rounds")
    print(f"{'path':<10} {'via Envoy':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'conn p50':>9} {'conn p99':>9} "
          f"{'p50/direct':>10} {'conn/direct':>11} {'p50/no Envoy':>12}")
    summary = {name: {key: statistics.median(r[key] for r in results) for key in results[0]}
               for name, results in rounds.items()}
    for name, row in summary.items():
        print(f"{name:<10} {int(row['via_envoy']):>5}/{int(row['connects']):<3} {row['rps']:>8.0f} "
              f"{row['p50']:>7.2f} {row['p99']:>7.2f} {row['connect_p50']:>9.2f} {row['connect_p99']:>9.2f} "
              f"{row['p50'] / summary['direct']['p50']:>10.2f} "
              f"{row['connect_p50'] / summary['direct']['connect_p50']:>11.2f} "
              f"{row['p50'] / summary['no Envoy']['p50']:>12.2f}")


if __name__ == "__main__":
    main()
