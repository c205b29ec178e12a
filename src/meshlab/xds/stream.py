"""The push engine of one ADS stream: what to send a proxy, and when.

A stream follows the snapshot of its proxy's node. When the snapshot changes, the new
one (the *target*) goes out make-before-break, in stages:

1. `FIRST`: secrets, clusters and their endpoints. Clusters the target drops stay for
   now, under the target's version (a route may still send traffic to them). The stage
   ends when the proxy has acknowledged them *and* subscribed to the endpoints of every
   new EDS cluster and acknowledged those too: only then can a route use them. (A proxy
   that asks for clusters by name is waited for only for the clusters it asked for: it
   asks for a new one once a route names it.)
2. `THEN`: listeners and routes (and any other type).
3. `CLEANUP`: the clusters and secrets the target dropped are removed (skipped when
   the proxy holds none).

The work per event is kept small, since a server may follow thousands of streams:
views are built once per target, plans are cached until the view or the type's
bookkeeping changes, and a request makes only its own type be looked at again.

A rejected response (NACK) stops the stages where they are: the proxy keeps serving
what it had, and the next snapshot starts over. A stage whose proxy never subscribes
to what it waits for moves on after `stage_timeout` seconds (with a warning).

The state-of-the-world and delta protocols differ only in how a request changes a
subscription and how a response is encoded; `SotwStream` and `DeltaStream` (modules
`sotw` and `delta`) fill in those parts. Everything here runs on the server's event
loop; only `notify` is called from other threads (through a `Waker`).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from google.protobuf.message import Message

from meshlab.xds import types
from meshlab.xds.bookkeeping import Nack, Sent, TypeState, Verdict
from meshlab.xds.cache import SnapshotCache
from meshlab.xds.snapshot import Resource, Snapshot
from meshlab.xds.status import StatusBoard, StreamInfo

log = logging.getLogger("meshlab.xds")

FIRST, THEN, CLEANUP, DONE = 1, 2, 3, 4
STAGE_NAMES = {FIRST: "clusters and endpoints", THEN: "listeners and routes", CLEANUP: "removals", DONE: "done"}


@dataclass(frozen=True)
class View:
    """What the proxy should have of one type at this stage."""

    label: str
    resources: Mapping[str, Resource]
    allow_removal: bool


@dataclass(frozen=True)
class Plan:
    """A response to send: these resources (all of them, if FULL), these removals."""

    label: str
    updates: Mapping[str, Resource]
    removals: frozenset[str] = frozenset()
    full: bool = False

    def record(self, nonce: str) -> Sent:
        return Sent(nonce, self.label, {n: r.version for n, r in self.updates.items()}, self.removals, self.full)


class XdsProtocolError(Exception):
    """The proxy sent something the protocol does not allow (the stream is closed)."""


_PARENT = {types.ENDPOINT: types.CLUSTER, types.ROUTE: types.LISTENER}


class Waker:
    """Wakes streams on their event loop from any thread, many at a time: a snapshot set
    for a thousand nodes is one wake-up of the loop, not a thousand."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.loop = loop
        self._lock = threading.Lock()
        self._pending: dict[int, "Stream"] = {}
        self._scheduled = False

    def wake(self, stream: "Stream") -> None:
        with self._lock:
            self._pending[stream.id] = stream
            if self._scheduled:
                return
            self._scheduled = True
        self.loop.call_soon_threadsafe(self._run)

    def _run(self) -> None:
        with self._lock:
            streams, self._pending, self._scheduled = self._pending, {}, False
        for stream in streams.values():
            stream._refresh()


def _send_order(type_url: str) -> tuple[int, str]:
    return (types.FIRST.index(type_url), "") if types.goes_first(type_url) else (len(types.FIRST), type_url)


class Stream:
    protocol = "?"
    _ids = itertools.count(1)

    def __init__(self, cache: SnapshotCache, board: StatusBoard, *, peer: str, emit: Callable[[Message], None],
                 loop: asyncio.AbstractEventLoop, waker: "Waker | None" = None, stage_timeout: float = 5.0):
        self.id = next(Stream._ids)
        self.cache = cache
        self.board = board
        self.loop = loop
        self.waker = waker or Waker(loop)
        self.stage_timeout = stage_timeout
        self._emit = emit
        self.node: Message | None = None
        self.key: str | None = None
        self.types: dict[str, TypeState] = {}
        self.target: Snapshot | None = None
        self.stage = DONE
        self.synced_version: str | None = None
        self._known: dict[str, dict[str, Resource]] = {}   # per type: the content last sent per name
        self._kept: dict[str, dict[str, Resource]] = {}    # per type: what the target drops, kept until CLEANUP
        self._cleanup = False
        self._views: dict[tuple[str, bool], View] = {}     # per type (and keeping or not): the target's view
        self._plans: dict[str, tuple] = {}                 # per type: (view, revision, plan) last computed
        self._required_names: dict[str, frozenset[str]] = {}   # per type: what wildcard parents need
        self._scoped_required: dict[str, tuple] = {}           # per type: (parents' subscription, names)
        self._order: list[str] = []                        # the types, in the order they are sent
        self._nonces = itertools.count(1)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_token: tuple[str, int] | None = None
        self._reported: tuple = ()
        board.opened(StreamInfo(self.id, self.protocol, peer), describe=self.describe)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(#{self.id}, node={self.key!r})"

    # -- what the cache sees (Watcher) -------------------------------------------

    def behind(self, version: str) -> bool:
        target = self.target
        return self.synced_version != version or (target is not None and target.version != version)

    def notify(self, snapshot: Snapshot) -> None:
        """Called by the cache, from any thread: a new snapshot is there."""
        self.waker.wake(self)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.key is not None:
            self.cache.unwatch(self.key, self)
            log.info("%s (%s) disconnected", self.key, self.protocol)
        self.board.closed(self.id)

    # -- requests ------------------------------------------------------------------

    def receive(self, request: Message) -> None:
        """Handle one request from the proxy: a reply to a response, a subscription, or both."""
        identified = self.node is None
        if identified:
            self._identify(request)
        type_url = request.type_url
        if not type_url:
            raise XdsProtocolError("a discovery request without type_url")
        state = self.types.get(type_url)
        if state is None:
            state = self.types[type_url] = TypeState(type_url)
            self._order = sorted(self.types, key=_send_order)
        error = (request.error_detail.code, request.error_detail.message) if request.HasField("error_detail") else None
        first = not state.subscribed
        verdict = state.reply(request.response_nonce, error)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s -> %s %s nonce=%s", self.key, types.short(type_url), verdict.value, request.response_nonce)
        if verdict is Verdict.NACK:
            self._nacked(state, request, error)
        self._subscribe(request, state, first=first)
        if identified:
            self._retarget(self.cache.snapshot(self.key))  # now that the stream knows what is asked
        self.advance(changed=type_url)

    def _identify(self, request: Message) -> None:
        if not request.HasField("node") or not request.node.id:
            raise XdsProtocolError("the first request of a stream must carry the node (with its id)")
        self.node = request.node
        self.key = self.cache.node_key(request.node)
        snapshot = self.cache.watch(self.key, self)
        self.board.update(self.id, node=self.key, node_id=request.node.id)
        if snapshot is None:
            log.info("%s connected (%s); no snapshot for it yet (snapshots exist for: %s)",
                     self.key, self.protocol, ", ".join(self.cache.keys()) or "no node")
        else:
            log.info("%s connected (%s); its snapshot is version %s", self.key, self.protocol, snapshot.version)

    def _nacked(self, state: TypeState, request: Message, error: tuple[int, str]) -> None:
        rejected = state.rejected
        nack = Nack(node=self.key or "?", type_url=state.type_url, rejected_version=rejected.label if rejected else "?",
                    kept_version=self._kept_version(request), nonce=request.response_nonce,
                    code=error[0], message=error[1])
        log.warning("%s rejected %s version %s (NACK): %s", nack.node, types.short(state.type_url),
                    nack.rejected_version, nack.summary)
        self.board.nacked(nack)

    # -- protocol-specific parts -------------------------------------------------

    def _subscribe(self, request: Message, state: TypeState, *, first: bool) -> None:
        raise NotImplementedError

    def _kept_version(self, request: Message) -> str | None:
        raise NotImplementedError

    def _plan(self, state: TypeState, view: View) -> Plan | None:
        raise NotImplementedError

    def _encode(self, type_url: str, plan: Plan, nonce: str) -> Message:
        raise NotImplementedError

    # -- following the snapshot ----------------------------------------------------

    def _refresh(self) -> None:
        if self.key is not None:
            self._retarget(self.cache.snapshot(self.key))

    def _retarget(self, snapshot: Snapshot | None) -> None:
        if snapshot is None or (self.target is not None and snapshot.version == self.target.version):
            return
        self.target = snapshot
        # What the proxy holds of the types removed last, and the target drops, stays
        # until the routes have moved: fixed now, for the whole transition.
        self._kept = {}
        self._cleanup = False   # whether the proxy holds any of them: else no CLEANUP stage
        for type_url in types.REMOVED_LAST:
            state, known = self.types.get(type_url), self._known.get(type_url, {})
            dropped = (state.held() if state else set()) - snapshot.resources(type_url).keys()
            self._kept[type_url] = {name: known[name] for name in dropped if name in known}
            self._cleanup = self._cleanup or bool(dropped)
        self._views = {}
        self._required_names = {t: snapshot.provided_references(t) for t in (types.ENDPOINT, types.ROUTE)}
        self._scoped_required = {}
        self.stage = FIRST
        self.advance()

    def advance(self, changed: str | None = None) -> None:
        """Send whatever the current stage allows, and move through the stages as far
        as the proxy's acknowledgements permit. CHANGED: the one type whose bookkeeping
        changed (a request), if that is all that happened; else every type is looked at."""
        if self.target is None:
            self._report()
            return
        look_at = set(self._order) if changed is None else {changed}
        while True:
            for type_url in self._order:
                if type_url in look_at:
                    self._send_if_needed(self.types[type_url])
            if self.stage < DONE and self._stage_complete():
                stage = self.stage + 1 if self.stage != THEN or self._cleanup else DONE
                # The types whose view the new stage changes.
                look_at = {t for t in self._order if (stage == THEN and not types.goes_first(t))
                           or (stage == CLEANUP and t in types.REMOVED_LAST)}
                self.stage = stage
                continue
            break
        self._arm_timer()
        self._report()

    def _send_if_needed(self, state: TypeState) -> None:
        if not state.subscribed or state.pending is not None:
            return
        view, plan = self._planned(state.type_url)
        if plan is None or state.rejects(plan.record("")):
            return
        nonce = str(next(self._nonces))
        state.sent(plan.record(nonce))
        known = self._known.setdefault(state.type_url, {})
        if plan.full:
            known.clear()
        known.update(plan.updates)
        for name in plan.removals:
            known.pop(name, None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s <- %s %s nonce=%s: %s%s", self.key, types.short(state.type_url), plan.label, nonce,
                      ", ".join(plan.updates) or "(none)",
                      f"; removed {', '.join(sorted(plan.removals))}" if plan.removals else "")
        self._emit(self._encode(state.type_url, plan, nonce))

    def _planned(self, type_url: str) -> tuple[View | None, Plan | None]:
        """The view of TYPE_URL now and the response it needs (None: none). Computed
        again only when the view or the type's bookkeeping changed: an advance asks
        several times, and most stages leave most views as they were."""
        state = self.types.get(type_url)
        view = self._view(type_url)
        revision = state.revision if state is not None else -1
        cached = self._plans.get(type_url)
        if cached is not None and cached[0] is view and cached[1] == revision:
            return view, cached[2]
        plan = None
        if view is not None and state is not None:
            self._adopt_claim(state, view)
            plan = self._plan(state, view)
        self._plans[type_url] = (view, state.revision if state is not None else -1, plan)
        return view, plan

    def _view(self, type_url: str) -> View | None:
        """What the proxy should have of TYPE_URL now; None: nothing may be sent yet.
        The same object for as long as it holds (a new target makes new ones)."""
        target = self.target
        if target is None or (self.stage < THEN and not types.goes_first(type_url)):
            return None
        keeping = self._cleanup and self.stage < CLEANUP and type_url in types.REMOVED_LAST
        view = self._views.get((type_url, keeping))
        if view is None:
            resources: Mapping[str, Resource] = target.resources(type_url)
            if keeping:
                view = View(target.version, {**resources, **self._kept.get(type_url, {})}, allow_removal=False)
            else:
                view = View(target.version, resources, allow_removal=True)
            self._views[(type_url, keeping)] = view
        return view

    def _adopt_claim(self, state: TypeState, view: View) -> None:
        # A proxy reconnecting with the version we would send already has it, if that
        # version is a digest of the content. A version someone chose may have named
        # other content before this server started (a counter that restarted at 1, a
        # constant): then everything is sent again, and the proxy skips what it has.
        # Never for the types removed last: at that version it may still hold removed ones.
        target = self.target
        if (state.acked is None and state.claimed_label is not None and state.claimed_label == view.label
                and target is not None and target.version == target.content_version
                and state.type_url not in types.REMOVED_LAST):
            state.adopt(view.label, {n: r.version for n, r in view.resources.items() if state.in_scope(n)})

    def _required(self, type_url: str) -> frozenset[str]:
        """Names of TYPE_URL the proxy must subscribe to before the stage may end: the
        endpoints of the target's EDS clusters, the routes of its listeners; of those
        the proxy asked for, when it asks by name. Such a proxy asks for a cluster only
        once a route names it: waiting for it to ask for the endpoints of every cluster
        would hold that route back until the stage timeout."""
        parent = _PARENT.get(type_url)
        parent_state = self.types.get(parent) if parent else None
        if parent_state is None or not parent_state.subscribed:
            return frozenset()
        if parent_state.wildcard:
            return self._required_names.get(type_url, frozenset())
        cached = self._scoped_required.get(type_url)
        if cached is None or cached[0] != parent_state.subscription:
            target = self.target
            names = target.provided_references_of(type_url, parent_state.names) if target else frozenset()
            cached = self._scoped_required[type_url] = (parent_state.subscription, names)
        return cached[1]

    def _satisfied(self, type_url: str) -> bool:
        view, plan = self._planned(type_url)
        if view is None:
            return False
        state = self.types.get(type_url)
        required = self._required(type_url)
        if state is None or not state.subscribed:
            return not required
        if state.pending is not None or (required and not all(state.in_scope(n) for n in required)):
            return False
        return plan is None

    def _stage_types(self) -> set[str]:
        candidates = set(self.types) | {types.ENDPOINT, types.ROUTE}
        if self.stage == FIRST:
            return {t for t in candidates if types.goes_first(t)}
        return candidates

    def _stage_complete(self) -> bool:
        stage_types = self._stage_types()
        if any(self.types[t].pending is not None for t in stage_types if t in self.types):
            return False  # the common case, decided without computing anything
        return all(self._satisfied(t) for t in stage_types)

    def _blocked_by_nack(self) -> bool:
        for state in self.types.values():
            if state.rejected is not None:
                _, plan = self._planned(state.type_url)
                if plan is not None and state.rejects(plan.record("")):
                    return True
        return False

    # -- stage timer -------------------------------------------------------------------

    def _arm_timer(self) -> None:
        """Time the stage the stream waits in (once per stage; none when done)."""
        token = (self.target.version, self.stage) if self.target is not None and self.stage < DONE else None
        if token == self._timer_token:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_token = token
        self._timer = self.loop.call_later(self.stage_timeout, self._stage_timed_out, token) if token else None

    def _stage_timed_out(self, token: tuple[str, int]) -> None:
        self._timer = self._timer_token = None
        if self.target is None or (self.target.version, self.stage) != token or self._blocked_by_nack():
            return
        if any(state.pending is not None for state in self.types.values()):
            self._arm_timer()  # still waiting for a reply: wait another round
            return
        missing = {types.short(t): sorted(self._required(t) - (self.types[t].names if t in self.types else set()))
                   for t in self._stage_types() if not self._satisfied(t)}
        log.warning("%s: stage '%s' of version %s not complete after %.1f s (still missing: %s); moving on",
                    self.key, STAGE_NAMES[self.stage], self.target.version, self.stage_timeout, missing)
        self.stage += 1
        self.advance()

    def _has_everything(self, target: Snapshot) -> bool:
        """The proxy asked for every wildcard type the target has, and acknowledged all
        it asked for (and the endpoints and routes its clusters and listeners need)."""
        for type_url in set(target.type_urls) & types.WILDCARD:
            state = self.types.get(type_url)
            if state is None or not state.subscribed:
                return False
        subscribed = {t for t, state in self.types.items() if state.subscribed}
        return all(self._satisfied(t) for t in subscribed | {types.ENDPOINT, types.ROUTE})

    # -- reporting ---------------------------------------------------------------------

    def _report(self) -> None:
        target = self.target
        in_sync = target is not None and self.stage == DONE and self._has_everything(target)
        if in_sync and self.synced_version != target.version:
            self.synced_version = target.version
            log.debug("%s runs version %s", self.key, target.version)
        state = (in_sync, self.synced_version, target.version if target else None)
        if state != self._reported:  # the board hears of changes only
            self._reported = state
            self.board.update(self.id, in_sync=in_sync, synced_version=self.synced_version,
                              target_version=state[2], **({"synced_at": time.monotonic()} if in_sync else {}))

    def describe(self) -> dict:
        """What the proxy has of each type (for the admin view; on the server's loop)."""
        return {types.short(t): self.types[t].to_json() for t in self._order}
