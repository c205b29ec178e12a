"""What Lab 05's Lua filter costs per request: the same Envoy route with and without
it, in one process, interleaved so that load on the machine hits both alike.

    .venv/bin/python benchmarks/lua_filter.py [--requests 2000]

Prints p50 and p99 for each and the ratio with/without (1.00 = free). Free ports only;
every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import envoy_bench
from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port
from meshlab.runtime.processes import spawn, terminate_group

ROOT = Path(__file__).resolve().parents[1]
LUA = (ROOT / "solutions" / "05-lua" / "bucket.lua").read_text()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    options = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="meshlab-bench-lua-"))
    (work / "bucket.lua").write_text(LUA)
    app_port = free_port()
    ports = {"plain": free_port(), "lua": free_port()}
    log = open(work / "log", "wb")
    envoys: list[EnvoyProcess] = []
    procs = [spawn([sys.executable, "-m", "meshlab.apps.versioned", "--port", str(app_port), "--version", "v1"],
                   cwd=work, env={}, stdout=log, stderr=log, die_with_parent=True)]
    try:
        for name, port in ports.items():
            filters = [envoy_bench.lua_filter(work / "bucket.lua")] if name == "lua" else []
            envoys.append(envoy_bench.start(work, name, envoy_bench.proxy(
                port, [envoy_bench.to_cluster("app")], filters=filters, clusters=[envoy_bench.cluster("app", app_port)])))
        for port in [app_port, *ports.values()]:
            envoy_bench.wait_up(f"http://127.0.0.1:{port}/")
        samples = envoy_bench.interleaved({name: f"http://127.0.0.1:{port}/" for name, port in ports.items()},
                                          options.requests, headers=lambda i: {"x-user-id": f"user-{i}"})
    finally:
        for envoy in envoys:
            envoy.stop()
        for proc in reversed(procs):
            terminate_group(proc.pid, proc.pid, popen=proc)
        log.close()

    (p50, p99), (q50, q99) = envoy_bench.percentiles(samples["lua"]), envoy_bench.percentiles(samples["plain"])
    print(f"requests: {options.requests} each, interleaved, sequential, keep-alive")
    print(f"without Lua: p50 {q50:.3f} ms  p99 {q99:.3f} ms")
    print(f"with Lua:    p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    print(f"ratio with/without: p50 {p50 / q50:.2f}  p99 {p99 / q99:.2f}")


if __name__ == "__main__":
    main()
