"""A trace store: an OTLP/gRPC receiver that keeps spans in memory and serves them
over a small HTTP API, for checks and for `meshlab traces`.

Envoy's OpenTelemetry tracer exports spans with OTLP over gRPC (the collector's
`TraceService/Export`). This app answers that RPC on `--otlp-port` (grpc.aio, with the
messages of PyPI `opentelemetry-proto`) and keeps the last `--keep` spans, flattened
to plain dictionaries. On `--port` (HTTP):

    GET /api/spans?since=SEQ    spans received after sequence number SEQ, oldest first
    GET /api/traces?limit=N     the N traces that most recently received a span, each
                                {"trace_id", "spans": [...]} with its spans by start time
    DELETE /api/spans           forget every span

A span as served: seq, trace_id, span_id, parent_span_id ("" for a root), name, kind,
service (the resource's `service.name`), start_ns, end_ns, duration_ms, status ("unset",
"ok" or "error"), attributes (strings). Spans arrive only while the store runs: Envoy
does not retry an export, so the store starts before the proxies.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import signal
import sys
import threading
from collections import OrderedDict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.trace.v1 import trace_pb2

_KINDS = {value: name.removeprefix("SPAN_KIND_").lower() for name, value in trace_pb2.Span.SpanKind.items()}
_STATUS = {trace_pb2.Status.STATUS_CODE_UNSET: "unset", trace_pb2.Status.STATUS_CODE_OK: "ok",
           trace_pb2.Status.STATUS_CODE_ERROR: "error"}


def _value(any_value) -> str:
    """An OTLP AnyValue as text (Envoy's attributes are strings, numbers and booleans)."""
    kind = any_value.WhichOneof("value")
    return "" if kind is None else str(getattr(any_value, kind))


def _scopes(resource_spans) -> list:
    """The spans of a resource, grouped by instrumentation scope. `xds-protos` ships an
    older copy of the same OTLP modules, and whichever package was installed last
    provides them: that copy calls field 2 `instrumentation_library_spans`, the current
    one `scope_spans`. The bytes on the wire are the same."""
    if "scope_spans" in resource_spans.DESCRIPTOR.fields_by_name:
        return list(resource_spans.scope_spans)
    return list(resource_spans.instrumentation_library_spans)


def flatten(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict]:
    """The spans of one export, each with its service name."""
    spans = []
    for resource_spans in request.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in _scopes(resource_spans):
            for span in scope_spans.spans:
                spans.append({
                    "trace_id": span.trace_id.hex(),
                    "span_id": span.span_id.hex(),
                    "parent_span_id": span.parent_span_id.hex(),
                    "name": span.name,
                    "kind": _KINDS.get(span.kind, str(span.kind)),
                    "service": resource.get("service.name", ""),
                    "start_ns": span.start_time_unix_nano,
                    "end_ns": span.end_time_unix_nano,
                    "duration_ms": round((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6, 3),
                    "status": _STATUS.get(span.status.code, "unset"),
                    "attributes": {a.key: _value(a.value) for a in span.attributes},
                })
    return spans


class SpanStore:
    """The last KEEP spans, numbered in order of arrival; thread-safe (gRPC on the event
    loop writes, HTTP threads read)."""

    def __init__(self, keep: int = 20000):
        self._spans: deque[dict] = deque(maxlen=keep)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def add(self, spans: list[dict]) -> None:
        with self._lock:
            for span in spans:
                self._spans.append({"seq": next(self._numbers), **span})

    def since(self, seq: int) -> list[dict]:
        with self._lock:
            return [s for s in self._spans if s["seq"] > seq]

    def traces(self, limit: int) -> list[dict]:
        with self._lock:
            spans = list(self._spans)
        latest: OrderedDict[str, list[dict]] = OrderedDict()
        for span in spans:  # a trace moves to the end each time one of its spans arrives
            latest.setdefault(span["trace_id"], []).append(span)
            latest.move_to_end(span["trace_id"])
        chosen = list(latest.items())[-limit:] if limit > 0 else []
        return [{"trace_id": trace_id, "spans": sorted(members, key=lambda s: (s["start_ns"], s["seq"]))}
                for trace_id, members in chosen]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, store: SpanStore):
        self.store = store

    async def Export(self, request, context):  # noqa: N802 - the RPC's name
        self.store.add(flatten(request))
        return trace_service_pb2.ExportTraceServiceResponse()


def _http_handler(store: SpanStore) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def _send(self, status: int, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            try:
                if url.path == "/api/spans":
                    self._send(200, store.since(int(query.get("since", ["0"])[0])))
                elif url.path == "/api/traces":
                    self._send(200, store.traces(int(query.get("limit", ["20"])[0])))
                else:
                    self._send(404, {"error": f"no {url.path}; try /api/spans or /api/traces"})
            except ValueError:
                self._send(400, {"error": "since and limit are whole numbers"})

        def do_DELETE(self) -> None:  # noqa: N802
            if urlsplit(self.path).path == "/api/spans":
                store.clear()
                self._send(200, {"cleared": True})
            else:
                self._send(404, {"error": "DELETE /api/spans forgets every span"})

        def log_message(self, fmt: str, *args: object) -> None:
            pass  # polled many times a second by checks: not news

    return Handler


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True


async def serve(host: str, otlp_port: int, http_port: int, keep: int) -> None:
    store = SpanStore(keep)
    # The HTTP API first: once the OTLP port answers (the lab's readiness probe),
    # everything is up.
    http = _HttpServer((host, http_port), _http_handler(store))
    threading.Thread(target=http.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(store), server)
    server.add_insecure_port(f"{host}:{otlp_port}")
    await server.start()
    sys.stderr.write(f"OTLP/gRPC on {host}:{otlp_port}, spans on http://{host}:{http_port}/api/traces\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(grace=0.2)
    http.shutdown()
    http.server_close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Receives OTLP/gRPC spans and serves them over HTTP.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--otlp-port", type=int, default=4317, help="OTLP/gRPC port (default 4317)")
    parser.add_argument("--port", type=int, required=True, help="HTTP port of the span API")
    parser.add_argument("--keep", type=int, default=20000, help="spans kept in memory (default 20000)")
    options = parser.parse_args(argv)
    asyncio.run(serve(options.host, options.otlp_port, options.port, options.keep))


if __name__ == "__main__":
    main()
