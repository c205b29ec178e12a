"""The server's view of its proxies: who is connected, what each acknowledged, the
last NACK per node. It feeds the admin view (`meshlab xds status`) and lets tests and
benchmarks wait until every proxy runs a version.

Streams run on the server's event loop; readers (a test or benchmark in another
thread) may be anywhere, so every access holds one lock. Streams report only what
changes their sync state, and the board counts streams in sync per version as they
report, so waiting for a thousand proxies costs no scan of a thousand streams per
acknowledgement. The per-type details are read from the stream when asked for, on the
server's loop (the admin view runs there).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from copy import copy
from dataclasses import dataclass, field
from typing import Callable

from meshlab.xds.bookkeeping import Nack


@dataclass
class StreamInfo:
    """One ADS stream, as last reported by the stream itself. The board changes its own
    copy in place (under its lock) and hands out copies."""

    id: int
    protocol: str                        # "sotw" or "delta"
    peer: str
    connected_at: float = field(default_factory=time.time)
    node: str | None = None              # the node key (node id unless the cache says otherwise)
    node_id: str | None = None
    target_version: str | None = None    # the snapshot being pushed
    synced_version: str | None = None    # the last snapshot the proxy acknowledged completely
    synced_at: float | None = None       # time.monotonic() when it did
    in_sync: bool = False

    def to_json(self) -> dict:
        return {"id": self.id, "protocol": self.protocol, "peer": self.peer, "node_id": self.node_id,
                "connected_at": self.connected_at, "target_version": self.target_version,
                "synced_version": self.synced_version, "in_sync": self.in_sync}


class StatusBoard:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._streams: dict[int, StreamInfo] = {}
        self._describe: dict[int, Callable[[], dict]] = {}
        self._in_sync_at: Counter[str] = Counter()   # version -> streams in sync at it
        self._last_nack: dict[str, Nack] = {}
        self._nack_count: dict[str, int] = {}

    def opened(self, info: StreamInfo, describe: Callable[[], dict] | None = None) -> None:
        with self._changed:
            self._streams[info.id] = info
            if describe is not None:
                self._describe[info.id] = describe
            self._count(None, info)
            self._changed.notify_all()

    def update(self, stream_id: int, **fields: object) -> None:
        with self._changed:
            info = self._streams.get(stream_id)
            if info is None:
                return
            self._count(info, None)
            for name, value in fields.items():
                setattr(info, name, value)
            self._count(None, info)
            self._changed.notify_all()

    def closed(self, stream_id: int) -> None:
        with self._changed:
            old = self._streams.pop(stream_id, None)
            self._describe.pop(stream_id, None)
            self._count(old, None)
            self._changed.notify_all()

    def nacked(self, nack: Nack) -> None:
        with self._changed:
            self._last_nack[nack.node] = nack
            self._nack_count[nack.node] = self._nack_count.get(nack.node, 0) + 1
            self._changed.notify_all()

    def _count(self, old: StreamInfo | None, new: StreamInfo | None) -> None:
        if old is not None and old.in_sync:
            self._in_sync_at[old.synced_version] -= 1
        if new is not None and new.in_sync:
            self._in_sync_at[new.synced_version] += 1

    # -- reading -----------------------------------------------------------------

    def streams(self, node: str | None = None) -> list[StreamInfo]:
        with self._changed:
            return [copy(s) for s in self._streams.values() if node is None or s.node == node]

    def last_nack(self, node: str) -> Nack | None:
        with self._changed:
            return self._last_nack.get(node)

    def wait_for(self, predicate: Callable[["StatusBoard"], bool], timeout: float) -> bool:
        """Wait until PREDICATE(board) holds (True) or TIMEOUT seconds pass (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not predicate(self):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._changed.wait(remaining)
            return True

    def synced(self, version: str, *, streams: int | None = None, node: str | None = None) -> bool:
        """True when every stream (of NODE) is in sync at VERSION, and there are at
        least STREAMS of them."""
        with self._changed:
            if node is None:
                count = len(self._streams)
                return count > 0 and count >= (streams or 0) and self._in_sync_at[version] == count
            chosen = [s for s in self._streams.values() if s.node == node]
        if streams is not None and len(chosen) < streams:
            return False
        return bool(chosen) and all(s.in_sync and s.synced_version == version for s in chosen)

    def to_json(self, snapshots: dict[str, object] | None = None) -> dict:
        """Per node: its snapshot (version, resources, problems), its streams (with what
        each proxy has of each type) and the last NACK with the proxy's message. Call it
        on the server's event loop."""
        with self._changed:
            streams = [copy(s) for s in self._streams.values()]
            describe = dict(self._describe)
            nacks = dict(self._last_nack)
            counts = dict(self._nack_count)

        def stream_json(info: StreamInfo) -> dict:
            return {**info.to_json(), "types": describe[info.id]() if info.id in describe else {}}

        nodes: dict[str, dict] = {}
        keys = {s.node for s in streams if s.node} | set(nacks) | set(snapshots or {})
        for key in sorted(keys):
            nack = nacks.get(key)
            nodes[key] = {
                "snapshot": (snapshots or {}).get(key),
                "streams": [stream_json(s) for s in streams if s.node == key],
                "last_nack": nack.to_json() if nack else None,
                "nacks": counts.get(key, 0),
            }
        waiting = [stream_json(s) for s in streams if not s.node]
        return {"time": time.time(), "nodes": nodes, "streams_without_node": waiting}
