"""Lab 10's app: serves response bodies exactly as the caller asks for them, so a check
can put personal data into a response and see what the filter in front made of it.

    GET  /          a JSON customer record with a card number, an e-mail and a phone
    GET  /chunked   the same record, sent chunked and cut in the middle of the card
    GET  /image     a few bytes of PNG (binary: must pass untouched)
    POST /echo      the request body comes back as the response body, shaped by:
        x-serve-content-type: TYPE     its content-type (default text/plain)
        x-serve-repeat: N              the body N times over (large bodies, small requests)
        x-serve-chunks: 10,25          chunked encoding, cut at these offsets, each chunk
                                       written on its own after x-serve-pause-ms (default 30)
      without x-serve-chunks the body goes out in one write with a content-length.

The pause between chunks makes Envoy read each chunk separately, so a filter sees
them in separate body callbacks, as it would from a slow upstream.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from meshlab.apps.server import serve_until_stopped

RECORD = json.dumps({
    "customer": "Ada Lovelace",
    "email": "ada.lovelace@example.com",
    "phone": "+44 20 7946 0958",
    "card": "4111111111111111",
    "order": "1234567890123",
}, indent=2).encode() + b"\n"
# A PNG signature and header: bytes that must never be touched.
IMAGE = bytes.fromhex("89504e470d0a1a0a0000000d49484452") + b"4111111111111111 ada@example.com"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # or every response on a kept-alive connection waits ~40 ms
    server_version = "meshlab-bodies"

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        if self.path == "/":
            self._send(RECORD, "application/json")
        elif self.path == "/chunked":
            cut = RECORD.index(b"41111111") + 8
            self._send(RECORD, "application/json", cuts=[cut], pause=0.03)
        elif self.path == "/image":
            self._send(IMAGE, "image/png")
        else:
            self._send(b"not found: try /, /chunked, /image or POST /echo\n", "text/plain", status=404)

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        body *= int(self.headers.get("x-serve-repeat") or 1)
        cuts = self.headers.get("x-serve-chunks")
        self._send(body, self.headers.get("x-serve-content-type", "text/plain"),
                   cuts=[int(c) for c in cuts.split(",") if c.strip()] if cuts is not None else None,
                   pause=int(self.headers.get("x-serve-pause-ms") or 30) / 1000)

    def _send(self, body: bytes, content_type: str, *, cuts: list[int] | None = None, pause: float = 0.0,
              status: int = 200) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        if cuts is None:
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        edges = [0, *sorted(c for c in cuts if 0 < c < len(body)), len(body)]
        for start, end in zip(edges, edges[1:]):
            time.sleep(pause)
            self.wfile.write(b"%x\r\n%s\r\n" % (end - start, body[start:end]))
            self.wfile.flush()
        time.sleep(pause)
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def log_message(self, fmt: str, *args: object) -> None:
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} {self.address_string()} {fmt % args}\n")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, required=True, help="port to listen on")
    options = parser.parse_args(argv)
    serve_until_stopped(Server((options.host, options.port), Handler))


if __name__ == "__main__":
    main()
