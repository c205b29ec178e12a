"""ADS clients for tests and benchmarks: `AdsStream`, one stream's requests and
responses (either protocol), and `AdsClient`, which subscribes the way Envoy does.

AdsClient asks for all clusters and all listeners, then for the endpoints of the EDS clusters
it received and the route configurations its listeners name; it acknowledges every
response (after asking for new names, as Envoy does) unless REJECT returns an error
message for it, in which case it NACKs. It applies nothing: a thousand of them fit in
one process.

    client = AdsClient("node-1", delta=False)
    task = asyncio.create_task(client.run(channel))
"""

from __future__ import annotations

import asyncio
from functools import lru_cache
from typing import AsyncIterator, Callable

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from google.protobuf.message import Message
from google.rpc import status_pb2

from meshlab.xds import types
from meshlab.xds.snapshot import eds_name, rds_names

Reject = Callable[[str, Message], "str | None"]
_DEPENDENT = {types.CLUSTER: types.ENDPOINT, types.LISTENER: types.ROUTE}


@lru_cache(maxsize=4096)
def _name(type_url: str, body: bytes) -> str:
    return types.name_of(types.message_class(type_url).FromString(body))


@lru_cache(maxsize=4096)
def _references(type_url: str, body: bytes) -> tuple[str, ...]:
    """The names a cluster (EDS) or listener (RDS) resource asks for; parsed once."""
    message = types.message_class(type_url).FromString(body)
    if type_url == types.CLUSTER:
        name = eds_name(message)
        return (name,) if name else ()
    return tuple(rds_names(message))


class AdsStream:
    """The client side of one ADS stream, state of the world or DELTA: requests queued
    with `send` go out in order (the first one carrying the node), and `run` hands every
    response to `_on_response`, which a subclass writes. It keeps what a request must
    echo: the last nonce per type, and (state of the world) the accepted version."""

    def __init__(self, node_id: str, *, delta: bool, cluster: str = "meshlab"):
        self.node = base_pb2.Node(id=node_id, cluster=cluster)
        self.delta = delta
        self.version: dict[str, str] = {}          # accepted version per type (state of the world)
        self.nonce: dict[str, str] = {}
        self._outbox: asyncio.Queue = asyncio.Queue()
        self._node_sent = False

    async def run(self, channel: grpc.aio.Channel) -> None:
        """Subscribe and answer until the stream ends (or the task is cancelled)."""
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        method = stub.DeltaAggregatedResources if self.delta else stub.StreamAggregatedResources
        self._opening()
        call = method(self._requests())
        try:
            async for response in call:
                self.nonce[response.type_url] = response.nonce
                self._on_response(response)
        finally:
            call.cancel()

    def send(self, type_url: str, names: set[str] = frozenset(), *, error: str | None = None,
             added: set[str] = frozenset(), removed: set[str] = frozenset()) -> None:
        """Queue a request for TYPE_URL: in state of the world for all of NAMES (none: a
        wildcard), in delta for the change ADDED / REMOVED; with ERROR, a NACK."""
        if self.delta:
            request = discovery_pb2.DeltaDiscoveryRequest(
                type_url=type_url, response_nonce=self.nonce.get(type_url, ""),
                resource_names_subscribe=sorted(added), resource_names_unsubscribe=sorted(removed))
        else:
            request = discovery_pb2.DiscoveryRequest(
                type_url=type_url, version_info=self.version.get(type_url, ""),
                response_nonce=self.nonce.get(type_url, ""), resource_names=sorted(names))
        if error is not None:
            request.error_detail.CopyFrom(status_pb2.Status(code=13, message=error))
        if not self._node_sent:
            request.node.CopyFrom(self.node)
            self._node_sent = True
        self._outbox.put_nowait(request)

    def _opening(self) -> None:
        """The first requests, queued as the stream opens (none by default)."""

    def _on_response(self, response: Message) -> None:
        raise NotImplementedError

    async def _requests(self) -> AsyncIterator[Message]:
        while True:
            yield await self._outbox.get()


class AdsClient(AdsStream):
    def __init__(self, node_id: str, *, delta: bool = False, cluster: str = "meshlab", reject: Reject | None = None,
                 follow: bool = True, record: bool = False):
        super().__init__(node_id, delta=delta, cluster=cluster)
        self.reject = reject
        self.follow = follow          # ask for the endpoints and routes that clusters and listeners name
        # With RECORD: (type URL, names sent, names removed) of every response, in order.
        self.history: list[tuple[str, tuple[str, ...], tuple[str, ...]]] | None = [] if record else None
        self.names: dict[str, set[str]] = {types.ENDPOINT: set(), types.ROUTE: set()}
        self.resources: dict[str, dict[str, bytes]] = {}   # what it holds, per type and name
        self.responses = 0
        self.nacks = 0

    def _opening(self) -> None:
        self._request(types.CLUSTER)
        self._request(types.LISTENER)

    def _request(self, type_url: str, *, error: str | None = None, added: set[str] = frozenset(),
                 removed: set[str] = frozenset()) -> None:
        self.send(type_url, self.names.get(type_url, set()), error=error, added=added, removed=removed)

    def _on_response(self, response: Message) -> None:
        self.responses += 1
        type_url = response.type_url
        if self.history is not None:
            removed = tuple(response.removed_resources) if self.delta else ()
            sent = (tuple(r.name for r in response.resources) if self.delta else
                    tuple(_name(type_url, r.value) for r in response.resources))
            self.history.append((type_url, sent, removed))
        error = self.reject(type_url, response) if self.reject else None
        if error is not None:
            self.nacks += 1
            self._request(type_url, error=error)
            return
        held = self.resources.setdefault(type_url, {})
        if self.delta:
            for resource in response.resources:
                held[resource.name] = resource.resource.value
            for name in response.removed_resources:
                held.pop(name, None)
        else:
            if type_url in types.WILDCARD:
                held.clear()
            for resource in response.resources:
                held[_name(type_url, resource.value)] = resource.value
            self.version[type_url] = response.version_info
        self._request(type_url)  # the ACK
        dependent = _DEPENDENT.get(type_url)
        if dependent is not None and self.follow:
            wanted = {name for body in held.values() for name in _references(type_url, body)}
            added, removed = wanted - self.names[dependent], self.names[dependent] - wanted
            if added or removed:
                self.names[dependent] = wanted
                self._request(dependent, added=added, removed=removed)
