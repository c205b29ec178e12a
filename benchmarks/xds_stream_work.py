"""The server-side work of meshlab.xds per stream and snapshot change, without network:
Python function calls (exact, the same on a busy machine) and CPU time (noisy).

    .venv/bin/python benchmarks/xds_stream_work.py                  # 200 streams x 20 changes
    PYTHONPATH=/path/to/other/checkout/src .venv/bin/python benchmarks/xds_stream_work.py

Streams of clients that subscribe as Envoy does (listeners and clusters as a wildcard,
endpoints and routes by name) follow the snapshots of `xds_convergence.py`; each
response is answered at once, in the same thread. The wall-clock convergence benchmark
(`xds_convergence.py`) is dominated by the machine's load when other work runs; the
call count is not, so it compares two versions of the stream logic on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import time
from pathlib import Path

from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import discovery_pb2

from meshlab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, SnapshotCache, types
from meshlab.xds.delta import DeltaStream
from meshlab.xds.snapshot import eds_name, rds_names
from meshlab.xds.sotw import SotwStream
from meshlab.xds.status import StatusBoard

sys.path.insert(0, str(Path(__file__).parent))
from xds_convergence import snapshot  # noqa: E402 - the same configurations as the convergence benchmark


class _NoWaker:
    def wake(self, stream) -> None:
        pass  # the driver refreshes each stream itself


class Client:
    """One stream and the answers its proxy gives, synchronously."""

    def __init__(self, stream_class, cache: SnapshotCache, board: StatusBoard, loop, node: str):
        self.delta = stream_class is DeltaStream
        self.outbox: list = []
        self.wanted: dict[str, set[str]] = {}
        self.stream = stream_class(cache, board, peer="bench", emit=self.outbox.append, loop=loop,
                                   waker=_NoWaker(), stage_timeout=60)
        self.stream.receive(self.request(CLUSTER, node=base_pb2.Node(id=node)))
        self.stream.receive(self.request(LISTENER))
        self.answer()

    def request(self, type_url: str, nonce: str = "", version: str = "", added=(), node=None):
        if self.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(type_url=type_url, response_nonce=nonce,
                                                          resource_names_subscribe=sorted(added))
        else:
            request = discovery_pb2.DiscoveryRequest(type_url=type_url, response_nonce=nonce, version_info=version,
                                                     resource_names=sorted(self.wanted.get(type_url, ())))
        if node is not None:
            request.node.CopyFrom(node)
        return request

    def answer(self) -> None:
        while self.outbox:
            response = self.outbox.pop(0)
            type_url = response.type_url
            self.stream.receive(self.request(type_url, response.nonce, "" if self.delta else response.version_info))
            if type_url not in (CLUSTER, LISTENER):
                continue
            dependent = ENDPOINT if type_url == CLUSTER else ROUTE
            names = set()
            for resource in response.resources:
                message = types.message_class(type_url).FromString(
                    resource.resource.value if self.delta else resource.value)
                names |= {eds_name(message)} if type_url == CLUSTER else set(rds_names(message))
            new = names - self.wanted.get(dependent, set())
            if new:
                self.wanted[dependent] = self.wanted.get(dependent, set()) | names
                self.stream.receive(self.request(dependent, added=new))


def measure(delta: bool, streams: int, changes: int) -> tuple[float, float]:
    """(Python calls, CPU microseconds) per stream and change."""
    loop = asyncio.new_event_loop()
    cache, board = SnapshotCache(), StatusBoard()
    for i in range(streams):
        cache.set_snapshot(f"n{i}", snapshot(0))
    clients = [Client(DeltaStream if delta else SotwStream, cache, board, loop, f"n{i}") for i in range(streams)]
    snapshots = [snapshot(n) for n in range(1, changes + 1)]
    profile = cProfile.Profile()
    started = time.process_time()
    profile.enable()
    for new in snapshots:
        for i, client in enumerate(clients):
            cache.set_snapshot(f"n{i}", new)
            client.stream._refresh()
            client.answer()
    profile.disable()
    cpu = time.process_time() - started
    if not all(c.stream.synced_version == snapshots[-1].version for c in clients):
        raise SystemExit("the streams did not all reach the last snapshot")
    loop.close()
    return pstats.Stats(profile).total_calls / (streams * changes), cpu / (streams * changes) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--changes", type=int, default=20)
    options = parser.parse_args()
    print(f"meshlab.xds from {Path(types.__file__).parent}; {options.streams} streams x {options.changes} changes")
    for delta in (False, True):
        calls, cpu = measure(delta, options.streams, options.changes)
        print(f"{'delta' if delta else 'state of the world':<20} {calls:8.0f} Python calls, "
              f"{cpu:6.0f} us CPU (with the profiler on) per stream and change")


if __name__ == "__main__":
    main()
