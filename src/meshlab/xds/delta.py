"""The incremental protocol (`api_type: DELTA_GRPC`): requests add and remove names
from a subscription, responses carry only what changed (and the names removed).

Replies to a response carry its nonce and, for a NACK, an error, but no version. A
reconnecting proxy says which version of each resource it has
(`initial_resource_versions`), so only what differs is sent again.

A name the proxy asked for that does not exist, or no longer does, is named in
`removed_resources` (once: until it exists again), so the proxy need not wait for a
timeout to find out.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from meshlab.xds import types
from meshlab.xds.bookkeeping import TypeState
from meshlab.xds.stream import Plan, Stream, View


class DeltaStream(Stream):
    protocol = "delta"

    def _subscribe(self, request: Message, state: TypeState, *, first: bool) -> None:
        added = set(request.resource_names_subscribe)
        removed = set(request.resource_names_unsubscribe)
        wildcard = state.wildcard
        if first and not added and request.type_url in types.WILDCARD:
            wildcard = True  # the legacy way to ask for everything: an empty first request
        if "*" in added:
            wildcard = True
        if "*" in removed:
            wildcard = False
        state.subscribe(added - {"*"}, wildcard=wildcard, replace=False)
        state.unsubscribe(removed - {"*"})
        if first and request.initial_resource_versions:
            # A reconnect: the proxy says what it has; only what differs is sent again.
            state.adopt(None, {n: v for n, v in request.initial_resource_versions.items() if state.in_scope(n)})
            state.answered = True

    def _kept_version(self, request: Message) -> str | None:
        return None  # delta replies carry no version

    def _plan(self, state: TypeState, view: View) -> Plan | None:
        acked = state.acked or {}
        updates = {n: r for n, r in view.resources.items() if state.in_scope(n) and acked.get(n) != r.version}
        removals = frozenset(n for n in acked if n not in view.resources and state.in_scope(n)) \
            if view.allow_removal else frozenset()
        # Names asked for that do not exist, and the proxy has not been told so yet.
        if state.names:
            unknown = {n for n in state.names if n not in view.resources and n not in acked and n not in state.absent}
            removals |= unknown
        if updates or removals:
            return Plan(view.label, updates, removals)
        if state.wildcard and not state.answered:
            return Plan(view.label, {})  # an empty first answer: the proxy stops waiting for this type
        return None

    def _encode(self, type_url: str, plan: Plan, nonce: str) -> Message:
        return discovery_pb2.DeltaDiscoveryResponse(
            system_version_info=plan.label, type_url=type_url, nonce=nonce,
            resources=[discovery_pb2.Resource(name=name, version=r.version, resource=r.packed)
                       for name, r in plan.updates.items()],
            removed_resources=sorted(plan.removals))
