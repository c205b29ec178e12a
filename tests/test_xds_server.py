"""The ADS server against simulated proxies (meshlab.xds.client): both protocols,
make-before-break order, NACKs, no push for an identical snapshot, many streams on
one thread, the admin view. Real Envoy is in test_xds_envoy.py."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.config.endpoint.v3 import endpoint_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2

from xds_support import run

from meshlab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, SnapshotCache, sample, serve_in_thread
from meshlab.xds.client import AdsClient
from meshlab.xds.files import watch_file

PROTOCOLS = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])


def mesh(cluster: str, port: int = 8080, *, version: str | None = None) -> Snapshot:
    return Snapshot(sample.mesh(listener_port=10000, routes={"/": cluster}, endpoints={cluster: [("127.0.0.1", port, 1)]}),
                    version=version)


async def until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {predicate}")
        await asyncio.sleep(0.005)


@PROTOCOLS
def test_a_proxy_receives_everything_and_follows_updates(delta):
    async def scenario(server, cache, connect):
        first = mesh("a")
        cache.set_snapshot("n1", first)
        client = AdsClient("n1", delta=delta)
        connect(client)
        await until(lambda: server.board.synced(first.version, streams=1))
        assert {t: set(r) for t, r in client.resources.items()} == \
               {LISTENER: {"ingress"}, ROUTE: {"routes"}, CLUSTER: {"a"}, ENDPOINT: {"a"}}
        second = mesh("b", 9090)
        assert cache.set_snapshot("n1", second)
        await until(lambda: server.board.synced(second.version, streams=1))
        assert set(client.resources[CLUSTER]) == {"b"} and set(client.resources[ENDPOINT]) >= {"b"}

    run(scenario)


@PROTOCOLS
def test_make_before_break(delta):
    """Moving a route from cluster a to b: b and its endpoints first, then the route,
    and a is removed last."""

    async def scenario(server, cache, connect):
        first, second = mesh("a"), mesh("b", 9090)
        cache.set_snapshot("n1", first)
        client = AdsClient("n1", delta=delta, record=True)
        connect(client)
        await until(lambda: server.board.synced(first.version, streams=1))
        start = len(client.history)
        cache.set_snapshot("n1", second)
        await until(lambda: server.board.synced(second.version, streams=1))
        log = client.history[start:]

        def first_index(condition):
            return next(i for i, entry in enumerate(log) if condition(*entry))

        b_cluster = first_index(lambda t, sent, removed: t == CLUSTER and "b" in sent)
        b_endpoints = first_index(lambda t, sent, removed: t == ENDPOINT and "b" in sent)
        route = first_index(lambda t, sent, removed: t == ROUTE)
        if delta:
            a_gone = first_index(lambda t, sent, removed: t == CLUSTER and "a" in removed)
        else:
            a_gone = first_index(lambda t, sent, removed: t == CLUSTER and "a" not in sent)
            assert "a" in log[b_cluster][1], "the first cluster response keeps a while routes still use it"
        assert b_cluster < b_endpoints < route < a_gone, log

    run(scenario)


@PROTOCOLS
def test_a_nack_is_kept_with_its_message_and_stops_the_update(delta, caplog):
    def reject(type_url, response):
        if type_url != ENDPOINT:
            return None
        bodies = [r.resource.value if delta else r.value for r in response.resources]
        names = {endpoint_pb2.ClusterLoadAssignment.FromString(body).cluster_name for body in bodies}
        return "endpoint rejected: port out of range" if "bad" in names else None

    async def scenario(server, cache, connect):
        good = mesh("a")
        cache.set_snapshot("n1", good)
        client = AdsClient("n1", delta=delta, reject=reject)
        connect(client)
        await until(lambda: server.board.synced(good.version, streams=1))
        routes_before = dict(client.resources[ROUTE])
        cache.set_snapshot("n1", mesh("bad", 9090))
        await until(lambda: server.board.last_nack("n1") is not None)
        nack = server.board.last_nack("n1")
        assert nack.type_url == ENDPOINT and nack.message == "endpoint rejected: port out of range"
        assert nack.kept_version == (None if delta else good.version)
        await asyncio.sleep(0.1)
        stream = server.board.streams("n1")[0]
        assert not stream.in_sync and stream.synced_version == good.version
        assert client.resources[ROUTE] == routes_before, "routes must wait for accepted endpoints"
        fixed = mesh("c", 9091)
        cache.set_snapshot("n1", fixed)
        await until(lambda: server.board.synced(fixed.version, streams=1))

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario)
    assert "n1 rejected EDS" in caplog.text and "port out of range" in caplog.text


@PROTOCOLS
def test_an_identical_snapshot_pushes_nothing(delta):
    async def scenario(server, cache, connect):
        cache.set_snapshot("n1", mesh("a"))
        client = AdsClient("n1", delta=delta)
        connect(client)
        await until(lambda: server.board.synced(mesh("a").version, streams=1))
        responses = client.responses
        assert not cache.set_snapshot("n1", mesh("a"))  # built again: same content, same version
        await asyncio.sleep(0.2)
        assert client.responses == responses

    run(scenario)


def test_same_version_other_content_is_not_pushed_and_says_why(caplog):
    cache = SnapshotCache()
    assert cache.set_snapshot("n1", mesh("a", version="v1"))
    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        assert not cache.set_snapshot("n1", mesh("b", version="v1"))
    assert "has the version 'v1' of the previous one but other content" in caplog.text


def test_setting_a_snapshot_wakes_only_the_streams_behind():
    class Watcher:
        def __init__(self, version):
            self.version, self.woken = version, []

        def behind(self, version):
            return self.version != version

        def notify(self, snapshot):
            self.woken.append(snapshot.version)

    cache = SnapshotCache()
    snapshot = mesh("a")
    current, behind, other_node = Watcher(snapshot.version), Watcher("old"), Watcher("old")
    cache.watch("n1", current)
    cache.watch("n1", behind)
    cache.watch("n2", other_node)
    cache.set_snapshot("n1", snapshot)
    assert (current.woken, behind.woken, other_node.woken) == ([], [snapshot.version], [])
    cache.unwatch("n1", behind)
    cache.set_snapshot("n1", mesh("b"))
    assert behind.woken == [snapshot.version]


def test_a_thousand_streams_need_no_threads():
    async def scenario(server, cache, connect):
        threads = threading.active_count()
        snapshot = mesh("a")
        cache.set_snapshot("n", snapshot)
        clients = [AdsClient("n", delta=bool(i % 2)) for i in range(1000)]
        connect(*clients)
        await until(lambda: server.board.synced(snapshot.version, streams=1000), timeout=60)
        update = mesh("b", 9090)
        cache.set_snapshot("n", update)
        await until(lambda: server.board.synced(update.version, streams=1000), timeout=60)
        assert threading.active_count() <= threads + 10

    run(scenario)


def test_a_node_without_snapshot_waits_for_one():
    async def scenario(server, cache, connect):
        client = AdsClient("late")
        connect(client)
        await until(lambda: server.board.streams("late"))
        await asyncio.sleep(0.1)
        assert client.responses == 0
        snapshot = mesh("a")
        cache.set_snapshot("late", snapshot)
        await until(lambda: server.board.synced(snapshot.version, streams=1))

    run(scenario)


def test_a_stage_that_waits_for_nothing_moves_on(caplog):
    """A proxy that never asks for the endpoints its clusters name still gets listeners
    and routes, after the stage timeout."""

    async def scenario(server, cache, connect):
        cache.set_snapshot("n1", mesh("a"))
        client = AdsClient("n1", follow=False)
        connect(client)
        await until(lambda: LISTENER in client.resources, timeout=3)

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario, stage_timeout=0.2)
    assert "not complete after 0.2 s" in caplog.text and "EDS" in caplog.text


def test_a_request_without_node_is_refused():
    async def scenario(server, cache, connect):
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)

            async def requests():
                yield discovery_pb2.DiscoveryRequest(type_url=CLUSTER)

            with pytest.raises(grpc.aio.AioRpcError) as error:
                async for _ in stub.StreamAggregatedResources(requests()):
                    pass
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "node" in error.value.details()

    run(scenario)


def test_a_busy_port_is_an_error_that_says_so():
    with serve_in_thread(SnapshotCache()) as first:
        with pytest.raises(Exception, match=f"cannot listen on 127.0.0.1:{first.port}"):
            serve_in_thread(SnapshotCache(), port=first.port)


def test_the_admin_view():
    cache = SnapshotCache()
    cache.set_snapshot("n1", mesh("a"))
    with serve_in_thread(cache, admin_port=0) as running:
        base = f"http://127.0.0.1:{running.server.admin_port}"
        status = httpx.get(base + "/status").json()
        assert status["nodes"]["n1"]["snapshot"]["version"] == mesh("a").version
        assert set(status["nodes"]["n1"]["snapshot"]["resources"]["CDS"]) == {"a"}
        assert status["nodes"]["n1"]["streams"] == [] and status["nodes"]["n1"]["last_nack"] is None
        document = httpx.get(base + "/snapshot", params={"node": "n1"}).json()
        assert document["resources"]["CDS"][0]["name"] == "a"
        assert document["resources"]["LDS"][0]["filter_chains"][0]["filters"][0]["typed_config"]["rds"][
            "route_config_name"] == "routes"
        assert httpx.get(base + "/snapshot", params={"node": "nobody"}).status_code == 404
        assert httpx.get(base + "/nothing").status_code == 404
        assert "/status" in httpx.get(base + "/").json()["endpoints"]


def test_watch_file_reports_changes_not_saves(tmp_path: Path):
    path = tmp_path / "intent.yaml"

    async def scenario():
        seen = []

        async def follow():
            async for text in watch_file(path, interval=0.01):
                seen.append(text)

        task = asyncio.create_task(follow())
        await asyncio.sleep(0.05)           # missing: nothing yet
        path.write_text("a: 1\n")
        await until(lambda: len(seen) == 1)
        path.write_text("a: 1\n")           # saved again, unchanged
        await asyncio.sleep(0.05)
        path.write_text("a: 2\n")
        await until(lambda: len(seen) == 2)
        task.cancel()
        return seen

    assert asyncio.run(scenario()) == ["a: 1\n", "a: 2\n"]


def test_waking_many_streams_is_one_wake_up_of_the_loop():
    from meshlab.xds.stream import Waker

    class Loop:
        def __init__(self):
            self.scheduled = []

        def call_soon_threadsafe(self, callback):
            self.scheduled.append(callback)

    class Stream:
        def __init__(self, number):
            self.id, self.refreshed = number, 0

        def _refresh(self):
            self.refreshed += 1

    loop = Loop()
    waker = Waker(loop)
    streams = [Stream(i) for i in range(1000)]
    for stream in streams + streams[:10]:
        waker.wake(stream)
    assert len(loop.scheduled) == 1
    loop.scheduled.pop()()
    assert [s.refreshed for s in streams] == [1] * 1000
    waker.wake(streams[0])
    assert len(loop.scheduled) == 1
