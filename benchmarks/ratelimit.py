"""What Lab 09's global rate limit costs: decisions per second of the course's
solution service (on real Redis), and the latency Envoy adds per request with the
rate-limit filter on vs off, in one run.

    .venv/bin/python benchmarks/ratelimit.py [--requests 2000] [--seconds 5] [--clients 8]

Two measurements, each against a baseline taken in the same process:

- decisions/s: CLIENTS threads ask the service ShouldRateLimit (one descriptor that is
  counted in Redis, never over its limit) for SECONDS; the baseline is the same threads
  running the service's counting step (the Lua INCRBY + EXPIRE) against Redis directly,
  the ceiling a service in front of that Redis can reach.
- latency: REQUESTS sequential requests through an Envoy with the filter and through
  one without it (same route, same app), interleaved so machine load hits both alike;
  p50 and p99 of each, and the ratio.

Needs redis-server on PATH. Free ports only; every process it starts is stopped at the end.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import envoy_bench
import grpc
import redis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port
from meshlab.runtime.processes import spawn, terminate_group

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "solutions" / "09-rate-limit" / "ratelimit_service.py"
ENVOY_WITH_FILTER = (ROOT / "solutions" / "09-rate-limit" / "envoy-a.yaml").read_text()
# Never over the limit: every request is a full decision (a Redis round trip), none a 429.
LIMITS = """domain: ingress
descriptors:
  - key: user
    rate_limit: {unit: second, requests_per_unit: 1000000000}
"""


def _wait_port(port: int, what: str) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.02)
    raise SystemExit(f"{what} did not come up on 127.0.0.1:{port}")


def _envoy_config(with_filter: bool, listener: int, app: int, service: int) -> str:
    """The solution's envoy-a.yaml on free ports; without the filter, the same minus it."""
    text = (ENVOY_WITH_FILTER.replace("port_value: 9901", "port_value: 0")
            .replace("port_value: 10000", f"port_value: {listener}")
            .replace("port_value: 8080", f"port_value: {app}")
            .replace("port_value: 18081", f"port_value: {service}"))
    if not with_filter:
        start = text.index("                  - name: envoy.filters.http.ratelimit")
        end = text.index("                  - name: envoy.filters.http.router")
        text = text[:start] + text[end:]
    return text


def _load_count_step():
    """The solution's counting step (count_hit), imported from its file."""
    spec = importlib.util.spec_from_file_location("ratelimit_solution", SERVICE)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module.count_hit


def _rate(work, clients: int, seconds: float) -> tuple[float, int]:
    """Calls of WORK(thread index, call number) per second over CLIENTS threads."""
    done = [0] * clients
    stop = time.monotonic() + seconds
    errors = []

    def loop(index: int) -> None:
        n = 0
        try:
            while time.monotonic() < stop:
                work(index, n)
                n += 1
        except Exception as error:  # reported below; a benchmark with failures is no benchmark
            errors.append(error)
        done[index] = n

    started = time.monotonic()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a call failed: {errors[0]!r}")
    return sum(done) / (time.monotonic() - started), sum(done)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000, help="requests through each Envoy (default 2000)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each throughput run (default 5)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent gRPC callers (default 8)")
    options = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("redis-server is not installed: sudo apt-get install redis-server")

    work = Path(tempfile.mkdtemp(prefix="meshlab-bench-ratelimit-"))
    (work / "limits.yaml").write_text(LIMITS)
    redis_port, service_port, app_port = free_port(), free_port(), free_port()
    listeners = {"without": free_port(), "with": free_port()}
    log = open(work / "log", "wb")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs = []
    envoys: list[EnvoyProcess] = []
    try:
        procs.append(spawn(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                            "--appendonly", "no", "--dir", str(work)], cwd=work, env=env, stdout=log, stderr=log,
                           die_with_parent=True))
        _wait_port(redis_port, "redis-server")
        procs.append(spawn([sys.executable, str(SERVICE), "--config", "limits.yaml", "--port", str(service_port),
                            "--redis", f"127.0.0.1:{redis_port}"], cwd=work, env=env, stdout=log, stderr=log,
                           die_with_parent=True))
        procs.append(spawn([sys.executable, "-m", "meshlab.apps.whoami", "--name", "app", "--port", str(app_port)],
                           cwd=work, env=env, stdout=log, stderr=log, die_with_parent=True))
        _wait_port(service_port, "the rate-limit service")
        _wait_port(app_port, "the app")
        for name, port in listeners.items():
            (work / f"{name}.yaml").write_text(_envoy_config(name == "with", port, app_port, service_port))
            envoys.append(EnvoyProcess(work / f"{name}.yaml", workdir=work, name=name).start())

        # -- decisions per second: the service vs its own counting step on Redis ----------
        count_hit = _load_count_step()
        client = redis.Redis(port=redis_port)
        direct, direct_n = _rate(lambda i, n: count_hit(client, f"bench_direct_{i}_{int(time.time())}", 1, 1),
                                 options.clients, options.seconds)
        channel = grpc.insecure_channel(f"127.0.0.1:{service_port}")
        stub = rls_pb2_grpc.RateLimitServiceStub(channel)
        requests = [rls_pb2.RateLimitRequest(domain="ingress", descriptors=[ratelimit_pb2.RateLimitDescriptor(
            entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="user", value=f"bench-{i}")])])
            for i in range(options.clients)]
        over = []

        def decide(i: int, n: int) -> None:
            response = stub.ShouldRateLimit(requests[i], timeout=5)
            if response.overall_code != rls_pb2.RateLimitResponse.Code.OK:
                over.append(response)

        stub.ShouldRateLimit(requests[0], timeout=5)  # connect before the clock starts
        decisions, decisions_n = _rate(decide, options.clients, options.seconds)
        channel.close()
        client.close()
        if over:
            raise SystemExit(f"{len(over)} decisions were OVER_LIMIT: the benchmark's limit is too low")

        # -- latency added by the filter ---------------------------------------------------------
        urls = {name: f"http://127.0.0.1:{port}/" for name, port in listeners.items()}
        samples = envoy_bench.interleaved(urls, options.requests, headers=lambda i: {"x-user-id": f"user-{i % 50}"},
                                          warm=1)
        asked = sum(v for k, v in envoys[1].admin.stats(r"ratelimit\.ok$").items())
    finally:
        for envoy in envoys:
            envoy.stop()
        for proc in reversed(procs):
            terminate_group(proc.pid, proc.pid, popen=proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    (w50, w99), (o50, o99) = envoy_bench.percentiles(samples["with"]), envoy_bench.percentiles(samples["without"])
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load average {load:.1f}")
    print(f"decisions/s, {options.clients} threads for {options.seconds:g} s each:")
    print(f"  Redis count step alone (baseline): {direct:8.0f} /s  ({direct_n} calls)")
    print(f"  the service over gRPC:             {decisions:8.0f} /s  ({decisions_n} calls)")
    print(f"  ratio service/baseline: {decisions / direct:.2f}")
    print(f"latency, {options.requests} sequential requests through each Envoy, interleaved, keep-alive "
          f"(Envoy with the filter asked the service {asked} times):")
    print(f"  without the filter: p50 {o50:.3f} ms  p99 {o99:.3f} ms")
    print(f"  with the filter:    p50 {w50:.3f} ms  p99 {w99:.3f} ms")
    print(f"  added: p50 {w50 - o50:+.3f} ms  p99 {w99 - o99:+.3f} ms; ratio with/without: p50 {w50 / o50:.2f}  "
          f"p99 {w99 / o99:.2f}")


if __name__ == "__main__":
    main()
