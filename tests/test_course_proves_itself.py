"""Every lab of course.yaml proves itself, graded for real through the CLI: its starter
fails every check, each with its reason (EXPECTED, RECEIVED, a hint), and its solution
passes every check. Which checks a lab has is the checker's business: the ids are
collected from its module, so a new lab or a new check is covered without a word here.

The labs' own test modules (tests/test_labNN_*.py) grade the variants in between:
wrong answers that must fail one check, unusual right ones that must pass.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT
from lab_variants import passes

from meshlab.course import Lab, load_course

pytestmark = pytest.mark.lab_runs

COURSE = load_course(ROOT)
LABS = pytest.mark.parametrize("lab", COURSE.labs, ids=[lab.slug for lab in COURSE.labs])

# A check may hold on the starter only when it guards against a mistake the unfinished
# starter cannot make yet; each such check is named here with its reason. None does
# today: lab 10's panic check first asks that the module acted on a text body.
HOLDS_ON_STARTER: dict[str, set[str]] = {}

# What a starter's scorecard must say, beyond failing: (check, field, words in it).
STARTER_SAYS = {
    "02-canary": [("test_weighted_split", "message", "canary got none"),
                  ("test_header_route", "message", "went to v1"),
                  ("test_mirroring", "message", "no copy")],
    "03-resilience": [("test_breaker_refuses_excess", "message", "they all waited"),
                      ("test_outlier_ejection", "message", "never ejected"),
                      ("test_route_timeout", "received", "200 x 5 after a median 2.")],
    "04-mtls": [("test_sidecars_hold_svids", "message", "holds no certificate"),
                ("test_no_certificate_rejected", "message", "does not speak TLS")],
    "05-lua": [("test_bucket_follows_spec", "message", "no x-user-bucket header at all"),
               ("test_no_lua_errors", "message", "does nothing yet")],
    "06-xds": [("test_listener_arrives_over_xds", "message", "no active listener"),
               ("test_listener_arrives_over_xds", "received", "version 'v1', no resources")],
    "08-observability": [
        ("test_prometheus_scrapes_every_sidecar", "message", "cannot scrape 3 of the 3 sidecars"),
        ("test_prometheus_scrapes_every_sidecar", "received", "connection refused"),
        ("test_every_request_is_traced", "message", "no sidecar sent a span"),
        ("test_request_rate", "message", "has no query for request_rate")],
    "09-rate-limit": [("test_global_limit", "message", "did not ask the rate-limit service")],
    "10-wasm": [("test_over_the_limit", "received", "4200 readable card numbers"),
                ("test_loaded_without_panic", "message", "left a text body as the app sent it")],
    "11-mini-mesh": [("test_sidecars_in_sync", "message", "has listeners"),
                     ("test_plaintext_refused", "message", "proves nothing")],
}


def checker_ids(lab: Lab) -> frozenset[str]:
    """The ids of the checks in LAB's checker module, as pytest collects them."""
    return _collected(lab.checks)


@functools.cache
def _collected(module: Path) -> frozenset[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
         "--rootdir", str(ROOT), str(module)],
        cwd=ROOT, env={**os.environ, "MESHLAB_ROOT": str(ROOT)}, capture_output=True, text=True, timeout=120)
    ids = frozenset(line.split("::", 1)[1] for line in proc.stdout.splitlines() if "::" in line)
    assert proc.returncode == 0 and ids, proc.stdout + proc.stderr
    return ids


@LABS
def test_the_starter_fails_every_check_with_its_reason(grade, lab):
    code, checks, data = grade(lab.number, base="starter")
    assert code == 1 and data["status"] == "fail", data.get("message") or data
    assert set(checks) == checker_ids(lab)
    holding = {cid for cid, c in checks.items() if c["status"] == "pass"}
    assert holding == HOLDS_ON_STARTER.get(lab.slug, set()), holding
    # Checks of another runtime's part (lab 01's Docker steps) are skipped here, saying
    # where they are graded; the Docker tests grade them there.
    skipped = {cid for cid, c in checks.items() if c["status"] == "skip"}
    for cid in skipped:
        assert "--runtime docker" in checks[cid]["message"], checks[cid]
    for cid, check in checks.items():
        if cid not in holding | skipped:
            assert check["status"] == "fail", check
            assert check["message"] and check["expected"] and check["received"] and check["hint"], check
    for cid, field, words in STARTER_SAYS.get(lab.slug, []):
        assert words in (checks[cid][field] or ""), checks[cid]


@LABS
def test_the_solution_passes_every_check(grade, lab):
    checks = passes(grade, lab.number)
    assert set(checks) == checker_ids(lab)
    if lab.slug == "05-lua":  # the one check that reports a measurement as a note
        notes = checks["test_filter_latency"]["notes"]
        assert len(notes) == 1 and "with the Lua filter p50" in notes[0] and "without it p50" in notes[0], notes
