"""Lab 03 graded for real: setups that only look right fail the check they should (a
breaker that queues or admits too much, outlier detection that never ejects or only
detects, too few retries or retries on the wrong condition, a 1 s or an idle timeout,
faults out of ten thousand, aborts with 500, millisecond delays), and unusual correct
ones pass. tests/test_course_proves_itself.py grades the starter and the solution."""

from __future__ import annotations

from pathlib import Path

import pytest
from lab_variants import fails_only, passes


pytestmark = pytest.mark.lab_runs

SOLUTION = (Path(__file__).resolve().parents[1] / "solutions" / "03-resilience" / "envoy.yaml").read_text()
EVERY_CHECK = {
    "test_breaker_refuses_excess", "test_breaker_counters", "test_breaker_fails_fast", "test_outlier_ejection",
    "test_retries_succeed", "test_attempt_count_visible", "test_route_timeout", "test_fault_aborts",
    "test_fault_delays",
}
BREAKER = """      - max_connections: 1
        max_pending_requests: 1
        max_requests: 1
"""
OUTLIER = """      consecutive_5xx: 3
      interval: 1s
      base_ejection_time: 30s
      max_ejection_percent: 50
"""
RETRY = "retry_policy: { retry_on: 5xx, num_retries: 2 }"
ATTEMPTS = "include_attempt_count_in_response: true"
TIMEOUT = "route: { cluster: stalled, timeout: 0.5s }"
ABORT = """                      http_status: 503
                      percentage: { numerator: 10, denominator: HUNDRED }"""
DELAY = """                      fixed_delay: 0.5s
                      percentage: { numerator: 10, denominator: HUNDRED }"""


def variant(**changes: str) -> dict[str, str]:
    """The solution with some of its parts (BREAKER, OUTLIER, ...) replaced."""
    text = SOLUTION
    for name, new in changes.items():
        old = globals()[name]
        assert text.count(old) == 1, name
        text = text.replace(old, new)
    return {"envoy.yaml": text}


def test_queueing_breaker_no_ejection_room_one_retry_slow_timeout_rare_faults_fail(grade):
    checks = fails_only(grade, 3, variant(
        BREAKER="      - max_connections: 1\n",
        OUTLIER=OUTLIER.replace("      max_ejection_percent: 50\n", ""),
        RETRY="retry_policy: { retry_on: 5xx, num_retries: 1 }",
        ATTEMPTS="include_request_attempt_count: true",
        TIMEOUT="route: { cluster: stalled, timeout: 1s }",
        ABORT=ABORT.replace("HUNDRED", "TEN_THOUSAND"),
        DELAY=DELAY.replace("HUNDRED", "TEN_THOUSAND"),
    ), EVERY_CHECK)
    assert "still waiting" in checks["test_breaker_refuses_excess"]["message"]
    assert "max_ejection_percent" in checks["test_outlier_ejection"]["hint"]
    assert "num_retries counts retries" in checks["test_retries_succeed"]["hint"]
    assert "did not time the requests out after 0.5 s" in checks["test_route_timeout"]["message"]


def test_loose_breaker_unenforced_ejection_wrong_retry_condition_idle_timeout_500s_short_delays_fail(grade):
    checks = fails_only(grade, 3, variant(
        BREAKER=BREAKER.replace(": 1", ": 10"),
        OUTLIER=OUTLIER + "      enforcing_consecutive_5xx: 0\n",
        RETRY="retry_policy: { retry_on: connect-failure, num_retries: 2 }",
        TIMEOUT="route: { cluster: stalled, idle_timeout: 0.5s }",
        ABORT=ABORT.replace("503", "500"),
        DELAY=DELAY.replace("0.5s", "0.05s"),
    ), EVERY_CHECK - {"test_breaker_counters", "test_breaker_fails_fast"})
    assert "reached the slow service" in checks["test_breaker_refuses_excess"]["message"]
    assert "not 0.5 s" in checks["test_fault_delays"]["message"]  # 0.05 s and the upstream's time


def test_unusual_correct_configurations_pass(grade):
    passes(grade, 3, variant(
        BREAKER="      - max_requests: 1\n",
        OUTLIER="      max_ejection_percent: 100\n",
        RETRY="retry_policy: { retry_on: retriable-status-codes, retriable_status_codes: [503], num_retries: 3 }",
        TIMEOUT="route: { cluster: stalled, timeout: 0.500s }",
        ABORT=ABORT.replace("numerator: 10, denominator: HUNDRED", "numerator: 100000, denominator: MILLION"),
        DELAY=DELAY.replace("0.5s", "0.500s"),
    ))


def test_a_retry_condition_envoy_ignores_is_named(grade):
    """`5XX` passes validation, and Envoy ignores it: no retries. The failing checks name it."""
    checks = fails_only(grade, 3, variant(RETRY="retry_policy: { retry_on: 5XX, num_retries: 2 }"),
                        {"test_retries_succeed", "test_attempt_count_visible"})
    for cid in ("test_retries_succeed", "test_attempt_count_visible"):
        assert "retry_on '5XX'" in checks[cid]["hint"] and "5xx" in checks[cid]["hint"], checks[cid]["hint"]


def test_a_delay_longer_than_asked_fails_only_its_check(grade):
    """Delays of 2 s are counted and flagged like the right ones: only Envoy's durations tell."""
    checks = fails_only(grade, 3, variant(DELAY=DELAY.replace("0.5s", "2s")), {"test_fault_delays"})
    assert "took 2.0" in checks["test_fault_delays"]["message"], checks["test_fault_delays"]["message"]
