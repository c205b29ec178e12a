"""How long from setting a snapshot to every proxy acknowledging it (ACK of the last
resource type), with meshlab.xds serving real Envoys and simulated ADS clients.

    .venv/bin/python benchmarks/xds_convergence.py                 # the recorded run
    .venv/bin/python benchmarks/xds_convergence.py --envoys 1,5 --simulated 100 --rounds 20
    .venv/bin/python benchmarks/xds_convergence.py --delta         # the incremental protocol

Each round changes the route and the endpoint weights, then sets the new snapshot for
every proxy's node (one node per proxy, as istiod computes one per sidecar); the round's time
runs from before the first `set_snapshot` to the moment the last stream is in sync
(every type acknowledged, make-before-break stages included), as each stream records
it. Istio reports the same quantity as `pilot_proxy_convergence_time`.

The baseline, measured first in the same process, is one simulated client: the cost of
one push round trip on this machine. Every other row prints its ratio to it. The
server runs in this process (its own thread and event loop); simulated clients run in
a second process, Envoys as processes of their own (`--concurrency 1`). The aims are
the issue's: p99 under 100 ms for 20 Envoys, under 1 s for 1000 simulated streams.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import grpc

from meshlab.runtime import processes
from meshlab.xds import Snapshot, SnapshotCache, sample, serve_in_thread
from meshlab.xds.client import AdsClient
from meshlab.xds.proxy import DynamicEnvoy

AIMS_MS = {("envoy", 20): 100.0, ("simulated", 1000): 1000.0}
CLUSTERS = ("red", "green", "blue")
STREAMS_PER_CHANNEL = 100


@dataclass
class Row:
    kind: str          # "baseline", "envoy" or "simulated"
    proxies: int
    rounds: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    ratio_p50: float = 1.0
    ratio_p99: float = 1.0
    aim_ms: float | None = None

    @property
    def verdict(self) -> str:
        if self.aim_ms is None:
            return ""
        return "meets the aim" if self.p99_ms < self.aim_ms else "misses the aim"


def snapshot(round_number: int) -> Snapshot:
    """Round N's configuration: / goes to one of three clusters; a weight moves. The
    listener does not bind its port, so that every proxy can have the same one."""
    endpoints = {name: [("127.0.0.1", 20000 + i * 10 + j, 1 + (round_number + j) % 4) for j in range(5)]
                 for i, name in enumerate(CLUSTERS)}
    return Snapshot(sample.mesh(listener_port=10000, routes={"/": CLUSTERS[round_number % 3]},
                                endpoints=endpoints, bind=False))


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile (with 50 samples, p99 is the largest)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, int(round(fraction * len(ordered) + 0.5)) - 1))]


def measure(running, nodes: list[str], rounds: int, *, progress: str) -> list[float]:
    """Convergence times (ms) of ROUNDS snapshot changes, each set for every node."""
    cache = running.server.cache
    times = []
    for round_number in range(1, rounds + 1):
        new = snapshot(round_number)
        started = time.monotonic()
        for node in nodes:
            cache.set_snapshot(node, new)
        # Poll rather than wait on the board's condition: a waiter woken by each of a
        # thousand acknowledgements would take the GIL from the server a thousand times.
        # The time is the streams' own record, so polling adds nothing to it.
        deadline = started + 60
        while not running.board.synced(new.version, streams=len(nodes)):
            if time.monotonic() > deadline:
                raise SystemExit(f"{progress}: round {round_number} did not converge within 60 s")
            time.sleep(0.005)
        times.append((max(s.synced_at for s in running.board.streams()) - started) * 1000)
        _progress(f"{progress}: round {round_number}/{rounds}")
        time.sleep(0.02)  # let the last acknowledgements settle before the next change
    _progress("")
    return times


def _progress(text: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r" + text.ljust(60) + ("" if text else "\r"))
        sys.stderr.flush()


def primed(nodes: list[str]) -> tuple[SnapshotCache, Snapshot]:
    """A cache that gives every node round 0's snapshot, and that snapshot."""
    cache, first = SnapshotCache(), snapshot(0)
    for node in nodes:
        cache.set_snapshot(node, first)
    return cache, first


def with_envoys(count: int, rounds: int, delta: bool, workdir: Path) -> list[float]:
    nodes = [f"envoy-{i}" for i in range(count)]
    cache, first = primed(nodes)
    with serve_in_thread(cache) as running:
        envoys = []
        try:
            for node in nodes:
                envoys.append(DynamicEnvoy(node, xds_port=running.port, workdir=workdir, delta=delta).start())
            if not running.board.wait_for(lambda b: b.synced(first.version, streams=count), 60):
                raise SystemExit(f"{count} Envoys did not all connect and sync")
            return measure(running, nodes, rounds, progress=f"{count} Envoys")
        finally:
            for envoy in envoys:
                envoy.stop()


def with_simulated(count: int, rounds: int, delta: bool) -> list[float]:
    nodes = [f"sim-{i}" for i in range(count)]
    cache, first = primed(nodes)
    with serve_in_thread(cache) as running:
        argv = [sys.executable, __file__, "--serve-clients", str(count), "--port", str(running.port)]
        clients = processes.spawn(argv + (["--delta"] if delta else []), cwd=Path.cwd(), env=dict(os.environ),
                                  stdout=subprocess.DEVNULL, stderr=None, die_with_parent=True)
        try:
            if not running.board.wait_for(lambda b: b.synced(first.version, streams=count), 120):
                raise SystemExit(f"{count} simulated clients did not all connect and sync")
            return measure(running, nodes, rounds, progress=f"{count} simulated")
        finally:
            processes.terminate_group(clients.pid, clients.pid, popen=clients)


def serve_clients(count: int, port: int, delta: bool) -> None:
    """The simulated proxies' process: COUNT clients until terminated."""

    async def main() -> None:
        channels = [grpc.aio.insecure_channel(f"127.0.0.1:{port}")
                    for _ in range((count + STREAMS_PER_CHANNEL - 1) // STREAMS_PER_CHANNEL)]
        tasks = [asyncio.create_task(AdsClient(f"sim-{i}", delta=delta).run(channels[i // STREAMS_PER_CHANNEL]))
                 for i in range(count)]
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(main())


def summarize(kind: str, proxies: int, samples: list[float], baseline: Row | None) -> Row:
    row = Row(kind, proxies, len(samples), round(percentile(samples, 0.50), 2), round(percentile(samples, 0.99), 2),
              round(max(samples), 2), aim_ms=AIMS_MS.get((kind, proxies)))
    if baseline is not None:
        row.ratio_p50 = round(row.p50_ms / baseline.p50_ms, 1)
        row.ratio_p99 = round(row.p99_ms / baseline.p99_ms, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envoys", default="1,5,20", help="numbers of real Envoys, comma-separated ('' for none)")
    parser.add_argument("--simulated", default="100,1000", help="numbers of simulated ADS clients")
    parser.add_argument("--rounds", type=int, default=50, help="snapshot changes measured per row")
    parser.add_argument("--delta", action="store_true", help="use the incremental protocol (DELTA_GRPC)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--serve-clients", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.serve_clients:
        serve_clients(options.serve_clients, options.port, options.delta)
        return

    rows: list[Row] = []
    baseline = summarize("baseline", 1, with_simulated(1, options.rounds, options.delta), None)
    rows.append(baseline)
    with tempfile.TemporaryDirectory(prefix="xds-bench-") as workdir:
        for count in [int(n) for n in options.envoys.split(",") if n]:
            rows.append(summarize("envoy", count, with_envoys(count, options.rounds, options.delta, Path(workdir)),
                                  baseline))
    for count in [int(n) for n in options.simulated.split(",") if n]:
        rows.append(summarize("simulated", count, with_simulated(count, options.rounds, options.delta), baseline))

    machine = f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}"
    protocol = "delta" if options.delta else "state of the world"
    if options.json:
        print(json.dumps({"machine": machine, "protocol": protocol, "date": time.strftime("%Y-%m-%d"),
                          "rows": [asdict(r) | {"verdict": r.verdict} for r in rows]}, indent=2))
        return
    print(f"xDS convergence, {protocol}; {machine}; {time.strftime('%Y-%m-%d')}")
    print(f"{'proxies':<22}{'rounds':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'x base p50':>12}{'x base p99':>12}  aim")
    for row in rows:
        label = {"baseline": "1 simulated (baseline)", "envoy": f"{row.proxies} Envoys",
                 "simulated": f"{row.proxies} simulated"}[row.kind]
        aim = f"p99 < {row.aim_ms:.0f} ms: {row.verdict}" if row.aim_ms else ""
        print(f"{label:<22}{row.rounds:>7}{row.p50_ms:>9.1f}{row.p99_ms:>9.1f}{row.max_ms:>9.1f}"
              f"{row.ratio_p50:>12.1f}{row.ratio_p99:>12.1f}  {aim}")


if __name__ == "__main__":
    main()
