"""The control plane's admin view: HTTP, JSON, read-only, on loopback.

    GET /status               connected proxies per node: acknowledged version per type,
                              in sync or not, the last NACK with the proxy's message
    GET /snapshot?node=KEY    the snapshot a node is given, resource by resource
    GET /                     this list

`meshlab xds status` renders /status as a table. A deliberately tiny HTTP/1.0-style
server on the server's event loop: one request per connection, no dependencies. It
reads the snapshot cache and the status board, and knows nothing of the xDS server.
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import parse_qs

from google.protobuf import json_format

from meshlab.xds import types
from meshlab.xds.cache import SnapshotCache
from meshlab.xds.snapshot import Snapshot
from meshlab.xds.status import StatusBoard

ENDPOINTS = {
    "/status": "connected proxies, acknowledged versions per type, last NACK per node",
    "/snapshot?node=KEY": "the resources of the snapshot for node KEY",
}


def describe_snapshot(snapshot: Snapshot) -> dict:
    return {
        "version": snapshot.version,
        # Per type, name -> the resource's own version (what the delta protocol reports).
        "resources": {types.short(t): {name: r.version for name, r in snapshot.resources(t).items()}
                      for t in snapshot.type_urls},
        "problems": snapshot.problems(),
    }


def snapshot_document(snapshot: Snapshot) -> dict:
    resources: dict[str, list] = {}
    for resource in snapshot:
        try:
            body = json_format.MessageToDict(resource.message(), preserving_proto_field_name=True)
        except (KeyError, TypeError, json_format.Error):
            body = {"name": resource.name, "note": "cannot be shown as JSON (a type inside it is not imported)"}
        resources.setdefault(types.short(resource.type_url), []).append(body)
    return {"version": snapshot.version, "resources": resources}


def status(cache: SnapshotCache, board: StatusBoard) -> dict:
    """The /status document: snapshots, connected proxies, last NACKs. Call it on the
    server's event loop (the board reads the streams' bookkeeping)."""
    snapshots = {}
    for key in cache.keys():
        snapshot = cache.snapshot(key)
        if snapshot is not None:
            snapshots[key] = describe_snapshot(snapshot)
    return board.to_json(snapshots)


def respond(cache: SnapshotCache, board: StatusBoard, method: str, path: str,
            query: dict[str, list[str]]) -> tuple[int, dict]:
    if method != "GET":
        return 405, {"error": "only GET is served"}
    if path == "/status":
        return 200, status(cache, board)
    if path == "/snapshot":
        keys = cache.keys()
        key = (query.get("node") or [keys[0] if len(keys) == 1 else ""])[0]
        snapshot = cache.snapshot(key) if key else None
        if snapshot is None:
            return 404, {"error": f"no snapshot for node {key!r}" if key else "name a node: /snapshot?node=KEY",
                         "nodes": keys}
        return 200, snapshot_document(snapshot)
    if path == "/":
        return 200, {"endpoints": ENDPOINTS}
    return 404, {"error": f"no such page: {path}", "endpoints": ENDPOINTS}


async def start(cache: SnapshotCache, board: StatusBoard, host: str, port: int) -> asyncio.AbstractServer:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
            path, _, query = target.partition("?")
            code, document = respond(cache, board, method, path, parse_qs(query))
            body = json.dumps(document, indent=2).encode() + b"\n"
            writer.write(f"HTTP/1.1 {code} {'OK' if code == 200 else 'Error'}\r\n"
                         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                         "Connection: close\r\n\r\n".encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError,
                ConnectionError):
            pass  # a client that does not speak HTTP gets nothing
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
