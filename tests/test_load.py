"""The load engine: fortio's JSON parsed (from a real fortio run the tests carry), the
fortio subprocess path (a stand-in program prints that JSON, since fortio cannot be
installed here), and the built-in engine for real against the course's apps."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import httpx
import pytest

from meshlab import load
from meshlab.errors import InputError, ToolMissing
from meshlab.grading import eventually
from meshlab.load.http1 import Connection, Target
from meshlab.ports import free_port


@pytest.fixture
def meshlab(cli):
    """`meshlab load` starts no lab: run it in this process (see the `cli` fixture)."""
    return cli

FORTIO_JSON = Path(__file__).parent / "fixtures" / "fortio" / "http-100-calls-v1.57.3.json"


# -- fortio's format ----------------------------------------------------------------

def test_a_real_fortio_result_parses():
    result = load.LoadResult.from_fortio(json.loads(FORTIO_JSON.read_text()))
    assert result.engine == "fortio"
    assert result.ret_codes == {200: 100} and result.total == 100 and result.ok == 100
    assert result.num_threads == 4
    assert result.requested_qps == 8.0 and result.requested == "exactly 100 calls"
    assert result.actual_qps == pytest.approx(7.975606391552989)
    assert result.actual_duration == pytest.approx(12.538231589)
    assert result.url == "http://httpbin.default/get"
    hist = result.durations
    assert hist.count == 100 and hist.min == pytest.approx(0.004223875) and hist.max == pytest.approx(0.040490042)
    assert hist.percentile(50) == pytest.approx(0.014571428571428572)
    assert hist.percentile(99.9) == pytest.approx(0.0404410378)
    assert sum(b.count for b in hist.buckets) == 100 and hist.buckets[-1].percent == 100
    assert result.error_durations.count == 0


def test_our_json_reads_back_as_it_was_written():
    original = load.LoadResult.from_fortio(json.loads(FORTIO_JSON.read_text()))
    assert load.LoadResult.from_fortio(original.to_fortio()) == original


# -- the fortio subprocess path -----------------------------------------------------

@pytest.fixture
def fake_fortio(tmp_path, monkeypatch):
    """A stand-in `fortio` that records its argv and prints the real result (or fails)."""
    script = tmp_path / "fortio"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import json, os, sys
        open({str(tmp_path / 'argv.json')!r}, "w").write(json.dumps(sys.argv[1:]))
        mode = os.environ.get("FAKE_FORTIO_MODE", "ok")
        if mode == "fail":
            sys.stderr.write("Aborting because of dial tcp: connection refused\\n")
            sys.exit(1)
        sys.stderr.write("fortio log line\\n")
        sys.stdout.write("not json" if mode == "garbage" else open({str(FORTIO_JSON)!r}).read())
        """))
    script.chmod(0o755)
    monkeypatch.setenv("MESHLAB_FORTIO", str(script))
    return tmp_path


def test_fortio_runs_when_named_and_its_json_is_the_result(fake_fortio):
    result = load.run("http://127.0.0.1:10000/x?y=1", requests=100, concurrency=4, qps=8,
                      headers={"x-canary": "true"})
    assert result.engine == "fortio" and result.ret_codes == {200: 100}
    argv = json.loads((fake_fortio / "argv.json").read_text())
    assert argv[:3] == ["load", "-json", "-"]
    assert argv[argv.index("-c") + 1] == "4" and argv[argv.index("-qps") + 1] == "8"
    assert argv[argv.index("-n") + 1] == "100" and argv[argv.index("-H") + 1] == "x-canary: true"
    assert argv[-1] == "http://127.0.0.1:10000/x?y=1"


def test_fortio_duration_mode_and_method(fake_fortio):
    load.run("http://127.0.0.1:10000/", duration=2.5, qps=50, method="POST")
    argv = json.loads((fake_fortio / "argv.json").read_text())
    assert argv[argv.index("-t") + 1] == "2.5s" and "-n" not in argv
    assert argv[argv.index("-X") + 1] == "POST"


@pytest.mark.parametrize("mode, words", [("fail", "exited with code 1"), ("garbage", "did not print a JSON")])
def test_a_failing_fortio_is_explained(fake_fortio, monkeypatch, mode, words):
    monkeypatch.setenv("FAKE_FORTIO_MODE", mode)
    with pytest.raises(ToolMissing) as error:
        load.run("http://127.0.0.1:10000/", requests=10)
    assert words in error.value.message and error.value.fix


def test_counting_by_header_uses_the_builtin_engine_even_with_fortio(fake_fortio):
    assert load.engine_for("auto")[0] == "fortio"
    result = load.run(f"http://127.0.0.1:{free_port()}/", requests=2, count_header="x-served-by", timeout=2)
    assert result.engine == "builtin"


def test_without_fortio_auto_means_builtin(monkeypatch):
    monkeypatch.delenv("MESHLAB_FORTIO", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    assert load.engine_for("auto") == ("builtin", None)
    with pytest.raises(ToolMissing):
        load.engine_for("fortio")


def test_a_bad_plan_is_an_input_error():
    for options in ({"requests": 0}, {"requests": 5, "duration": 1.0}, {"requests": 5, "concurrency": 0},
                    {"requests": 5, "qps": -1}):
        with pytest.raises(InputError):
            load.plan("http://127.0.0.1:1/", **options)
    with pytest.raises(InputError):
        load.plan("ftp://example/", requests=1)


# -- the built-in engine, for real ----------------------------------------------------

def answers(url: str) -> bool:
    try:
        httpx.get(url, trust_env=False)
    except httpx.TransportError:
        return False
    return True


@pytest.fixture(scope="module")
def app():
    """The course's whoami app on a free port: (base URL, the broken twin's URL)."""
    ports, procs = (free_port(), free_port()), []
    for port, extra in zip(ports, ([], ["--status", "500"])):
        procs.append(subprocess.Popen([sys.executable, "-m", "meshlab.apps.whoami", "--port", str(port),
                                       "--name", "engine-test", *extra], stderr=subprocess.DEVNULL))
    try:
        for port in ports:
            assert eventually(lambda port=port: answers(f"http://127.0.0.1:{port}/"), 10), "the app did not start"
        yield tuple(f"http://127.0.0.1:{port}" for port in ports)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


def test_n_requests_at_c_connections(app):
    ok, _ = app
    result = load.run(ok + "/hello?x=1", engine="builtin", requests=200, concurrency=8, count_header="x-served-by")
    assert result.engine == "builtin" and result.ret_codes == {200: 200}
    assert result.header_counts == {"engine-test": 200}
    assert result.header(200, "x-served-by") == "engine-test"
    hist = result.durations
    assert hist.count == 200 and hist.min <= hist.percentile(50) <= hist.percentile(99) <= hist.max
    assert list(hist.percentiles) == list(load.PERCENTILES)
    assert sum(b.count for b in hist.buckets) == 200 and hist.buckets[-1].percent == 100
    assert result.num_threads == 8 and result.actual_qps > 0 and result.error_durations.count == 0
    assert load.LoadResult.from_fortio(json.loads(json.dumps(result.to_fortio()))) == result


def test_errors_are_counted_with_their_durations(app):
    _, broken = app
    result = load.run(broken + "/", engine="builtin", requests=20, concurrency=4)
    assert result.ret_codes == {500: 20} and result.ok == 0 and result.error_durations.count == 20


def test_fixed_qps_paces_the_requests(app):
    ok, _ = app
    result = load.run(ok + "/", engine="builtin", requests=21, concurrency=4, qps=100)
    assert result.count(200) == 21
    assert result.actual_duration >= 0.2  # the 21st request is due 0.2 s after the first


def test_duration_mode_stops_in_time(app):
    ok, _ = app
    result = load.run(ok + "/", engine="builtin", duration=0.3, qps=50, concurrency=2)
    assert 1 <= result.total <= 15 and result.count(200) == result.total and result.requested == "0.3s"


def test_nothing_listening_is_counted_not_raised():
    result = load.run(f"http://127.0.0.1:{free_port()}/", engine="builtin", requests=6, concurrency=2)
    assert result.ret_codes == {load.NO_RESPONSE: 6}
    assert result.error_kinds == {"ConnectionRefusedError": 6}
    assert "no response x 6" in result.codes_text()


def test_a_request_that_takes_too_long_times_out():
    with socket.socket() as silent:   # accepts connections and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        result = load.run(url, engine="builtin", requests=2, concurrency=2, timeout=0.2)
    assert result.ret_codes == {load.NO_RESPONSE: 2} and result.error_kinds == {"TimeoutError": 2}


# -- the HTTP/1.1 client's framing --------------------------------------------------

def _serve_once(responses: list[bytes]) -> tuple[int, threading.Thread]:
    """A server that answers each request on one connection with the next canned bytes."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def run() -> None:
        with listener:
            for raw in responses:
                conn, _ = listener.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(raw)
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread


def test_chunked_and_close_delimited_bodies_are_read_whole():
    port, thread = _serve_once([
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nx-a: 1\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        b"HTTP/1.0 503 Service Unavailable\r\nx-envoy-overloaded: true\r\n\r\nupstream overflow",
    ])

    async def exchange():
        connection = Connection(Target.parse(f"http://127.0.0.1:{port}/p?q=1"))
        request = connection.request_bytes("GET", {"x-test": "1"})
        assert request.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and b"x-test: 1" in request
        first = await connection.send(request)
        connection.close()  # the canned server answers one request per connection
        second = await connection.send(request)
        return first, second

    first, second = asyncio.run(exchange())
    thread.join(timeout=5)
    assert (first.status, first.body, first.headers["x-a"]) == (200, b"hello world", "1")
    assert (second.status, second.body, second.headers["x-envoy-overloaded"]) == (503, b"upstream overflow", "true")


# -- the command line ----------------------------------------------------------------

def test_meshlab_load_json_is_fortio_shaped(meshlab, app):
    ok, _ = app
    run = meshlab("load", ok + "/", "-n", "40", "-c", "4", "--json", "--engine", "builtin")
    assert run.code == 0, run.output
    data = run.json()
    assert data["RetCodes"] == {"200": 40} and data["NumThreads"] == 4 and data["Engine"] == "builtin"
    assert [p["Percentile"] for p in data["DurationHistogram"]["Percentiles"]] == [50, 75, 90, 99, 99.9]


def test_meshlab_load_text_shows_codes_percentiles_and_counts(meshlab, app):
    ok, broken = app
    run = meshlab("load", ok + "/", "-n", "30", "--count-header", "x-served-by", "--engine", "builtin")
    assert run.code == 0, run.output
    assert "Status codes: 200 x 30" in run.stdout and "p99.9" in run.stdout and "engine-test" in run.stdout
    run = meshlab("load", broken + "/", "-n", "5", "--engine", "builtin")
    assert run.code == 0 and "500 x 5" in run.stdout


def test_meshlab_load_explains_nothing_listening_and_bad_input(meshlab):
    run = meshlab("load", f"http://127.0.0.1:{free_port()}/", "-n", "3", "--engine", "builtin")
    assert run.code == 1 and "No request got an HTTP response" in run.output
    run = meshlab("load", "http://127.0.0.1:1/", "-t", "soon")
    assert run.code == 2 and "not a duration" in run.output and "Traceback" not in run.output
    run = meshlab("load", "http://127.0.0.1:1/", "-H", "no-colon")
    assert run.code == 2 and "not a header" in run.output
    run = meshlab("load", "not-a-url", "-n", "1")
    assert run.code == 2 and "cannot run this load" in run.output


def test_a_connection_closed_while_idle_is_reopened_and_garbage_is_a_counted_error():
    answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def run() -> None:
        with listener:
            conn, _ = listener.accept()      # answers, then closes the kept-alive connection
            conn.recv(65536)
            conn.sendall(answer)
            conn.close()
            conn, _ = listener.accept()      # the client comes back on a new connection
            with conn:
                conn.recv(65536)
                conn.sendall(answer)
            conn, _ = listener.accept()      # and this one is not HTTP
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH\r\n\r\n")
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{listener.getsockname()[1]}/"

    async def two_requests():
        connection = Connection(Target.parse(url))
        request = connection.request_bytes("GET", {})
        first = await connection.send(request)
        await asyncio.sleep(0.1)             # the server has closed it by now
        return first, await connection.send(request)

    first, second = asyncio.run(two_requests())
    assert (first.status, second.status, second.body) == (200, 200, b"ok")
    result = load.run(url, engine="builtin", requests=1, concurrency=1, timeout=5)
    thread.join(timeout=5)
    assert result.ret_codes == {load.NO_RESPONSE: 1} and result.error_kinds == {"Http1ProtocolError": 1}
