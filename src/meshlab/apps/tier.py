"""A tier of a small application (web -> api -> db): it answers JSON with its name and
version, the identity of the caller as its sidecar vouched for it (the URI of
`x-forwarded-client-cert`), and what its own dependency said: the next tier's answer
(`--upstream URL`) or a counter it increments in Redis (`--redis HOST:PORT`).

It knows nothing of a mesh: it calls the addresses it was given, in plain HTTP or
plain Redis protocol, and the mesh's sidecars make that mutual TLS. A failed call
upstream is a 502 whose body says what failed, so a check can tell a denied call
(403 from the next sidecar, a closed connection from Redis's) from a broken one.
A request with `?alone=1` is answered without calling anything (one hop, for a
benchmark).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import select
import socket
import threading
from urllib.parse import urlsplit

from meshlab.apps.server import App, Request, Response, serve

_URI = re.compile(r"URI=([^;,]+)")


def peer_identity(request: Request) -> str | None:
    """The caller's SPIFFE ID as the sidecar set it in x-forwarded-client-cert."""
    match = _URI.search(request.header("x-forwarded-client-cert") or "")
    return match.group(1) if match else None


class RedisCounter:
    """INCR over the Redis protocol on one kept connection (reopened after a failure)."""

    def __init__(self, address: str):
        host, port = address.rsplit(":", 1)
        self.address = (host, int(port))
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None

    def incr(self, key: str) -> int:
        with self._lock:
            for attempt in (1, 2):        # a kept connection the far side closed: once more, fresh
                try:
                    if self._socket is None:
                        self._socket = socket.create_connection(self.address, timeout=5)
                        self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    self._socket.sendall(f"*2\r\n$4\r\nINCR\r\n${len(key)}\r\n{key}\r\n".encode())
                    line = self._read_line()
                    if line.startswith(b":"):
                        return int(line[1:])
                    raise OSError(f"redis answered {line!r}")
                except OSError:
                    self._close()
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _read_line(self) -> bytes:
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = self._socket.recv(1)
            if not chunk:
                raise ConnectionResetError("redis closed the connection")
            data += chunk
        return data[:-2]

    def _close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


class Upstream:
    """GETs to the next tier over kept-alive connections that the server's threads share
    (a pool, as in any HTTP client: a connection outlives the request that opened it, so
    a sidecar's listener change does not reach the connections already open).

    The standard library's client, not httpx: web's app is on the path of every request
    a check sends, and with httpx it took twice the CPU per request (1.2 ms against 0.6 ms
    on a 2-core machine)."""

    KEEP_IDLE = 32

    def __init__(self, url: str):
        parts = urlsplit(url)
        self.host, self.port, self.prefix = parts.hostname, parts.port or 80, parts.path.rstrip("/")
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def get(self, path: str, headers: dict[str, str]) -> tuple[int, str, bytes]:
        """The status, content type and body of GET PATH (OSError or HTTPException: none came)."""
        connection = self._take()
        try:
            connection.request("GET", self.prefix + path, headers=headers)
            response = connection.getresponse()
            body = response.read()
        except BaseException:
            connection.close()
            raise
        if response.will_close:
            connection.close()
        else:
            self._give(connection)
        return response.status, response.getheader("content-type", ""), body

    def _take(self) -> http.client.HTTPConnection:
        with self._lock:
            while self._idle:
                connection = self._idle.pop()
                # An idle connection with something to read was closed by the far side.
                if connection.sock is not None and not select.select([connection.sock], [], [], 0)[0]:
                    return connection
                connection.close()
        return http.client.HTTPConnection(self.host, self.port, timeout=10.0)

    def _give(self, connection: http.client.HTTPConnection) -> None:
        with self._lock:
            if len(self._idle) < self.KEEP_IDLE:
                self._idle.append(connection)
                return
        connection.close()


def tier(name: str, version: str, upstream: str | None, redis: str | None) -> App:
    client = Upstream(upstream) if upstream else None
    counter = RedisCounter(redis) if redis else None

    def answer(request: Request) -> Response:
        body: dict = {"service": name, "version": version, "caller": peer_identity(request)}
        status = 200
        if request.query.get("alone"):
            return Response(200, json.dumps(body) + "\n", {"content-type": "application/json"})
        if client is not None:
            headers = {k: v for k, v in request.headers.items() if k.startswith("x-") and k != "x-forwarded-client-cert"}
            try:
                code, content_type, text = client.get(request.path, headers)
                body["upstream"] = json.loads(text) if content_type.startswith("application/json") else {
                    "status": code, "body": text.decode("utf-8", "replace")[:200]}
                body["upstream_status"] = code
                status = 200 if code == 200 else 502
            except (OSError, http.client.HTTPException) as error:
                body["upstream_error"] = f"{type(error).__name__}: {error}"
                status = 502
        if counter is not None:
            try:
                body["hits"] = counter.incr(f"hits:{name}")
            except OSError as error:
                body["db_error"] = f"{type(error).__name__}: {error}"
                status = 502
        return Response(status, json.dumps(body) + "\n", {"content-type": "application/json",
                                                           "x-served-by": f"{name}-{version}"})
    return answer


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the service's name")
    parser.add_argument("--version", required=True, help="the version this instance is, like v1")
    parser.add_argument("--upstream", help="URL of the next tier (called with the same path)")
    parser.add_argument("--redis", metavar="HOST:PORT", help="a Redis to count requests in")


if __name__ == "__main__":
    serve(None, description="A tier of web -> api -> db.", add_arguments=_arguments,
          configure=lambda o: tier(o.name, o.version, o.upstream, o.redis))
