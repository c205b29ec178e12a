"""meshlab.xds serving a real proxyless client: grpcio's own xDS support (a channel to
`xds:///svc`), which asks for its listener by name, then for the route configuration,
cluster and endpoints it leads to, over state of the world. What it sees is what its
RPCs do, and the two backends answer with their name.

gRPC reads its bootstrap (GRPC_XDS_BOOTSTRAP) once per process and keeps one xDS client,
so every test of this module shares one server and one node."""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent import futures
from typing import Iterator

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.config.endpoint.v3 import endpoint_components_pb2, endpoint_pb2
from envoy.config.listener.v3 import api_listener_pb2, listener_pb2
from envoy.extensions.filters.http.router.v3 import router_pb2
from envoy.extensions.filters.network.http_connection_manager.v3 import http_connection_manager_pb2 as hcm
from google.protobuf import wrappers_pb2

from meshlab.xds import Snapshot, SnapshotCache, sample, serve_in_thread

NODE = "grpc-client"
SERVICE = "svc"
STAGE_TIMEOUT = 3.0


def api_listener(name: str, route_name: str) -> listener_pb2.Listener:
    """A listener as gRPC asks for it: no address, an HTTP connection manager in `api_listener`."""
    manager = hcm.HttpConnectionManager(
        rds=hcm.Rds(route_config_name=route_name, config_source=sample.ads()),
        http_filters=[hcm.HttpFilter(name="router", typed_config=sample.packed(router_pb2.Router()))])
    return listener_pb2.Listener(name=name, api_listener=api_listener_pb2.ApiListener(
        api_listener=sample.packed(manager)))


def load_assignment(cluster: str, port: int) -> endpoint_pb2.ClusterLoadAssignment:
    """gRPC ignores a locality without a weight."""
    assignment = sample.load_assignment(cluster, [("127.0.0.1", port, 1)])
    for locality in assignment.endpoints:
        locality.locality.CopyFrom(base_pb2.Locality(zone="local"))
        locality.load_balancing_weight.CopyFrom(wrappers_pb2.UInt32Value(value=1))
    return assignment


def service(cluster: str, backends: dict[str, int]) -> Snapshot:
    """Listener `svc` -> routes -> CLUSTER; every backend is a cluster with its endpoint."""
    resources = [api_listener(SERVICE, "svc-routes"), sample.route_configuration("svc-routes", {"/": cluster})]
    for name, port in backends.items():
        resources += [sample.eds_cluster(name), load_assignment(name, port)]
    return Snapshot(resources)


def backend(name: str) -> tuple[grpc.Server, int]:
    def call(request: bytes, context) -> bytes:
        return name.encode()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "probe.Probe", {"Call": grpc.unary_unary_rpc_method_handler(call)})])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def plane(tmp_path_factory) -> Iterator[tuple]:
    servers = {name: backend(name) for name in ("one", "two")}
    cache = SnapshotCache()
    bootstrap = tmp_path_factory.mktemp("grpc-xds") / "bootstrap.json"
    before = os.environ.get("GRPC_XDS_BOOTSTRAP")
    with serve_in_thread(cache, stage_timeout=STAGE_TIMEOUT) as running:
        bootstrap.write_text(json.dumps({
            "xds_servers": [{"server_uri": f"127.0.0.1:{running.port}", "channel_creds": [{"type": "insecure"}],
                             "server_features": ["xds_v3"]}],
            "node": {"id": NODE, "cluster": "meshlab"}}))
        os.environ["GRPC_XDS_BOOTSTRAP"] = str(bootstrap)
        try:
            yield running, cache, {name: port for name, (_, port) in servers.items()}
        finally:
            if before is None:
                os.environ.pop("GRPC_XDS_BOOTSTRAP", None)
            else:
                os.environ["GRPC_XDS_BOOTSTRAP"] = before
            for server, _ in servers.values():
                server.stop(0)


def answer(channel: grpc.Channel) -> str:
    """The backend's name, or the status gRPC gives instead."""
    try:
        return channel.unary_unary("/probe.Probe/Call")(b"", timeout=5).decode()
    except grpc.RpcError as error:
        return f"{error.code().name}: {error.details()}"


def until(predicate, timeout: float) -> float:
    """Seconds until PREDICATE() held; fails after TIMEOUT."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not true within {timeout} s")
        time.sleep(0.02)
    return time.monotonic() - started


def test_grpc_follows_its_listener_and_a_route_to_a_new_cluster_waits_for_no_stage_timeout(plane, caplog):
    """Resource warming with a client that asks by name: gRPC asks for cluster `two`
    only once it has the route that names it, so the route must not wait for it."""
    running, cache, ports = plane
    first = service("one", ports)
    cache.set_snapshot(NODE, first)
    with caplog.at_level(logging.WARNING, logger="meshlab.xds"), grpc.insecure_channel(f"xds:///{SERVICE}") as channel:
        until(lambda: answer(channel) == "one", 10)
        assert running.board.wait_for(lambda b: b.synced(first.version, node=NODE), 2 * STAGE_TIMEOUT)
        cache.set_snapshot(NODE, service("two", ports))
        until(lambda: answer(channel) == "two", 2 * STAGE_TIMEOUT)
        assert running.board.wait_for(lambda b: b.synced(service("two", ports).version, node=NODE), 2 * STAGE_TIMEOUT)
    assert "not complete after" not in caplog.text


def test_grpc_learns_that_its_listener_was_deleted(plane):
    """Knowing when a requested resource does not exist: a listener response carries
    every requested listener that exists, so one without `svc` tells gRPC it is gone,
    and its RPCs fail instead of going to the old backend."""
    running, cache, ports = plane
    cache.set_snapshot(NODE, service("one", ports))
    with grpc.insecure_channel(f"xds:///{SERVICE}") as channel:
        until(lambda: answer(channel) == "one", 10)
        without = Snapshot([r for r in service("one", ports) if r.name not in (SERVICE, "svc-routes")])
        cache.set_snapshot(NODE, without)
        until(lambda: "does not exist" in answer(channel), 2 * STAGE_TIMEOUT)
        assert "LDS resource svc: does not exist" in answer(channel)
        assert running.board.wait_for(lambda b: b.synced(without.version, node=NODE), 2 * STAGE_TIMEOUT)
        cache.set_snapshot(NODE, service("one", ports))  # and back: it asked for it all along
        until(lambda: answer(channel) == "one", 2 * STAGE_TIMEOUT)
