"""The ADS server against a client that asks for its resources by name, as proxyless xDS
clients (gRPC) do: the listeners it is configured with, then the route configurations
they name, the clusters those routes send to, and the endpoints of those clusters.
Envoy asks for listeners and clusters as a wildcard (test_xds_server.py covers that).

Each test names the rule of the xDS protocol document ("xDS REST and gRPC protocol")
it holds the server to, in a paraphrase.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest
import xds_support
from google.protobuf.message import Message

from meshlab.xds import CLUSTER, ENDPOINT, LISTENER, ROUTE, Snapshot, XdsServer, sample, types
from meshlab.xds.client import AdsStream
from meshlab.xds.snapshot import eds_name, rds_names

PROTOCOLS = pytest.mark.parametrize("delta", [False, True], ids=["sotw", "delta"])
STAGE_TIMEOUT = 1.0
STAGE_TIMED_OUT = "not complete after"   # the server's warning when a stage gives up waiting
# SotW: a response for these types carries every requested resource that exists (absent = deleted).
COMPLETE_TYPES = (LISTENER, CLUSTER)


def route_clusters(route_config: Message) -> set[str]:
    names = set()
    for host in route_config.virtual_hosts:
        for route in host.routes:
            if route.route.cluster:
                names.add(route.route.cluster)
            names.update(w.name for w in route.route.weighted_clusters.clusters)
    return names


def references(type_url: str, body: bytes) -> set[str]:
    """What a resource makes the client ask for next (of the type `FOLLOWS[type_url]`)."""
    message = types.message_class(type_url).FromString(body)
    if type_url == LISTENER:
        return set(rds_names(message))
    if type_url == ROUTE:
        return route_clusters(message)
    name = eds_name(message)
    return {name} if name else set()


FOLLOWS = {LISTENER: ROUTE, ROUTE: CLUSTER, CLUSTER: ENDPOINT}


class ByNameClient(AdsStream):
    """An ADS client that never subscribes as a wildcard: it asks for LISTENERS by name
    and (with FOLLOW) for what they reference, type by type, each only once it holds
    the resource that names it. It acknowledges every response and applies the
    protocol's deletion rules to what it holds:

    - state of the world: a listener or cluster it asked for that a response of that
      type leaves out is deleted; routes and endpoints are dropped only when nothing
      it holds names them any more;
    - delta: a name in `removed_resources` is deleted (or does not exist).
    """

    def __init__(self, node_id: str, listeners: set[str] = frozenset(), *, delta: bool, follow: bool = True):
        super().__init__(node_id, delta=delta)
        self.follow = follow
        self.wanted: dict[str, set[str]] = {t: set() for t in (LISTENER, ROUTE, CLUSTER, ENDPOINT)}
        self.held: dict[str, dict[str, bytes]] = {t: {} for t in self.wanted}
        self.history: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = []  # (type, sent, removed)
        self.absent: dict[str, set[str]] = {t: set() for t in self.wanted}      # delta: told "does not exist"
        self._asked: set[str] = set()   # types it has sent a request for
        self._changed = asyncio.Event()
        if listeners:
            self.subscribe(LISTENER, set(listeners))

    # -- subscribing -----------------------------------------------------------

    def subscribe(self, type_url: str, names: set[str]) -> None:
        """Ask for exactly NAMES of TYPE_URL from now on (an empty set: for nothing)."""
        old, self.wanted[type_url] = self.wanted[type_url], set(names)
        if names == old and type_url in self._asked:
            return
        if not names and type_url not in self._asked:
            return  # an empty first request would be a wildcard subscription
        self._send(type_url, added=names - old, removed=old - names)
        forgotten = {name for name in old - names if self.held[type_url].pop(name, None) is not None}
        if forgotten:  # what it no longer asks for, it forgets, and what only that named
            self._follow(type_url)

    def _follow(self, type_url: str) -> None:
        follows = FOLLOWS.get(type_url)
        if self.follow and follows is not None:
            self.subscribe(follows, set().union(*(references(type_url, body) for body in self.held[type_url].values())))

    def _send(self, type_url: str, *, added: set[str] = frozenset(), removed: set[str] = frozenset()) -> None:
        self._asked.add(type_url)
        self.send(type_url, self.wanted[type_url], added=added, removed=removed)

    # -- running ---------------------------------------------------------------

    def _on_response(self, response: Message) -> None:
        type_url = response.type_url
        held = self.held[type_url]
        if self.delta:
            sent = {r.name: r.resource.value for r in response.resources}
            removed = set(response.removed_resources)
            for name in removed:
                held.pop(name, None)
            self.absent[type_url] |= removed
            self.absent[type_url] -= sent.keys()
        else:
            sent = {types.name_of(types.message_class(type_url).FromString(r.value)): r.value
                    for r in response.resources}
            removed = set()
            if type_url in COMPLETE_TYPES:
                removed = {name for name in held if name in self.wanted[type_url]} - sent.keys()
                for name in removed:
                    held.pop(name)
            self.version[type_url] = response.version_info
        # A client ignores what it did not ask for.
        held.update({n: body for n, body in sent.items() if n in self.wanted[type_url]})
        self.history.append((type_url, tuple(sorted(sent)), tuple(sorted(removed))))
        self._send(type_url)  # the ACK
        self._follow(type_url)
        self._changed.set()

    async def until(self, predicate, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"not true within {timeout} s; responses: {self.history}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            except asyncio.TimeoutError:
                pass

    def routes_to(self) -> set[str]:
        """The clusters the routes it holds send traffic to."""
        return set().union(*(references(ROUTE, body) for body in self.held[ROUTE].values()))


def mesh(cluster: str, *, extra_listener: bool = False) -> Snapshot:
    """Listener `ingress` -> routes `routes` -> / to CLUSTER (EDS). EXTRA_LISTENER adds
    listener `other` -> `other-routes` -> cluster `c`, as in a snapshot shared by proxies
    that do not all ask for the same listeners."""
    resources = sample.mesh(listener_port=10000, routes={"/": cluster},
                            endpoints={cluster: [("127.0.0.1", 8080, 1)]}, bind=False)
    if extra_listener:
        resources += [sample.http_listener("other", 10001, "other-routes", bind=False),
                      sample.route_configuration("other-routes", {"/": "c"}),
                      sample.eds_cluster("c"), sample.load_assignment("c", [("127.0.0.1", 8081, 1)])]
    return Snapshot(resources)


def only(cluster_names: set[str], endpoints: bool = True) -> Snapshot:
    """Nothing but EDS clusters (for a client that asks for clusters by name)."""
    resources = []
    for name in sorted(cluster_names):
        resources.append(sample.eds_cluster(name))
        if endpoints:
            resources.append(sample.load_assignment(name, [("127.0.0.1", 8080, 1)]))
    return Snapshot(resources)


def run(scenario, **server_options):
    """xds_support.run, with the short stage timeout these tests wait out."""
    server_options.setdefault("stage_timeout", STAGE_TIMEOUT)
    xds_support.run(scenario, **server_options)


async def synced(server: XdsServer, version: str, timeout: float = 3 * STAGE_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not server.board.synced(version, streams=1):
        if time.monotonic() > deadline:
            raise AssertionError(f"the board never reported the client in sync at {version} ({timeout} s): "
                                 f"{server.board.streams()}")
        await asyncio.sleep(0.005)


@PROTOCOLS
def test_the_client_follows_its_listener_by_name(delta, caplog):
    """The client's own listener is its configuration's root: from it, it asks for the
    route configuration, the clusters the routes name, and their endpoints."""

    async def scenario(server, cache, connect):
        first = mesh("a")
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", {"ingress"}, delta=delta)
        connect(client)
        await synced(server, first.version)
        assert {t: set(held) for t, held in client.held.items()} == \
               {LISTENER: {"ingress"}, ROUTE: {"routes"}, CLUSTER: {"a"}, ENDPOINT: {"a"}}

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario)
    assert STAGE_TIMED_OUT not in caplog.text


@PROTOCOLS
def test_a_route_to_a_new_cluster_waits_for_no_stage_timeout(delta, caplog):
    """Resource warming: a cluster is warm once its endpoints arrive, so the endpoints
    of the clusters a client asks for go before the routes that use them. A client that
    asks by name asks for a cluster only after it got the route naming it: the server
    must not wait for that client to ask for the endpoints of clusters it never asked
    for before sending the route."""

    async def scenario(server, cache, connect):
        first, second = mesh("a"), mesh("b")
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", {"ingress"}, delta=delta)
        connect(client)
        await synced(server, first.version)
        cache.set_snapshot("n1", second)
        await client.until(lambda: client.routes_to() == {"b"} and "b" in client.held[ENDPOINT],
                           timeout=3 * STAGE_TIMEOUT)
        await synced(server, second.version)
        assert set(client.held[CLUSTER]) == {"b"}

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario)
    assert STAGE_TIMED_OUT not in caplog.text


@PROTOCOLS
def test_a_client_is_in_sync_when_the_snapshot_holds_more_than_it_asks_for(delta, caplog):
    """Only what a client asks for concerns it: a snapshot shared by several proxies
    holds listeners, routes and clusters this one never asks for. It is in sync once it
    acknowledged what its own listeners and clusters reference, and later listener and
    route pushes do not wait for the rest."""

    async def scenario(server, cache, connect):
        first = mesh("a", extra_listener=True)
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", {"ingress"}, delta=delta)
        connect(client)
        await synced(server, first.version)
        assert set(client.held[LISTENER]) == {"ingress"} and set(client.held[CLUSTER]) == {"a"}
        second = mesh("b", extra_listener=True)
        cache.set_snapshot("n1", second)
        await synced(server, second.version)
        assert client.routes_to() == {"b"} and set(client.held[ENDPOINT]) == {"b"}

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario)
    assert STAGE_TIMED_OUT not in caplog.text


@PROTOCOLS
def test_a_deleted_listener_reaches_the_client_that_asked_for_it(delta, caplog):
    """Knowing when a requested resource does not exist; deleting resources. State of
    the world: a listener response carries every requested listener that exists, so a
    requested one it leaves out is deleted (even when none of them is left). Delta: the
    server names it in `removed_resources`."""

    async def scenario(server, cache, connect):
        first = mesh("a", extra_listener=True)
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", {"ingress"}, delta=delta)
        connect(client)
        await synced(server, first.version)
        responses = len(client.history)
        # `ingress` is gone; the listener left is one this client never asked for.
        second = Snapshot([r for r in first if not (r.type_url == LISTENER and r.name == "ingress")
                           and not (r.type_url == ROUTE and r.name == "routes")])
        cache.set_snapshot("n1", second)
        await client.until(lambda: "ingress" not in client.held[LISTENER])
        assert (LISTENER, (), ("ingress",)) in client.history[responses:]
        await synced(server, second.version)
        # It then asks for no route configuration and no cluster any more.
        assert client.wanted[ROUTE] == client.wanted[CLUSTER] == set()

    with caplog.at_level(logging.WARNING, logger="meshlab.xds"):
        run(scenario)
    assert STAGE_TIMED_OUT not in caplog.text


@PROTOCOLS
def test_a_deleted_cluster_reaches_the_client_that_asked_for_it(delta):
    """The same for clusters, asked for by name: a cluster response without a requested
    cluster deletes it (state of the world); delta names it in `removed_resources`. The
    board reports the client in sync only after it acknowledged the deletion."""

    async def scenario(server, cache, connect):
        first = only({"a", "b"})
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", delta=delta)
        client.subscribe(CLUSTER, {"a"})
        connect(client)
        await synced(server, first.version)
        assert set(client.held[CLUSTER]) == {"a"} and set(client.held[ENDPOINT]) == {"a"}
        second = only({"b"})
        cache.set_snapshot("n1", second)
        await synced(server, second.version)
        assert client.held[CLUSTER] == {}

    run(scenario)


@PROTOCOLS
def test_a_name_that_never_existed_is_answered(delta):
    """Knowing when a requested resource does not exist. Delta: the server says so at
    once, in `removed_resources`. State of the world: a cluster response must carry all
    requested clusters that exist, so the answer is a response without it. When the
    resource appears later, the server must send it (it remembers what was asked)."""

    async def scenario(server, cache, connect):
        cache.set_snapshot("n1", only({"a"}))
        client = ByNameClient("n1", delta=delta)
        client.subscribe(CLUSTER, {"nope"})
        connect(client)
        if delta:
            await client.until(lambda: client.absent[CLUSTER] == {"nope"})
        await client.until(lambda: (CLUSTER, (), ("nope",) if delta else ()) in client.history)
        assert client.held[CLUSTER] == {}
        # Said once: another snapshot still without it tells the client nothing new.
        unrelated = only({"a", "b"})
        cache.set_snapshot("n1", unrelated)
        await synced(server, unrelated.version)
        assert [entry for entry in client.history if entry[0] == CLUSTER] == \
               [(CLUSTER, (), ("nope",) if delta else ())]
        second = only({"a", "nope"})
        cache.set_snapshot("n1", second)
        await synced(server, second.version)
        assert set(client.held[CLUSTER]) == {"nope"} and set(client.held[ENDPOINT]) == {"nope"}
        assert client.absent[CLUSTER] == set()

    run(scenario)


@PROTOCOLS
def test_an_empty_request_after_asking_by_name_unsubscribes(delta):
    """How the client specifies what it wants; unsubscribing. An empty `resource_names`
    means "everything" (a wildcard) only while the client has never asked for a name of
    that type; once it has, an empty list means it wants none of them any more."""

    async def scenario(server, cache, connect):
        first = mesh("a", extra_listener=True)
        cache.set_snapshot("n1", first)
        client = ByNameClient("n1", {"ingress"}, delta=delta, follow=False)
        connect(client)
        await client.until(lambda: "ingress" in client.held[LISTENER])
        responses = len(client.history)
        client.subscribe(LISTENER, set())
        # A request after it, answered in order: a response to the first would come before.
        client.subscribe(CLUSTER, {"a"})
        await client.until(lambda: "a" in client.held[CLUSTER])
        assert [t for t, *_ in client.history[responses:]] == [CLUSTER], client.history[responses:]
        stream = server.status()["nodes"]["n1"]["streams"][0]
        assert stream["types"]["LDS"]["subscribed"] == []
        # Nor does a change of the listeners reach it.
        client.subscribe(ENDPOINT, {"a"})
        second = Snapshot([*mesh("b", extra_listener=True), *only({"a"})])
        cache.set_snapshot("n1", second)
        await synced(server, second.version)
        assert LISTENER not in [t for t, *_ in client.history[responses:]]

    run(scenario)
