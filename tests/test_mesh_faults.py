"""The control plane's book of fault experiments (meshlab.mesh.faults): the admin API of
the mesh contract, its refusals (400 with a reason), expiry, and the pushes it asks for."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab.mesh import manifest
from meshlab.mesh.faults import Experiments

MESH = manifest.load(Path(__file__).resolve().parents[1] / "labs" / "11-mini-mesh" / "mesh.yaml")


def post(book: Experiments, **fields) -> tuple[int, dict]:
    return book.respond("POST", {}, json.dumps(fields).encode(), MESH)


def test_post_list_delete():
    book = Experiments()
    code, document = post(book, service="api", abort_percent=10.0)
    assert code == 200 and document == {"id": "fault-1"}
    code, listed = book.respond("GET", {}, b"", MESH)
    assert code == 200 and listed == [{"service": "api", "abort_percent": 10.0, "abort_status": 503,
                                       "delay_ms": None, "delay_percent": 100.0, "route": None,
                                       "expires_at": None, "id": "fault-1"}]
    assert post(book, service="web", delay_ms=2000)[0] == 200
    assert book.respond("DELETE", {"service": ["api"]}, b"", MESH) == (200, {"cleared": 1})
    assert [f.service for f in book.active()] == ["web"]
    assert book.respond("DELETE", {}, b"", MESH) == (200, {"cleared": 1})
    assert book.active() == ()


@pytest.mark.parametrize("fields, words", [
    ({"service": "nope", "abort_percent": 1}, "no service 'nope'"),
    ({"service": "db", "abort_percent": 1}, "tcp service"),
    ({"service": "api", "abort_percent": 150}, "abort_percent must be a number from 0 to 100"),
    ({"service": "api", "delay_ms": -5}, "delay_ms must be a whole number"),
    ({"service": "api", "delay_ms": 10, "delay_percent": "all"}, "delay_percent must be a number"),
    ({"service": "api"}, "needs abort_percent, delay_ms or both"),
    ({"service": "api", "abort_percent": 1, "abort_status": 99}, "abort_status"),
    ({"service": "api", "abort_percent": 1, "route": "orders"}, "path prefix"),
    ({"service": "api", "abort_percent": 1, "expires_at": "soon"}, "ISO 8601"),
    ({"service": "api", "abort_percent": 1, "colour": "red"}, "unknown fields ['colour']"),
])
def test_bad_experiments_are_400_with_a_reason(fields, words):
    book = Experiments()
    code, document = post(book, **fields)
    assert code == 400 and words in document["error"]
    assert book.active() == ()


def test_not_json_is_400():
    assert Experiments().respond("POST", {}, b"{", MESH)[0] == 400


def test_one_experiment_per_service_at_a_time():
    book = Experiments()
    post(book, service="api", abort_percent=10.0)
    code, document = post(book, service="api", delay_ms=100)
    assert code == 400 and "already has an experiment (fault-1)" in document["error"]


def test_an_experiment_ends_by_itself_and_asks_for_a_push():
    async def scenario() -> list[float]:
        book = Experiments()
        pushes: list[float] = []
        task = asyncio.create_task(book.expire_forever(lambda: pushes.append(asyncio.get_running_loop().time())))
        await asyncio.sleep(0.05)
        ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(milliseconds=300)
        assert post(book, service="api", abort_percent=1, expires_at=ends.isoformat())[0] == 200
        post(book, service="web", abort_percent=1)          # no end: stays
        started = asyncio.get_running_loop().time()
        await asyncio.sleep(0.6)
        task.cancel()
        assert [f.service for f in book.active()] == ["web"]
        return [t - started for t in pushes]

    pushes = asyncio.run(scenario())
    assert len(pushes) == 1 and 0.2 < pushes[0] < 0.5


def test_the_control_plane_takes_an_experiment_without_importing_httpx():
    # It only reads experiments; httpx, which only `meshlab chaos` sends them with, held
    # its event loop for 80-110 ms at the first one when meshlab.chaos imported it.
    probe = ("import json, sys\n"
             "from meshlab.mesh.control import Experiments\n"
             "from test_mesh_faults import MESH, post\n"
             "assert post(Experiments(), service='api', abort_percent=10.0)[0] == 200\n"
             "print(json.dumps(sorted(sys.modules)))\n")
    tests = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-c", probe], cwd=tests, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")])})
    assert proc.returncode == 0, proc.stderr
    modules = set(json.loads(proc.stdout.splitlines()[-1]))
    assert "meshlab.chaos" in modules and "httpx" not in modules
