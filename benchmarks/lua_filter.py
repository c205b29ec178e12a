"""What Lab 05's Lua filter costs per request: the same Envoy route with and without
it, in one process, interleaved so that load on the machine hits both alike.

    .venv/bin/python benchmarks/lua_filter.py [--requests 2000]

Prints p50 and p99 for each and the ratio with/without (1.00 = free). Free ports only;
every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port
from meshlab.runtime.processes import spawn, terminate_group

ROOT = Path(__file__).resolve().parents[1]
LUA = (ROOT / "solutions" / "05-lua" / "bucket.lua").read_text()

CONFIG = """
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bench
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, route: {{cluster: app}}}}]}}
          http_filters:{lua}
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: app
    connect_timeout: 1s
    load_assignment:
      cluster_name: app
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {app}}}}}}}}}]}}]
"""
LUA_FILTER = """
          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code: {{filename: {file}}}"""


def _wait(url: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            httpx.get(url, timeout=1, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.02)
    raise SystemExit(f"{url} did not come up")


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
            lua = LUA_FILTER.format(file=work / "bucket.lua") if name == "lua" else ""
            (work / f"{name}.yaml").write_text(CONFIG.format(port=port, app=app_port, lua=lua))
            envoys.append(EnvoyProcess(work / f"{name}.yaml", workdir=work, name=name).start())
        for port in [app_port, *ports.values()]:
            _wait(f"http://127.0.0.1:{port}/")
        samples: dict[str, list[float]] = {"plain": [], "lua": []}
        clients = {name: httpx.Client(base_url=f"http://127.0.0.1:{port}", trust_env=False) for name, port in ports.items()}
        order = ["plain", "lua"]
        for i in range(options.requests):
            for name in order if i % 2 else reversed(order):
                started = time.perf_counter()
                clients[name].get("/", headers={"x-user-id": f"user-{i}"})
                samples[name].append(time.perf_counter() - started)
        for client in clients.values():
            client.close()
    finally:
        for envoy in envoys:
            envoy.stop()
        for proc in reversed(procs):
            terminate_group(proc.pid, proc.pid, popen=proc)
        log.close()

    def stats(values: list[float]) -> tuple[float, float]:
        ordered = sorted(values)
        return statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99)] * 1000

    (p50, p99), (q50, q99) = stats(samples["lua"]), stats(samples["plain"])
    print(f"requests: {options.requests} each, interleaved, sequential, keep-alive")
    print(f"without Lua: p50 {q50:.3f} ms  p99 {q99:.3f} ms")
    print(f"with Lua:    p50 {p50:.3f} ms  p99 {p99:.3f} ms")
    print(f"ratio with/without: p50 {p50 / q50:.2f}  p99 {p99 / q99:.2f}")


if __name__ == "__main__":
    main()
