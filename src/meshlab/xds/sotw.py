"""The state-of-the-world protocol (`api_type: GRPC`): each request names everything
the proxy wants of a type, each response carries a whole version of it.

For listeners and clusters a response is the complete set (of all of them, or of the
names the proxy asked for): what it leaves out, the proxy deletes, so a requested one
that is gone is answered by a response without it, even an empty one. For routes,
endpoints and secrets, a response carries the requested resources that exist; the proxy
keeps the others it has (it drops them when no listener or cluster names them). A type
whose resources did not change is not sent again when the snapshot's version changes.

An empty `resource_names` asks for all listeners or clusters (a wildcard) only as long
as the proxy has never named one: after that, it asks for none.
"""

from __future__ import annotations

from envoy.service.discovery.v3 import discovery_pb2
from google.protobuf.message import Message

from meshlab.xds import types
from meshlab.xds.bookkeeping import TypeState
from meshlab.xds.stream import Plan, Stream, View


class SotwStream(Stream):
    protocol = "sotw"

    def _subscribe(self, request: Message, state: TypeState, *, first: bool) -> None:
        names = set(request.resource_names)
        # An empty list asks for everything, for the wildcard types only, and only until
        # the proxy names what it wants: then it means "nothing" (it unsubscribes).
        state.named = state.named or bool(names)
        wildcard = "*" in names or (not names and not state.named and request.type_url in types.WILDCARD)
        state.subscribe(names - {"*"}, wildcard=wildcard, replace=True)
        if first and not request.response_nonce and request.version_info:
            state.claimed_label = request.version_info  # a reconnect: the proxy says what it runs

    def _kept_version(self, request: Message) -> str | None:
        return request.version_info or None

    def _plan(self, state: TypeState, view: View) -> Plan | None:
        if state.wildcard:
            scope = {n: r for n, r in view.resources.items() if state.in_scope(n)}
        else:
            scope = {n: view.resources[n] for n in sorted(state.names) if n in view.resources}
        # Listeners and clusters: every response is complete, what it lacks is deleted.
        complete = state.type_url in types.WILDCARD
        if not complete and not scope:
            return None  # nothing the proxy asked for exists (it finds out by a timeout)
        acked = state.acked
        # The proxy has all of it already (perhaps under an older version: a type that
        # did not change is not sent again, and keeps the version it came with).
        if (acked is not None and all(acked.get(n) == r.version for n, r in scope.items())
                and (not complete or acked.keys() == scope.keys())):
            return None
        return Plan(view.label, scope, full=complete)

    def _encode(self, type_url: str, plan: Plan, nonce: str) -> Message:
        return discovery_pb2.DiscoveryResponse(
            version_info=plan.label, type_url=type_url, nonce=nonce,
            resources=[r.packed for r in plan.updates.values()])
