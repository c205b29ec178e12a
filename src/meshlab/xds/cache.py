"""The snapshot cache: the snapshot each proxy should run, keyed by its node.

    cache = SnapshotCache()                   # keyed by node id
    cache.set_snapshot("envoy-1", snapshot)   # wakes the streams of envoy-1 that are behind

A proxy identifies itself with the `node` of its bootstrap; `node_key` turns that into
the key snapshots are stored under (the node id by default; `lambda node: node.cluster`
serves one snapshot to a whole group). Streams register a watcher for their key; setting
a snapshot wakes only the watchers whose acknowledged version differs from the new one
(or that are being sent another).
`set_snapshot` may be called from any thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, Protocol

from google.protobuf.message import Message

from meshlab.xds.snapshot import Snapshot

log = logging.getLogger("meshlab.xds")


class Watcher(Protocol):
    """What a stream offers the cache: whether its proxy is behind a version (has not
    acknowledged it, or is being sent another), and a thread-safe way to be told
    about a new snapshot (the stream then reads the latest one from the cache)."""

    def behind(self, version: str) -> bool: ...

    def notify(self, snapshot: Snapshot) -> None: ...


def by_node_id(node: Message) -> str:
    return node.id


class SnapshotCache:
    def __init__(self, *, node_key: Callable[[Message], str] = by_node_id):
        self.node_key = node_key
        self._lock = threading.Lock()
        self._snapshots: dict[str, Snapshot] = {}
        self._watchers: dict[str, set[Watcher]] = {}

    def set_snapshot(self, key: str, snapshot: Snapshot) -> bool:
        """Make SNAPSHOT the one for KEY. Returns False (and wakes nobody) when it has
        the version of the current one."""
        with self._lock:
            previous = self._snapshots.get(key)
            self._snapshots[key] = snapshot
            if previous is not None and previous.version == snapshot.version:
                if previous.content_version != snapshot.content_version:
                    log.warning(
                        "the new snapshot for %r has the version %r of the previous one but other content: "
                        "proxies at %r will not be sent it (give each content its own version, or leave "
                        "the version out to derive it from the content)", key, snapshot.version, snapshot.version)
                return False
            watchers = [w for w in self._watchers.get(key, ()) if w.behind(snapshot.version)]
        for watcher in watchers:
            watcher.notify(snapshot)
        return True

    def snapshot(self, key: str) -> Snapshot | None:
        with self._lock:
            return self._snapshots.get(key)

    def clear(self, key: str) -> None:
        """Forget KEY's snapshot; its proxies keep what they have."""
        with self._lock:
            self._snapshots.pop(key, None)

    def keys(self) -> list[str]:
        with self._lock:
            return sorted(self._snapshots)

    def watch(self, key: str, watcher: Watcher) -> Snapshot | None:
        """Register WATCHER for KEY; returns KEY's current snapshot (None if none yet)."""
        with self._lock:
            self._watchers.setdefault(key, set()).add(watcher)
            return self._snapshots.get(key)

    def unwatch(self, key: str, watcher: Watcher) -> None:
        with self._lock:
            watchers = self._watchers.get(key)
            if watchers is not None:
                watchers.discard(watcher)
                if not watchers:
                    del self._watchers[key]
