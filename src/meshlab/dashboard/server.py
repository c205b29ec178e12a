"""The dashboard's web server, on 127.0.0.1: the page and its vendored libraries, the
JSON the page polls, and the relay Prometheus scrapes the sidecars through.

    GET /                       the page (static/index.html)
    GET /static/...             its script, style and vendored libraries (no CDN)
    GET /api/graph              services, calls and their numbers, from Prometheus
    GET /api/series             per service, golden signals over the last 5 minutes
    GET /api/status             the control plane's /status (versions, NACKs, certificates)
    GET /scrape/<workload>      that workload's sidecar's /stats/prometheus (for Prometheus)
"""

from __future__ import annotations

import json
import mimetypes
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

from meshlab.dashboard import graph
from meshlab.dashboard.prometheus import Prometheus
from meshlab.mesh.manifest import Mesh

STATIC = Path(__file__).resolve().parent / "static"
ROUTES_TTL = 5.0          # seconds between readings of the sidecars' listeners


@dataclass
class Sources:
    """Where the dashboard reads the mesh: its manifest, the body of a sidecar's admin
    page by workload and path, and the control plane's /status."""

    mesh: Mesh
    sidecar_get: Callable[[str, str], bytes]          # (workload, path) -> body
    control_status: Callable[[], dict]


class Dashboard:
    def __init__(self, sources: Sources, *, port: int = 0):
        self.sources = sources
        self.server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.prometheus = Prometheus(sources.mesh, self.url)
        self._routes: list[graph.Route] = []
        self._routes_at = 0.0
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.1,), daemon=True)

    def __enter__(self) -> Dashboard:
        self._thread.start()             # first: Prometheus scrapes through it
        try:
            self.prometheus.__enter__()
        except BaseException:
            self._stop_server()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.prometheus.__exit__()
        self._stop_server()

    def _stop_server(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def routes(self) -> list[graph.Route]:
        with self._lock:
            if time.monotonic() - self._routes_at > ROUTES_TTL or not self._routes:
                self._routes = graph.routes_of(self.sources.mesh, self._listeners)
                self._routes_at = time.monotonic()
            return self._routes

    def _listeners(self, workload: str) -> list[dict]:
        body = self.sources.sidecar_get(workload, "/config_dump?resource=dynamic_listeners")
        return json.loads(body).get("configs", [])

    def document(self, path: str) -> object:
        if path == "/api/graph":
            document = graph.graph(self.sources.mesh, self.prometheus, self.routes())
            document["scrapes"] = self.prometheus.targets_up()
            document["time"] = time.time()
            return document
        if path == "/api/series":
            return graph.series(self.sources.mesh, self.prometheus, self.routes())
        if path == "/api/status":
            try:
                return self.sources.control_status()
            except Exception as error:  # noqa: BLE001 - shown on the page, not a crash
                return {"error": f"the control plane does not answer: {type(error).__name__}: {error}"}
        raise KeyError(path)

    def _handler(self):
        dashboard = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, body: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("content-type", kind)
                self.send_header("content-length", str(len(body)))
                self.send_header("cache-control", "no-store")
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                try:
                    if path in ("/", "/index.html"):
                        self._file(STATIC / "index.html")
                    elif path.startswith("/static/"):
                        self._file(STATIC / path[len("/static/"):])
                    elif path.startswith("/scrape/"):
                        body = dashboard.sources.sidecar_get(path[len("/scrape/"):], "/stats/prometheus")
                        self._send(200, body, "text/plain; version=0.0.4")
                    else:
                        body = json.dumps(dashboard.document(path)).encode()
                        self._send(200, body, "application/json")
                except KeyError:
                    self._send(404, b'{"error": "not found"}', "application/json")
                except Exception as error:  # noqa: BLE001 - one failed request, not a dead dashboard
                    self._send(502, json.dumps({"error": f"{type(error).__name__}: {error}"}).encode(),
                               "application/json")

            def _file(self, file: Path) -> None:
                file = file.resolve()
                if STATIC not in file.parents or not file.is_file():
                    raise KeyError(str(file))
                kind = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
                self._send(200, file.read_bytes(), kind + ("; charset=utf-8" if kind.startswith("text/") or
                                                           kind.endswith("javascript") else ""))

        return Handler
