"""Lab 01 graded for real: the starter fails every check, the solution passes them
all, configurations that only look right fail the check they should, and unusual
correct ones pass."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.lab_runs

CHECKS = {
    "test_greeting_through_envoy", "test_listener_on_loopback", "test_injected_header", "test_server_is_envoy",
    "test_upstream_service_time", "test_cluster_counters", "test_503_when_app_down",
}


def test_starter_fails_every_check(grade):
    code, checks, data = grade(1, base="starter")
    assert code == 1 and data["status"] == "fail"
    assert set(checks) == CHECKS
    failing = {cid for cid, c in checks.items() if c["status"] == "fail"}
    assert failing == CHECKS
    for check in checks.values():
        assert check["message"] and check["expected"] and check["received"], check
        assert check["hint"], check


def test_solution_passes_every_check(grade):
    code, checks, data = grade(1, base="solution")
    assert code == 0, data
    assert {cid for cid, c in checks.items() if c["status"] == "pass"} == CHECKS
