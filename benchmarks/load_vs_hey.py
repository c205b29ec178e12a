"""The built-in load engine against Debian's `hey`, on the same Envoy and backend, in one run.

    .venv/bin/python benchmarks/load_vs_hey.py [--requests 20000] [--concurrency 16] [--rounds 3]

Starts one Envoy (1 worker) on free ports in front of one of the course's apps, then
alternates hey and the built-in engine (same URL, request count and concurrency) for
ROUNDS rounds, and prints each side's best requests/s and median latency, and their
ratio. Two backends: the course's Python app (what a lab measures), and Envoy's own
`direct_response` (no app: the client and Envoy are the bottleneck).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from meshlab.envoy import EnvoyProcess, find_binary
from meshlab.load import Plan, run_builtin
from meshlab.ports import free_port
from meshlab.runtime import processes

ENVOY_CONFIG = """
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {admin}}}}}
static_resources:
  listeners:
  - name: ingress
    address: {{socket_address: {{address: 127.0.0.1, port_value: {listener}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - name: bench
              domains: ["*"]
              routes:
              - match: {{prefix: "/direct"}}
                direct_response: {{status: 200, body: {{inline_string: "Hello from Envoy\\n"}}}}
              - match: {{prefix: "/"}}
                route: {{cluster: app}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
  clusters:
  - name: app
    type: STATIC
    load_assignment:
      cluster_name: app
      endpoints:
      - lb_endpoints:
        - endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}
"""


def wait_for(url: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0, trust_env=False).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def hey(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(requests/s, median latency in s) as hey reports them."""
    out = subprocess.run(["hey", "-n", str(requests), "-c", str(concurrency), "-disable-compression", url],
                         capture_output=True, text=True, timeout=600, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    median = float(re.search(r"50%+ in ([\d.]+) secs", out).group(1))
    codes = re.search(r"\[200\]\s+(\d+) responses", out)
    if not codes or int(codes.group(1)) != requests:
        raise SystemExit(f"hey did not get {requests} x 200:\n{out}")
    return rps, median


def builtin(url: str, requests: int, concurrency: int) -> tuple[float, float]:
    result = run_builtin(Plan(url, requests=requests, concurrency=concurrency))
    if result.count(200) != requests:
        raise SystemExit(f"the built-in engine did not get {requests} x 200: {result.codes_text()}")
    return result.actual_qps, result.durations.percentile(50)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    # hey sends the largest multiple of -c not above -n: ask both for exactly that.
    options.requests -= options.requests % options.concurrency
    if shutil.which("hey") is None:
        raise SystemExit("hey is not installed: sudo apt-get install hey")

    ports = {"admin": free_port(), "listener": free_port(), "app": free_port()}
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        config = folder / "envoy.yaml"
        config.write_text(ENVOY_CONFIG.format(**ports))
        started = []
        try:
            with open(folder / "app.log", "wb") as log:
                started.append(processes.spawn(
                    [sys.executable, "-m", "meshlab.apps.hello", "--port", str(ports["app"])],
                    cwd=folder, env={}, stdout=log, stderr=log, die_with_parent=True))
            envoy = EnvoyProcess(config, workdir=folder).start()
            started.append(envoy)
            base = f"http://127.0.0.1:{ports['listener']}"
            wait_for(base + "/")
            print(f"# {time.strftime('%Y-%m-%d')}: {platform.system()} {platform.release()}, "
                  f"{len(os.sched_getaffinity(0))} CPUs, Python {platform.python_version()}, "
                  f"Envoy {find_binary().version()} (1 worker)")
            print(f"# {options.requests} requests, {options.concurrency} connections, best of {options.rounds} rounds", flush=True)
            for name, path in (("python app behind Envoy", "/"), ("Envoy direct_response", "/direct")):
                url = base + path
                warm_up = options.concurrency * 100
                builtin(url, warm_up, options.concurrency)
                hey(url, warm_up, options.concurrency)
                theirs, ours = [], []
                for _ in range(options.rounds):
                    theirs.append(hey(url, options.requests, options.concurrency))
                    ours.append(builtin(url, options.requests, options.concurrency))
                hey_rps, ours_rps = max(r for r, _ in theirs), max(r for r, _ in ours)
                hey_p50 = statistics.median(m for _, m in theirs)
                ours_p50 = statistics.median(m for _, m in ours)
                print(f"{name:<26} hey {hey_rps:8.0f} req/s p50 {hey_p50 * 1000:6.2f} ms | "
                      f"built-in {ours_rps:8.0f} req/s p50 {ours_p50 * 1000:6.2f} ms | "
                      f"ratio {ours_rps / hey_rps:.2f}")
        finally:
            for service in reversed(started):
                if isinstance(service, EnvoyProcess):
                    service.stop()
                else:
                    processes.terminate_group(service.pid, service.pid, popen=service)


if __name__ == "__main__":
    main()
