"""The parts lab 08 is built from, each on its own: the trace store (a real OTLP/gRPC
export in, spans out over HTTP), the chain app (propagation hook, known failures), and
scratch folders, which a service gets empty and leaves nowhere."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

from meshlab.grading import eventually
from meshlab import ports
from meshlab.apps.chain import chain
from meshlab.apps.server import Request
from meshlab.apps.traces import _scopes, flatten
from meshlab.course import load_course
from meshlab.errors import CourseError
from meshlab.runtime import LocalRuntime, read_state, stop_run


def export_request(service: str, spans: list[trace_pb2.Span]) -> trace_service_pb2.ExportTraceServiceRequest:
    """An export as Envoy sends it. Field 2 of ResourceSpans is `scope_spans` in current
    OTLP and `instrumentation_library_spans` in the older copy xds-protos ships; the
    bytes are the same, so build it by whichever name the installed module has."""
    resource = resource_pb2.Resource(attributes=[
        common_pb2.KeyValue(key="service.name", value=common_pb2.AnyValue(string_value=service))])
    resource_spans = trace_pb2.ResourceSpans(resource=resource)
    fields = resource_spans.DESCRIPTOR.fields_by_name
    scopes = "scope_spans" if "scope_spans" in fields else "instrumentation_library_spans"
    getattr(resource_spans, scopes).add().spans.extend(spans)
    return trace_service_pb2.ExportTraceServiceRequest(resource_spans=[resource_spans])


def span(trace: bytes, span_id: bytes, parent: bytes = b"", *, start_ms: int = 0, length_ms: int = 5,
         error: bool = False) -> trace_pb2.Span:
    return trace_pb2.Span(
        trace_id=trace, span_id=span_id, parent_span_id=parent, name="ingress", kind=trace_pb2.Span.SPAN_KIND_SERVER,
        start_time_unix_nano=start_ms * 1_000_000, end_time_unix_nano=(start_ms + length_ms) * 1_000_000,
        status=trace_pb2.Status(code=trace_pb2.Status.STATUS_CODE_ERROR if error
                                else trace_pb2.Status.STATUS_CODE_UNSET),
        attributes=[common_pb2.KeyValue(key="http.status_code", value=common_pb2.AnyValue(string_value="503"))])


def test_flatten_names_the_service_and_links_the_parent():
    request = export_request("reviews", [span(b"\x01" * 16, b"\x02" * 8, b"\x03" * 8, start_ms=10, error=True)])
    [flat] = flatten(request)
    assert flat["service"] == "reviews" and flat["trace_id"] == "01" * 16
    assert flat["span_id"] == "02" * 8 and flat["parent_span_id"] == "03" * 8
    assert flat["kind"] == "server" and flat["status"] == "error" and flat["duration_ms"] == 5.0
    assert flat["attributes"] == {"http.status_code": "503"}
    assert len(_scopes(request.resource_spans[0])) == 1


@pytest.fixture
def trace_store():
    otlp, api = ports.free_port(), ports.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "meshlab.apps.traces", "--otlp-port", str(otlp), "--port", str(api)],
                            stderr=subprocess.PIPE)
    try:
        assert eventually(lambda: not ports.is_free(otlp), timeout=15), proc.stderr
        yield otlp, f"http://127.0.0.1:{api}"
    finally:
        proc.terminate()
        assert proc.wait(timeout=10) == 0  # SIGTERM is a clean stop


def test_trace_store_receives_an_export_and_serves_traces(trace_store):
    otlp, api = trace_store
    trace_a, trace_b = b"\x0a" * 16, b"\x0b" * 16
    with grpc.insecure_channel(f"127.0.0.1:{otlp}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(export_request("productpage", [span(trace_a, b"\x01" * 8, start_ms=0, length_ms=30)]), timeout=5)
        stub.Export(export_request("reviews", [span(trace_a, b"\x02" * 8, b"\x01" * 8, start_ms=5)]), timeout=5)
        stub.Export(export_request("ratings", [span(trace_b, b"\x03" * 8, start_ms=50)]), timeout=5)
    spans = httpx.get(api + "/api/spans", params={"since": 1}, trust_env=False).json()
    assert [s["seq"] for s in spans] == [2, 3] and [s["service"] for s in spans] == ["reviews", "ratings"]
    traces = httpx.get(api + "/api/traces", params={"limit": 5}, trust_env=False).json()
    assert [t["trace_id"] for t in traces] == ["0a" * 16, "0b" * 16]  # the latest last
    assert [s["service"] for s in traces[0]["spans"]] == ["productpage", "reviews"]
    assert httpx.get(api + "/api/traces", params={"limit": 1}, trust_env=False).json()[0]["trace_id"] == "0b" * 16
    assert httpx.delete(api + "/api/spans", trust_env=False).status_code == 200
    assert httpx.get(api + "/api/spans", trust_env=False).json() == []
    assert httpx.get(api + "/api/spans", params={"since": "x"}, trust_env=False).status_code == 400


def test_chain_fails_every_kth_request_and_answers_missing_paths_itself():
    app = chain("reviews", None, lambda incoming: {}, fail_every=5)
    statuses = [app(Request("GET", "/", {}, {})).status for _ in range(10)]
    assert statuses == [200, 200, 200, 200, 503] * 2
    assert app(Request("GET", "/missing/1", {}, {})).status == 404
    assert app(Request("GET", "/", {}, {})).status == 200  # a 404 is not counted: the 11th request


def test_chain_sends_what_the_hook_returns_and_relays_path_and_query():
    seen = []
    server_port = ports.free_port()
    upstream = subprocess.Popen([sys.executable, "-m", "meshlab.apps.whoami", "--port", str(server_port),
                                 "--name", "next"], stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: not ports.is_free(server_port), timeout=15)
        app = chain("front", f"http://127.0.0.1:{server_port}",
                    lambda incoming: seen.append(incoming) or {"traceparent": incoming["traceparent"], "Host": "x"})
        answer = app(Request("GET", "/item", {"probe": ["p1"]}, {"traceparent": "00-ab-cd-01", "other": "no"}))
        assert answer.status == 200
        journal = httpx.get(f"http://127.0.0.1:{server_port}/__meshlab/requests", trust_env=False).json()
        assert journal[-1]["path"] == "/item" and journal[-1]["query"] == {"probe": ["p1"]}
        assert journal[-1]["headers"]["traceparent"] == "00-ab-cd-01" and "other" not in journal[-1]["headers"]
        assert journal[-1]["headers"]["host"] == f"127.0.0.1:{server_port}"  # the hook cannot redirect it
    finally:
        upstream.terminate()
        upstream.wait(timeout=10)


# -- scratch folders ----------------------------------------------------------------------

def scratch_lab(tmp_path: Path, folder: str = "data") -> Path:
    port = ports.free_port()
    (tmp_path / "course.yaml").write_text("title: demo\nlabs: [01-demo]\n")
    lab_dir = tmp_path / "labs" / "01-demo"
    lab_dir.mkdir(parents=True)
    (lab_dir / "lab.yaml").write_text(textwrap.dedent(f"""\
        title: Demo
        services:
          store:
            command: [python, -m, meshlab.apps.hello, --port, "{port}"]
            ports: {{http: {port}}}
            scratch: [{folder}]
        """))
    return lab_dir


def test_a_scratch_folder_is_emptied_at_start_and_removed_at_stop(tmp_path: Path):
    lab_dir = scratch_lab(tmp_path)
    (lab_dir / "data").mkdir()
    (lab_dir / "data" / "left-by-a-killed-run").write_text("old")
    runtime = LocalRuntime(load_course(tmp_path).labs[0], lab_dir, tmp_path / "run")
    try:
        runtime.start_all()
        assert (lab_dir / "data").is_dir() and not any((lab_dir / "data").iterdir())
        assert read_state(tmp_path / "run").services["store"].scratch == [str(lab_dir / "data")]
    finally:
        runtime.stop_all()
    assert not (lab_dir / "data").exists()


def test_stop_run_removes_scratch_without_the_manifest(tmp_path: Path):
    lab_dir = scratch_lab(tmp_path)
    runtime = LocalRuntime(load_course(tmp_path).labs[0], lab_dir, tmp_path / "run", detached=True)
    runtime.start_all()
    assert (lab_dir / "data").is_dir()
    assert stop_run(tmp_path / "run") == ["store"]
    assert not (lab_dir / "data").exists()


@pytest.mark.parametrize("folder", ["/tmp/elsewhere", "../outside", "."])
def test_a_scratch_folder_must_be_inside_the_lab(tmp_path: Path, folder: str):
    scratch_lab(tmp_path, f'"{folder}"')
    with pytest.raises(CourseError, match="must be a path inside the lab folder"):
        load_course(tmp_path)


# -- meshlab traces ------------------------------------------------------------------------

def test_traces_command_draws_a_waterfall_and_gives_json(trace_store, meshlab):
    otlp, api = trace_store
    trace = b"\x0c" * 16
    with grpc.insecure_channel(f"127.0.0.1:{otlp}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        stub.Export(export_request("ratings", [span(trace, b"\x03" * 8, b"\x02" * 8, start_ms=20, length_ms=2)]))
        stub.Export(export_request("reviews", [span(trace, b"\x02" * 8, b"\x01" * 8, start_ms=10, length_ms=300,
                                                    error=True)]))
        stub.Export(export_request("productpage", [span(trace, b"\x01" * 8, start_ms=0, length_ms=320)]))
    shown = meshlab("traces", "--store", api)
    assert shown.code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0].startswith(f"trace {'0c' * 16}  3 spans, 320.0 ms, productpage, ratings, reviews")
    rows = [line for line in lines if "ingress" in line]
    # Each span under its parent, whatever the order the store received them in.
    assert [row.split("ingress")[0].rstrip() for row in rows] == ["productpage", "  reviews", "    ratings"]
    assert "300.0 ms" in rows[1] and "error 503" in rows[1]
    as_json = meshlab("traces", "--store", api, "--json", "-n", "1")
    assert as_json.code == 0 and [s["service"] for s in as_json.json()[0]["spans"]] == ["productpage", "reviews",
                                                                                         "ratings"]


def test_traces_command_without_a_store_is_exit_2(meshlab):
    result = meshlab("traces", "--store", f"http://127.0.0.1:{ports.free_port()}")
    assert result.code == 2 and "no trace store answers" in result.output and "meshlab start LAB" in result.output
    assert "Traceback" not in result.output
    assert meshlab("traces", "--help").code == 0


def test_traces_command_finds_the_labs_store_in_its_manifest(cli, course):
    port = next(s.ports["http"] for lab in course.labs for s in lab.services if {"otlp", "http"} <= set(s.ports))
    result = cli("traces", "--lab", "8")
    assert result.code == 2 and f"no trace store answers at http://127.0.0.1:{port}" in result.stderr
    assert "has no trace store" in cli("traces", "--lab", "1").stderr
