"""A tiny HTTP/1.1 app server for labs, on the standard library.

Two details matter behind Envoy. Nagle's algorithm must be off, or every proxied
request on a kept-alive connection stalls ~40 ms (headers and body leave in two
writes). And the app keeps a journal of the requests it received, served at
`/__meshlab/requests` on its own port, so a check can prove a request reached the app
(and with which headers) rather than trusting what came back through the proxy.
"""

from __future__ import annotations

import argparse
import itertools
import json
import signal
import socketserver
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

JOURNAL_PATH = "/__meshlab/requests"
JOURNAL_SIZE = 5000


@dataclass
class Request:
    method: str
    path: str                          # without the query string
    query: dict[str, list[str]]
    headers: dict[str, str]            # lower-case names
    body: bytes = b""

    def header(self, name: str, default: str | None = None) -> str | None:
        return self.headers.get(name.lower(), default)


@dataclass
class Response:
    status: int = 200
    body: str | bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


App = Callable[[Request], Response]


class _Journal:
    def __init__(self) -> None:
        self._entries: deque[dict] = deque(maxlen=JOURNAL_SIZE)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def record(self, request: Request) -> None:
        with self._lock:
            self._entries.append({
                "seq": next(self._ids), "time": time.time(), "method": request.method,
                "path": request.path, "query": request.query, "headers": request.headers,
            })

    def since(self, seq: int) -> list[dict]:
        with self._lock:
            return [e for e in self._entries if e["seq"] > seq]


def make_handler(app: App, journal: _Journal) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # see the module docstring
        server_version = "meshlab-app"

        def version_string(self) -> str:
            return self.server_version

        def _handle(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            request = Request(
                method=self.command, path=url.path, query=parse_qs(url.query),
                headers={k.lower(): v for k, v in self.headers.items()}, body=body,
            )
            if url.path == JOURNAL_PATH:
                since = int(request.query.get("since", ["0"])[0])
                response = Response(200, json.dumps(journal.since(since)), {"content-type": "application/json"})
            else:
                journal.record(request)
                try:
                    response = app(request)
                except Exception as exc:  # noqa: BLE001 - an app bug is a 500, visible in the log
                    self.log_error("app error: %r", exc)
                    response = Response(500, f"app error: {exc}\n")
            payload = response.body.encode() if isinstance(response.body, str) else response.body
            self.send_response(response.status)
            headers = {"content-type": "text/plain; charset=utf-8", **response.headers}
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _handle

        def log_message(self, fmt: str, *args: object) -> None:
            if JOURNAL_PATH in self.path:
                return  # the checker reading the journal is not news for the learner
            sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {fmt % args}\n")

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog is 5: a burst of connections from Envoy (fifty
    # requests at once) would overflow it and wait a second for the SYN to be retried.
    request_queue_size = 1024


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True


def _unix_handler(handler: type[BaseHTTPRequestHandler]) -> type[BaseHTTPRequestHandler]:
    class UnixHandler(handler):  # type: ignore[misc, valid-type]
        disable_nagle_algorithm = False  # no TCP here

        def address_string(self) -> str:
            return "unix"

    return UnixHandler


def serve(app: App | None, *, description: str, argv: list[str] | None = None,
          add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
          configure: Callable[[argparse.Namespace], App] | None = None) -> None:
    """Parse --host/--port (and the app's own options), then serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    parser.add_argument("--unix", metavar="NAME",
                        help="also serve on this Unix socket; @NAME is an abstract one, which belongs to the network "
                             "namespace (a path no firewall rule sees: how a checker reaches an app in a pod)")
    if add_arguments:
        add_arguments(parser)
    options = parser.parse_args(argv)
    if configure:
        app = configure(options)
    journal = _Journal()
    server = _Server((options.host, options.port), make_handler(app, journal))
    if options.unix:
        name = "\0" + options.unix[1:] if options.unix.startswith("@") else options.unix
        unix = _UnixServer(name, _unix_handler(make_handler(app, journal)))
        threading.Thread(target=unix.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    serve_until_stopped(server)


def _exit_now(*_: object) -> None:
    # Out of serve_forever's wait at once (its `shutdown` waits for the next poll, up to
    # 0.1 s, at every stop of every app); the `finally` below still closes the socket.
    raise SystemExit(0)


def serve_until_stopped(server: socketserver.BaseServer) -> None:
    """Serve until SIGTERM or Ctrl-C, then close: how every app of the course runs."""
    signal.signal(signal.SIGTERM, _exit_now)
    host, port = server.server_address[:2]
    sys.stderr.write(f"listening on http://{host}:{port}\n")
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
