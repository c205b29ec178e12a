"""meshlab.xds: build an xDS control plane in Python (on grpcio's asyncio API and the
Envoy API messages of `xds-protos`).

    from meshlab.xds import Snapshot, SnapshotCache, XdsServer

    cache = SnapshotCache()
    server = XdsServer(cache, port=18000, admin_port=18001)
    await server.start()
    cache.set_snapshot("envoy-1", Snapshot([listener, route_config, cluster, endpoints]))

The parts, one module each:

    snapshot     Snapshot: an immutable, versioned, checkable set of resources
    cache        SnapshotCache: a snapshot per node; setting one wakes its streams
    server       XdsServer: ADS, state of the world and delta; serve_in_thread
    stream       what to push to one proxy, when (make-before-break stages)
    sotw, delta  the two wire protocols
    bookkeeping  per stream and type: subscriptions, ACK / NACK by nonce
    status       connected proxies, acknowledged versions, last NACK per node
    admin        the HTTP JSON admin view (`meshlab xds status` reads it)
    files        watch a file (an intent) for changes
    types        type URLs and the order types must reach a proxy in
    client       a minimal ADS client that behaves like Envoy (tests, benchmarks)
    proxy        an Envoy whose configuration comes from an xDS server
    sample       a small, complete set of resources (tests, benchmarks, demos)
"""

from meshlab.xds.cache import SnapshotCache
from meshlab.xds.files import watch_file
from meshlab.xds.server import ServerThread, XdsServer, serve_in_thread
from meshlab.xds.snapshot import Resource, Snapshot
from meshlab.xds.types import CLUSTER, ENDPOINT, LISTENER, ROUTE, SECRET

__all__ = [
    "CLUSTER", "ENDPOINT", "LISTENER", "ROUTE", "SECRET", "Resource", "ServerThread", "Snapshot",
    "SnapshotCache", "XdsServer", "serve_in_thread", "watch_file",
]
