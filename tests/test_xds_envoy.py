"""The xDS toolkit against real Envoy, in both protocols: a bootstrap with nothing but
`dynamic_resources` gets its listener; updates apply to the running process; a NACK is
captured while traffic stays on the last good config; a restarted control plane is
reconnected to and resynchronized. Ports are ephemeral, every process is stopped."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from typing import Iterator

import httpx
import pytest
from envoy.type.matcher.v3 import regex_pb2

from meshlab.grading import eventually
from meshlab.ports import free_port
from meshlab.runtime import processes
from meshlab.xds import ROUTE, Snapshot, SnapshotCache, sample, serve_in_thread
from meshlab.xds.proxy import DynamicEnvoy

PROTOCOLS = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
NODE = "envoy-under-test"


@pytest.fixture
def backends(tmp_path) -> Iterator[dict[str, int]]:
    """Two backends that answer with their name: {"one": port, "two": port}."""
    ports = {"one": free_port(), "two": free_port()}
    procs = [processes.spawn([sys.executable, "-m", "meshlab.apps.whoami", "--name", name, "--port", str(port)],
                             cwd=tmp_path, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             die_with_parent=True) for name, port in ports.items()]
    try:
        for port in ports.values():
            eventually(lambda port=port: _accepts(port), 10)
        yield ports
    finally:
        for proc in procs:
            processes.terminate_group(proc.pid, proc.pid, popen=proc)


def _accepts(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def served_by(port: int) -> str | None:
    try:
        response = httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
    except httpx.HTTPError:
        return None
    return response.headers.get("x-served-by")


def to(backend: str, ports: dict[str, int], listener_port: int, *, version: str | None = None) -> Snapshot:
    return Snapshot(sample.mesh(listener_port=listener_port, routes={"/": backend},
                                endpoints={backend: [("127.0.0.1", ports[backend], 1)]}), version=version)


@contextlib.contextmanager
def serving_one(backends: dict[str, int], workdir, *, delta: bool):
    """A control plane and an Envoy that sends / to backend one: (cache, control plane,
    Envoy, listener port), once traffic flows."""
    listener_port = free_port()
    cache = SnapshotCache()
    first = to("one", backends, listener_port)
    cache.set_snapshot(NODE, first)
    with serve_in_thread(cache) as control_plane, \
            DynamicEnvoy(NODE, xds_port=control_plane.port, workdir=workdir, delta=delta) as envoy:
        assert control_plane.board.wait_for(lambda b: b.synced(first.version, streams=1), 10)
        assert eventually(lambda: served_by(listener_port) == "one", 5)
        yield cache, control_plane, envoy, listener_port


@PROTOCOLS
def test_listener_appears_and_an_update_applies_in_place(delta, backends, tmp_path):
    with serving_one(backends, tmp_path, delta=delta) as (cache, control_plane, envoy, listener_port):
        dump = envoy.admin.configuration()
        assert dump.static_listeners == [] and list(dump.listeners) == ["ingress"] and dump.warming_listeners == []
        assert dump.listener_at(listener_port, "127.0.0.1")[0] == "ingress"
        assert dump.static_clusters == ["xds"] and list(dump.clusters) == ["one"] and list(dump.route_configs) == ["routes"]

        pid = envoy.pid
        second = to("two", backends, listener_port)
        cache.set_snapshot(NODE, second)
        answers = []
        assert eventually(lambda: answers.append(served_by(listener_port)) or answers[-1] == "two", 5)
        assert set(answers) <= {"one", "two"}, f"a request failed during the update: {answers}"
        assert control_plane.board.wait_for(lambda b: b.synced(second.version, streams=1), 5)
        assert envoy.alive() and envoy.pid == pid
        assert envoy.admin.server_info()["command_line_options"]["restart_epoch"] == 0
        clusters = {c["name"] for c in envoy.admin.clusters()}
        assert clusters == {"xds", "two"}, "the cluster the update dropped is removed"


@PROTOCOLS
def test_a_nack_is_captured_while_traffic_stays_on_the_last_good_config(delta, backends, tmp_path):
    with serving_one(backends, tmp_path, delta=delta) as (cache, control_plane, envoy, listener_port):
        good = cache.snapshot(NODE)
        broken = sample.mesh(listener_port=listener_port, routes={"/": "one"},
                             endpoints={"one": [("127.0.0.1", backends["one"], 1)]})
        route = next(r for r in broken if r.DESCRIPTOR.name == "RouteConfiguration")
        route.virtual_hosts[0].routes[0].match.safe_regex.CopyFrom(regex_pb2.RegexMatcher(regex="(unclosed"))
        bad = Snapshot(broken)
        cache.set_snapshot(NODE, bad)
        assert control_plane.board.wait_for(lambda b: b.last_nack(NODE) is not None, 5)
        nack = control_plane.board.last_nack(NODE)
        assert nack.type_url == ROUTE and "(unclosed" in nack.message and nack.rejected_version == bad.version
        assert nack.kept_version == (None if delta else good.version)
        assert [served_by(listener_port) for _ in range(20)] == ["one"] * 20
        assert envoy.admin.stat("http.ingress.rds.routes.update_rejected") >= 1
        stream = control_plane.board.streams(NODE)[0]
        assert not stream.in_sync and stream.synced_version == good.version


@PROTOCOLS
def test_a_restarted_control_plane_is_reconnected_to_and_resynchronized(delta, backends, tmp_path):
    listener_port, xds_port = free_port(), free_port()
    first, second = to("one", backends, listener_port), to("two", backends, listener_port)
    cache = SnapshotCache()
    cache.set_snapshot(NODE, first)
    control_plane = serve_in_thread(cache, port=xds_port)
    try:
        with DynamicEnvoy(NODE, xds_port=xds_port, workdir=tmp_path, delta=delta) as envoy:
            assert control_plane.board.wait_for(lambda b: b.synced(first.version, streams=1), 10)
            assert eventually(lambda: served_by(listener_port) == "one", 5)
            control_plane.stop()
            assert eventually(lambda: envoy.admin.stat("control_plane.connected_state") == 0, 5)
            assert [served_by(listener_port) for _ in range(10)] == ["one"] * 10, "Envoy serves on its own"

            # A new control plane process, with a new intent: Envoy reconnects and follows.
            cache = SnapshotCache()
            cache.set_snapshot(NODE, second)
            control_plane = serve_in_thread(cache, port=xds_port)
            assert control_plane.board.wait_for(lambda b: b.synced(second.version, streams=1), 10)
            assert eventually(lambda: served_by(listener_port) == "two", 5)
            assert envoy.admin.stat("control_plane.connected_state") == 1

            # Restarted again with the same snapshot: Envoy says what it has; the
            # listener is not sent again.
            listener_updates = envoy.admin.stat("listener_manager.lds.update_success")
            control_plane.stop()
            cache = SnapshotCache()
            cache.set_snapshot(NODE, to("two", backends, listener_port))
            control_plane = serve_in_thread(cache, port=xds_port)
            assert control_plane.board.wait_for(lambda b: b.synced(second.version, streams=1), 10)
            assert envoy.admin.stat("listener_manager.lds.update_success") == listener_updates
            assert served_by(listener_port) == "two"
    finally:
        control_plane.stop()


def test_a_chosen_version_is_not_trusted_across_restarts(backends, tmp_path):
    """A control plane that labels its snapshots itself ("v1" for ever, or a counter
    that restarts at 1) may give a new content an old label. After a restart, Envoy
    claims that label; the server cannot know it named other content, so it sends the
    snapshot again rather than trust the claim."""
    listener_port, xds_port = free_port(), free_port()
    cache = SnapshotCache()
    cache.set_snapshot(NODE, to("one", backends, listener_port, version="v1"))
    control_plane = serve_in_thread(cache, port=xds_port)
    try:
        with DynamicEnvoy(NODE, xds_port=xds_port, workdir=tmp_path) as envoy:
            assert control_plane.board.wait_for(lambda b: b.synced("v1", streams=1), 10)
            assert eventually(lambda: served_by(listener_port) == "one", 5)
            control_plane.stop()
            assert eventually(lambda: envoy.admin.stat("control_plane.connected_state") == 0, 5)
            cache = SnapshotCache()
            cache.set_snapshot(NODE, to("two", backends, listener_port, version="v1"))
            control_plane = serve_in_thread(cache, port=xds_port)
            assert control_plane.board.wait_for(lambda b: b.synced("v1", streams=1), 10)
            assert eventually(lambda: served_by(listener_port) == "two", 5)
    finally:
        control_plane.stop()
