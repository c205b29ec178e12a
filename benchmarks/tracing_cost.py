"""What Lab 08's observability costs Envoy: requests/s and p99 of one Envoy route with
and without OpenTelemetry tracing at 100 % sampling, and with a real Prometheus
scraping it every second, in one process, rounds interleaved so that load on the
machine hits every variant alike.

    .venv/bin/python benchmarks/tracing_cost.py [--requests 5000] [--concurrency 16] [--rounds 3]

The route answers with a `direct_response`, so Envoy's own work is what is measured
(behind a real app, the app's time dilutes it). Variants, each its own Envoy
(`--concurrency 1`):

  baseline      no tracing, nobody scrapes it
  traced-lab    tracing, 100 % sampling, spans sent one by one as in lab 08
                (runtime tracing.opentelemetry.min_flush_spans 1, flush_interval_ms 200)
  traced        tracing, 100 % sampling, Envoy's default batching (5 spans or 5 s)
  traced-void   as traced, but nothing listens where the spans go: Envoy's own cost,
                without a receiver's CPU on the same machine
  scraped       no tracing, Prometheus scrapes /stats/prometheus every 1 s
  baseline-2    the baseline again, a second Envoy: how far two identical variants
                differ on this machine (the noise)

Spans go to meshlab.apps.traces, which runs on the same machine (its CPU is part of
what tracing costs here; traced-void leaves it out). Prints each variant's best requests/s and median p99 over
the rounds, and the ratio to the baseline (1.00 = free). Free ports only; every
process it starts is stopped and its temporary folder removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import envoy_bench
import httpx
from meshlab import load
from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port
from meshlab.runtime.processes import spawn, terminate_group

TRACING = {"random_sampling": {"value": 100}, "provider": {
    "name": "envoy.tracers.opentelemetry",
    "typed_config": {"@type": "type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig",
                     "grpc_service": {"envoy_grpc": {"cluster_name": "opentelemetry"}, "timeout": "1s"},
                     "service_name": "bench"}}}
LAB_FLUSH = {"layers": [{"name": "flush", "static_layer": {"tracing.opentelemetry.min_flush_spans": 1,
                                                           "tracing.opentelemetry.flush_interval_ms": 200}}]}
VARIANTS = {  # name: (traced, spans flushed one by one as in lab 08, scraped)
    "baseline": (False, False, False),
    "traced-lab": (True, True, False),
    "traced": (True, False, False),
    "traced-void": (True, False, False),
    "scraped": (False, False, True),
    "baseline-2": (False, False, False),
}


def config(port: int, admin: int, otlp: int, traced: bool, lab_flush: bool) -> str:
    """An Envoy answering "ok" itself, stats flushed each second, spans (when TRACED) to
    127.0.0.1:OTLP."""
    extra = {"layered_runtime": LAB_FLUSH} if lab_flush else {}
    return envoy_bench.proxy(port, [envoy_bench.direct({"inline_string": "ok"})], admin=admin,
                             hcm={"tracing": TRACING} if traced else None,
                             clusters=[envoy_bench.cluster("opentelemetry", otlp, http2=True)],
                             stats_flush_interval="1s", **extra)


PROMETHEUS = """
global: {{scrape_interval: 1s}}
scrape_configs:
- job_name: bench
  metrics_path: /stats/prometheus
  static_configs: [{{targets: ["127.0.0.1:{admin}"]}}]
"""


def _scraped(prometheus: str, timeout: float = 30.0) -> None:
    """Until Prometheus reports its target up (its discovery takes ~6 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            result = httpx.get(prometheus + "/api/v1/query", params={"query": "up"}, trust_env=False).json()
            if any(r["value"][1] == "1" for r in result["data"]["result"]):
                return
        except (httpx.HTTPError, ValueError, KeyError):
            pass
        time.sleep(0.25)
    raise SystemExit("Prometheus never scraped the Envoy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000, help="requests per variant and round")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args()
    if shutil.which("prometheus") is None:
        raise SystemExit("needs Prometheus: sudo apt-get install prometheus")
    work = Path(tempfile.mkdtemp(prefix="meshlab-bench-tracing-"))
    log = open(work / "log", "wb")
    otlp, store = free_port(), free_port()
    procs = [spawn([sys.executable, "-m", "meshlab.apps.traces", "--otlp-port", str(otlp), "--port", str(store)],
                   cwd=work, env={}, stdout=log, stderr=log, die_with_parent=True)]
    envoys: dict[str, EnvoyProcess] = {}
    ports = {name: free_port() for name in VARIANTS}
    results: dict[str, list[load.LoadResult]] = {name: [] for name in VARIANTS}
    try:
        envoy_bench.wait_up(f"http://127.0.0.1:{store}/api/spans", timeout=30)
        for name, (traced, lab_flush, scraped) in VARIANTS.items():
            admin = free_port() if scraped else 0
            collector = free_port() if name == "traced-void" else otlp  # a port nobody listens on
            envoys[name] = envoy_bench.start(work, name, config(ports[name], admin, collector, traced, lab_flush))
            if scraped:
                (work / "prometheus.yml").write_text(PROMETHEUS.format(admin=admin))
                prometheus_port = free_port()
                procs.append(spawn(["prometheus", f"--config.file={work / 'prometheus.yml'}",
                                    f"--storage.tsdb.path={work / 'prometheus-data'}",
                                    f"--web.listen-address=127.0.0.1:{prometheus_port}", "--log.level=warn"],
                                   cwd=work, env={}, stdout=log, stderr=log, die_with_parent=True))
                _scraped(f"http://127.0.0.1:{prometheus_port}")
        for round_number in range(options.rounds):
            order = list(VARIANTS) if round_number % 2 == 0 else list(reversed(VARIANTS))
            for name in order:
                results[name].append(load.run(f"http://127.0.0.1:{ports[name]}/", engine="builtin",
                                              requests=options.requests, concurrency=options.concurrency))
        spans = {name: (envoy.admin.stat("tracing.opentelemetry.spans_sent"),
                        envoy.admin.stat("cluster.opentelemetry.upstream_rq_total"))
                 for name, envoy in envoys.items() if VARIANTS[name][0]}
    finally:
        for envoy in envoys.values():
            envoy.stop()
        for proc in reversed(procs):
            terminate_group(proc.pid, proc.pid, popen=proc)
        log.close()
        shutil.rmtree(work, ignore_errors=True)

    def best_rps(name: str) -> float:
        return max(r.actual_qps for r in results[name])

    def p99(name: str) -> float:
        return statistics.median(r.durations.percentile(99) for r in results[name]) * 1000

    print(f"{options.rounds} rounds x {options.requests} requests per variant, {options.concurrency} connections, "
          f"built-in load engine, Envoy direct_response, --concurrency 1")
    print(f"{'variant':<12} {'req/s (best)':>13} {'p99 (median)':>13} {'req/s ratio':>12} {'p99 ratio':>10}")
    for name in VARIANTS:
        ratio = best_rps(name) / best_rps("baseline")
        print(f"{name:<12} {best_rps(name):>13,.0f} {p99(name):>10.2f} ms {ratio:>12.2f} "
              f"{p99(name) / p99('baseline'):>10.2f}")
    failed = {name: r.total - r.ok for name, rs in results.items() for r in rs if r.total != r.ok}
    print("spans sent, in export calls: " + ", ".join(f"{name} {sent:,} in {calls:,}"
                                                      for name, (sent, calls) in spans.items()))
    print(f"non-2xx answers: {failed or 'none'}")


if __name__ == "__main__":
    main()
