"""A control plane's admin API for faults, as the mesh contract defines it, on a real
HTTP server: what `meshlab chaos` is tested against where no mesh runs. It keeps the
experiments (with their expiry) and refuses bad ones with 400, as a control plane must;
it configures no Envoy."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

FIELDS = {"service", "abort_percent", "abort_status", "delay_ms", "delay_percent", "route", "expires_at"}


class FaultAdmin:
    def __init__(self, services: set[str]):
        self.services = services
        self.faults: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []   # method, path, body: what the CLI sent
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FaultAdmin:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def current(self) -> list[dict]:
        now = dt.datetime.now(dt.timezone.utc)
        with self._lock:
            for key, fault in list(self.faults.items()):
                if fault["expires_at"] and dt.datetime.fromisoformat(fault["expires_at"]) <= now:
                    del self.faults[key]
            return list(self.faults.values())

    def problem(self, body: object) -> str | None:
        if not isinstance(body, dict) or set(body) - FIELDS or "service" not in body:
            return f"a fault is an object with the fields {sorted(FIELDS)}"
        if body["service"] not in self.services:
            return f"unknown service {body['service']!r}"
        if body.get("abort_percent") is None and body.get("delay_ms") is None:
            return "a fault needs abort_percent or delay_ms"
        for key in ("abort_percent", "delay_percent"):
            if body.get(key) is not None and not 0 <= body[key] <= 100:
                return f"{key} must be 0-100"
        if body.get("delay_ms") is not None and body["delay_ms"] < 0:
            return "delay_ms must not be negative"
        return None

    def _handler(self):
        admin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _send(self, status: int, document: object) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                admin.requests.append(("GET", self.path, None))
                if urlparse(self.path).path == "/faults":
                    self._send(200, admin.current())
                else:
                    self._send(404, {"error": "not found"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"null")
                admin.requests.append(("POST", self.path, body))
                problem = admin.problem(body)
                if problem:
                    self._send(400, {"error": problem})
                    return
                fault = {"id": f"f{next(admin._ids)}", "abort_status": 503, "delay_percent": 100.0,
                         "abort_percent": None, "delay_ms": None, "route": None, "expires_at": None, **body}
                with admin._lock:
                    admin.faults[fault["id"]] = fault
                self._send(200, {"id": fault["id"]})

            def do_DELETE(self) -> None:
                admin.requests.append(("DELETE", self.path, None))
                service = parse_qs(urlparse(self.path).query).get("service", [None])[0]
                with admin._lock:
                    gone = [k for k, f in admin.faults.items() if service is None or f["service"] == service]
                    for key in gone:
                        del admin.faults[key]
                self._send(200, {"cleared": len(gone)})

        return Handler
