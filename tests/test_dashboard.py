"""`meshlab mesh dashboard`: the page in a real headless Chromium (Debian's, driven by
Playwright) with no network but loopback, over lab 11's solved mesh with known traffic
(20 requests/s, then half of the calls to api aborted by a fault experiment): the edges
that traffic makes, their rates and their colours; the control plane's table; the
vendored libraries are the ones recorded, and the page names no other host."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from meshlab import isolation

ROOT = Path(__file__).resolve().parents[1]
STATIC = ROOT / "src" / "meshlab" / "dashboard" / "static"
GREEN, RED = "rgb(46,125,50)", "rgb(198,40,40)"


def test_vendored_libraries_are_the_recorded_ones():
    table = (STATIC / "vendor" / "VENDORED.md").read_text()
    rows = re.findall(r"^\| (\S+\.js) \| .*? \| ([\d.]+) \| MIT .*? \| ([0-9a-f]{64}) \|$", table, re.M)
    assert {name for name, _, _ in rows} == {"cytoscape.min.js", "chart.umd.min.js"}
    for name, version, digest in rows:
        data = (STATIC / "vendor" / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == digest, name
        assert version.encode() in data[:2000] or version.encode() in data, name


def test_the_page_names_no_other_host():
    for file in STATIC.glob("*.*"):
        assert not re.search(r"https?://", file.read_text()), file


def test_without_a_running_mesh_it_is_exit_2(cli):
    run = cli("mesh", "dashboard", "--no-browser")
    assert run.code == 2 and "is not up" in run.stderr and "meshlab mesh up" in run.stderr


@pytest.mark.lab_runs
def test_the_page_shows_the_traffic_in_chromium(lab_copy, tmp_path):
    if not isolation.available():
        pytest.skip("needs a network namespace of its own (root or unprivileged user namespaces)")
    if shutil.which("prometheus") is None or not Path("/usr/bin/chromium").exists():
        pytest.skip("needs Debian's prometheus and chromium (.ci/run installs them)")
    pytest.importorskip("playwright")
    folder = lab_copy(11)
    out = tmp_path / "out"
    proc = subprocess.run(isolation.wrap([sys.executable, str(ROOT / "tests" / "dashboard_run.py"), str(folder),
                                          str(out)]), capture_output=True, text=True, timeout=400, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    result = json.loads((out / "result.json").read_text())

    steady = {e["id"]: e for e in result["steady"]}
    assert set(steady) == {"web->api", "api->db"}, steady          # the calls the traffic makes, no others
    assert 18 <= steady["web->api"]["rps"] <= 22                     # 20 requests/s, paced
    assert steady["web->api"]["health"] == "ok" and steady["web->api"]["drawn"] == GREEN
    assert steady["web->api"]["p99_ms"] and steady["web->api"]["p99_ms"] < 1000
    assert steady["api->db"]["protocol"] == "tcp" and steady["api->db"]["drawn"] == GREEN

    aborting = {e["id"]: e for e in result["aborting"]}
    assert aborting["web->api"]["health"] == "failing" and aborting["web->api"]["drawn"] == RED
    assert 0.3 < aborting["web->api"]["error_ratio"] < 0.7         # 50 % aborted
    assert aborting["api->db"]["drawn"] == GREEN                    # the errors are on the right edge
    assert sum(result["envoy_web_api"].values()) > 0                # and Envoy injected them

    rows = {row["edge"]: row for row in result["table"]}
    assert rows["web->api"]["health"] == "failing" and rows["web->api"]["cells"][2].endswith("%")
    assert result["status_rows"] == 4                               # one row per sidecar
    assert result["chart_services"] == ["api"]                      # the one service called through the mesh
    assert result["failed_requests"] == []                          # nothing from outside this machine
    assert (out / "dashboard.png").stat().st_size > 20_000
