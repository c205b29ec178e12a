"""Lab 03 — Resilience: circuit breaker, outlier detection, retries, timeout, faults.

Each step has its own route and cluster, so each is graded on its own: a learner who
finished steps 1-3 sees them pass. Every verdict comes from what Envoy reports (its
counters, /clusters, the response flags and durations of its JSON access log) and is
cross-checked by what clients saw and what reached the apps.

The five steps' traffic runs at once (the `traffic` fixture), so the lab takes as long
as its slowest step (about a second: the breaker's admitted 0.5 s requests, up to two one
after the other, the 467 fault requests and their 0.5 s tail), not the sum. They cannot mix:
each step has a route, a cluster and an app of its own, and each check reads only its
cluster's counters, its path's access-log entries and its app's journal (the fault
filter's counters are the listener's, and only /faulty injects faults).
"""

from __future__ import annotations

import re
import statistics
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator

import pytest

from meshlab import load
from meshlab.grading import check, fail
from meshlab.grading.accesslog import (
    AccessLog, count_flags, describe_flags, duration_s, require_fields, with_flag,
)
from meshlab.grading.stats import expect_share, sample_size
from meshlab.grading.upstreams import clusters_reaching

pytestmark = pytest.mark.lab("03-resilience")

BROKEN = "pool-3"         # the instance of the pool that answers 500

SLOW_S = 0.5             # the slow service's delay (lab.yaml)
OVERLOAD = 50            # concurrent requests against it
MOST_ADMITTED = 5        # with limits of 1, one or two get through (one in flight, one pending)
# The admitted requests (one or two) take at most 2 x SLOW_S; requests queued behind one
# connection (no pending limit) would take up to 50 x SLOW_S: clients give up in between.
OVERLOAD_WAIT_S = 2.5
RETRIED = 30             # requests to the flaky service
RETRYING = 3             # at once: Envoy allows 3 concurrent retries per cluster by default
TIMED = 5                # requests to the 2 s service, with a 0.5 s route timeout
# ... one every 50 ms: on a busy machine Envoy's duration of a timed-out request can read
# some ms short of the timeout (0.474 s for 0.5 s was seen, all requests of one moment
# alike), so the median is taken over moments apart.
TIMED_QPS = 20
TIMEOUT_S, TIMEOUT_BAND = 0.5, (0.45, 0.8)   # Envoy's own durations; 1 s must fail
FAULT_SHARE = 0.10
FAULT_DELAY_S, FAULT_DELAY_BAND = 0.5, (0.45, 1.0)   # Envoy's own durations; 0.05 s must fail
# Aborts and delays are told apart from none, 0.1 % (denominator TEN_THOUSAND), 1 %,
# half and all, each with certainty 1 - 1e-6.
FAULT_REQUESTS = sample_size(FAULT_SHARE, (0.0, 0.001, 0.01, 0.5, 1.0))
FAULT_CONCURRENCY = 100  # as fast as 100 connections go: the delayed hold theirs, the rest go on

BREAKER_HINT = ("give cluster `slow` circuit_breakers: thresholds with max_connections: 1, "
                "max_pending_requests: 1, max_requests: 1")
OUTLIER_HINT = ("give cluster `pool` outlier_detection with consecutive_5xx: 3, interval: 1s, "
                "base_ejection_time: 30s and max_ejection_percent: 50 (the default, 10 %, is less than one host "
                "of three)")
RETRY_HINT = "on the /flaky route: retry_policy: {retry_on: 5xx, num_retries: 2}"
ATTEMPTS_HINT = "set include_attempt_count_in_response: true on the virtual host"
TIMEOUT_HINT = "on the /stalled route: timeout: 0.5s"
FAULT_HINT = ("on the /faulty route, typed_per_filter_config for envoy.filters.http.fault: abort http_status 503 "
              "and delay fixed_delay 0.5s, each with percentage numerator 10, denominator HUNDRED")


def clusters_of(lab, service: str, hint: str) -> list[str]:
    """The clusters that have SERVICE (by its port in the manifest) as an endpoint."""
    port = lab.port(service)
    return clusters_reaching(lab.envoy(), port, what=f"the service on port {port}", hint=hint)


def envoy_url(lab, path: str) -> str:
    return lab.url("envoy", "listener", path)


def counter(delta, clusters: list[str], name: str) -> int:
    """The change of cluster.<C>.NAME summed over CLUSTERS (exact names)."""
    return sum(delta[f"cluster.{c}.{name}"] for c in clusters)


def access_log(lab) -> AccessLog:
    return AccessLog(lab.runtime.access_log_path("envoy"))


def on_path(prefix: str):
    return lambda entry: str(entry.get("path", "")).startswith(prefix)


@dataclass
class Run:
    """One load run: what clients saw, Envoy's counter changes and its log entries."""

    result: load.LoadResult
    delta: object
    entries: list[dict]
    clusters: list[str]
    reached: int = 0        # requests the app behind the route received


def loaded(lab, path: str, service: str, hint: str, *, log_timeout: float = 6.0, **options) -> Run:
    clusters = clusters_of(lab, service, hint)
    admin, log = lab.envoy(), access_log(lab)
    mark, position = log.position(), lab.journal_position(service)
    with admin.delta(r"^(cluster|http)\.") as delta:
        result = load.run(envoy_url(lab, path), engine="builtin", **options)
    entries = log.wait(mark, result.total, where=on_path(path), timeout=log_timeout)
    require_fields(entries)
    return Run(result, delta, entries, clusters, reached=len(lab.journal(service, since=position)))


@pytest.fixture(scope="module")
def traffic(lab) -> Iterator[dict[str, Future]]:
    """Every step's traffic, started together; a check waits for its own (`.result()`
    returns it, or raises the step's failure)."""
    lab.envoy()  # the admin client, made once here: the threads share it
    with ThreadPoolExecutor(max_workers=5, thread_name_prefix="lab03-step") as pool:
        yield {
            "overload": pool.submit(loaded, lab, "/slow", "slow", BREAKER_HINT, requests=OVERLOAD,
                                    concurrency=OVERLOAD, timeout=OVERLOAD_WAIT_S),
            "ejection": pool.submit(eject_broken_instance, lab),
            "retried": pool.submit(loaded, lab, "/flaky", "flaky", RETRY_HINT, requests=RETRIED,
                                   concurrency=RETRYING, timeout=5.0, count_header="x-envoy-attempt-count"),
            "timed": pool.submit(loaded, lab, "/stalled", "stalled", TIMEOUT_HINT, requests=TIMED,
                                 concurrency=TIMED, qps=TIMED_QPS, timeout=5.0),
            "faulted": pool.submit(loaded, lab, "/faulty", "ratings", FAULT_HINT, requests=FAULT_REQUESTS,
                                   concurrency=FAULT_CONCURRENCY, timeout=6.0, log_timeout=8.0),
        }


# -- step 1: circuit breaker -------------------------------------------------------

@pytest.fixture(scope="module")
def overload(traffic) -> Run:
    return traffic["overload"].result()


def refused(run: Run) -> int:
    if run.result.count(503) == 0:
        waited = run.result.durations
        fail(f"none of {OVERLOAD} concurrent requests was refused: they all waited for the slow service",
             expected="Envoy to admit a few and answer the rest 503 at once",
             received=f"{run.result.codes_text()}; median {waited.percentile(50):.2f} s",
             hint=BREAKER_HINT)
    return run.result.count(503)


@check("Step 1: beyond the circuit breaker's limits, Envoy answers 503 with x-envoy-overloaded", hint=BREAKER_HINT)
def test_breaker_refuses_excess(overload):
    result = overload.result
    if result.count(load.NO_RESPONSE):
        fail(f"{result.count(load.NO_RESPONSE)} requests were still waiting after {OVERLOAD_WAIT_S:g} s",
             expected="no request queued for long: the excess refused at once",
             received=result.codes_text(),
             hint="max_pending_requests: 1 keeps the queue short; without it requests wait for a connection")
    refused(overload)
    if result.header(503, "x-envoy-overloaded") != "true":
        fail("the 503s do not come from the circuit breaker",
             expected="x-envoy-overloaded: true on the 503 responses",
             received=f"headers of a 503: {result.sample_headers.get(503)}", hint=BREAKER_HINT)
    if overload.reached > MOST_ADMITTED:
        fail(f"{overload.reached} of {OVERLOAD} requests reached the slow service",
             expected=f"at most {MOST_ADMITTED}: limits of 1 admit one in flight and one waiting",
             received=f"{overload.reached} reached it; {result.codes_text()}", hint=BREAKER_HINT)


# Envoy counts a refusal by the pending-request limit (or the connection limit that
# makes requests wait) as pending_overflow, and one by max_requests as active_overflow.
OVERFLOWS = ("upstream_rq_pending_overflow", "upstream_rq_active_overflow")


@check("Step 1: Envoy counted each refusal (upstream_rq_*_overflow, flag UO) as clients saw it", hint=BREAKER_HINT)
def test_breaker_counters(overload):
    seen = refused(overload)
    by_counter = {name: counter(overload.delta, overload.clusters, name) for name in OVERFLOWS}
    overflow = sum(by_counter.values())
    flagged = len(with_flag(overload.entries, "UO"))
    if not overflow == flagged == seen:
        fail("Envoy's count of refusals differs from the 503s clients received",
             expected=f"cluster.{overload.clusters[0]}.upstream_rq_pending_overflow and active_overflow to grow by "
                      f"{seen} together, and {seen} access-log entries flagged UO",
             received=", ".join(f"{name} +{n}" for name, n in by_counter.items()) +
                      f"; {flagged} flagged UO; {seen} x 503 (flags: {describe_flags(count_flags(overload.entries))})",
             hint="the 503s must come from the circuit breaker of the slow service's cluster")


@check("Step 1: refused requests fail fast, far sooner than the slow service's 0.5 s", hint=BREAKER_HINT)
def test_breaker_fails_fast(overload):
    refused(overload)
    durations = [duration_s(e) for e in with_flag(overload.entries, "UO")]
    slowest = max(durations, default=0.0)
    client = overload.result.error_durations.percentile(50)
    if slowest >= SLOW_S / 2 or client >= SLOW_S:
        fail("refused requests were not answered at once",
             expected=f"Envoy's duration of each refused request under {SLOW_S / 2:g} s (the slow service takes "
                      f"{SLOW_S:g} s)",
             received=f"slowest refusal {slowest:.3f} s by Envoy's clock; median {client:.3f} s at the client",
             hint="refusals come from the circuit breaker's limits, not from a timeout")


# -- step 2: outlier detection -------------------------------------------------------

def bad_host(lab, clusters: list[str]) -> tuple[dict[str, int], list[str]]:
    for host in lab.envoy().hosts():
        if host.cluster in clusters and host.port == lab.port(BROKEN):
            return host.stats, list(host.health_flags)
    return {}, []


def eject_broken_instance(lab) -> None:
    """Step 2's traffic and verdict: requests to /pool until the broken instance is
    ejected, then 30 that must avoid it (fails with the reason)."""
    clusters = clusters_of(lab, BROKEN, OUTLIER_HINT)
    admin = lab.envoy()
    errors = 0
    with admin.delta(r"^cluster\.") as delta:
        _, flags = bad_host(lab, clusters)
        already = "failed_outlier_check" in flags   # ejected by an earlier check of a running lab
        for _ in range(60):
            if already or "failed_outlier_check" in flags:
                break
            for _ in range(3):  # one round over the three instances
                errors += lab.get(envoy_url(lab, "/pool"), hint=OUTLIER_HINT).status_code >= 500
            _, flags = bad_host(lab, clusters)
    ejected = counter(delta, clusters, "outlier_detection.ejections_enforced_total")
    if "failed_outlier_check" not in flags:
        fail(f"the instance on port {lab.port(BROKEN)} was never ejected",
             expected="its /clusters health flags to include failed_outlier_check",
             received=f"{errors} of {3 * 60} requests answered 5xx; its flags: {', '.join(flags) or 'none'}; "
                      f"ejections_enforced_total +{ejected}", hint=OUTLIER_HINT)
    if not already and ejected < 1:
        fail("Envoy's counters show no enforced ejection",
             expected=f"cluster.{clusters[0]}.outlier_detection.ejections_enforced_total to grow",
             received=f"changes: {delta.changed()}", hint=OUTLIER_HINT)
    position = lab.journal_position(BROKEN)
    after = [lab.get(envoy_url(lab, "/pool")).status_code for _ in range(30)]
    leaked = len(lab.journal(BROKEN, since=position))
    if leaked or any(code != 200 for code in after):
        fail("requests still reach the ejected instance",
             expected="30 of 30 requests answered 200 by the two healthy instances",
             received=f"{after.count(200)} x 200; the broken instance received {leaked}", hint=OUTLIER_HINT)


@check("Step 2: outlier detection ejects the instance that answers 500, and traffic avoids it",
       hint=OUTLIER_HINT)
def test_outlier_ejection(traffic):
    traffic["ejection"].result()


# -- step 3: retries ---------------------------------------------------------------

# The conditions Envoy knows in retry_on (HTTP and gRPC). Any other word passes
# validation and is ignored: `5XX` means no retries at all.
RETRY_CONDITIONS = {
    "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "envoy-ratelimited",
    "retriable-4xx", "refused-stream", "retriable-status-codes", "retriable-headers",
    "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
    "unavailable",
}


def retry_hint(lab) -> str:
    """RETRY_HINT, preceded by the words of retry_on Envoy ignores (from its config_dump)."""
    ignored: list[str] = []

    def visit(node) -> None:
        if isinstance(node, dict):
            words = str((node.get("retry_policy") or {}).get("retry_on", "")).split(",")
            ignored.extend(w.strip() for w in words if w.strip() and w.strip() not in RETRY_CONDITIONS)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(lab.envoy().config_dump())
    if not ignored:
        return RETRY_HINT
    return (f"retry_on {', '.join(repr(w) for w in ignored)} is no condition Envoy knows: it ignores it and does not "
            f"retry (conditions are lowercase, such as 5xx, gateway-error, connect-failure); " + RETRY_HINT)

@pytest.fixture(scope="module")
def retried(traffic) -> Run:
    return traffic["retried"].result()


@check("Step 3: retries turn a service that fails 2 of 3 attempts into all 200s", hint=RETRY_HINT)
def test_retries_succeed(lab, retried):
    result = retried.result
    if result.count(200) != RETRIED:
        overflow = counter(retried.delta, retried.clusters, "upstream_rq_retry_overflow")
        if overflow:
            advice = (f"; {overflow} retries were refused by the cluster's retry budget (circuit_breakers "
                      f"max_retries): keep its default of 3 or more")
        elif retried.reached > RETRIED:
            advice = " (two retries are needed: num_retries counts retries, not attempts)"
        else:
            advice = ""
        fail(f"{RETRIED - result.count(200)} of {RETRIED} requests to /flaky failed",
             expected=f"{RETRIED} x 200: each request succeeds on its third attempt",
             received=f"{result.codes_text()}; the flaky service received {retried.reached} attempts",
             hint=retry_hint(lab) + advice)
    retries = counter(retried.delta, retried.clusters, "upstream_rq_retry")
    succeeded = counter(retried.delta, retried.clusters, "upstream_rq_retry_success")
    if (retries, succeeded, retried.reached) != (2 * RETRIED, RETRIED, 3 * RETRIED):
        fail("Envoy's retry counters do not match two retries per request",
             expected=f"upstream_rq_retry +{2 * RETRIED}, upstream_rq_retry_success +{RETRIED}, "
                      f"{3 * RETRIED} attempts at the service",
             received=f"+{retries}, +{succeeded}, {retried.reached} attempts", hint=RETRY_HINT)


@check("Step 3: clients see how many attempts it took (x-envoy-attempt-count: 3)", hint=ATTEMPTS_HINT)
def test_attempt_count_visible(lab, retried):
    counts = retried.result.header_counts
    if counts.get("3") != RETRIED:
        shown = ", ".join(f"{n} x {v!r}" if v else f"{n} without it" for v, n in counts.items())
        fail("the responses do not all say x-envoy-attempt-count: 3",
             expected=f"x-envoy-attempt-count: 3 on all {RETRIED} responses",
             received=shown or "no responses",
             hint=ATTEMPTS_HINT if "" in counts else retry_hint(lab))


# -- step 4: timeout ---------------------------------------------------------------

@check("Step 4: the route gives up on the 2 s service after 0.5 s with 504 (Envoy's clock)", hint=TIMEOUT_HINT)
def test_route_timeout(traffic):
    run = traffic["timed"].result()
    if run.result.count(504) != TIMED:
        fail(f"{run.result.count(504)} of {TIMED} requests to /stalled timed out",
             expected=f"{TIMED} x 504 after about {TIMEOUT_S} s",
             received=f"{run.result.codes_text()} after a median {run.result.durations.percentile(50):.2f} s",
             hint=TIMEOUT_HINT)
    timed_out = with_flag(run.entries, "UT")
    median = statistics.median(duration_s(e) for e in run.entries)
    counted = (counter(run.delta, run.clusters, "upstream_rq_timeout")
               + counter(run.delta, run.clusters, "upstream_rq_per_try_timeout"))
    low, high = TIMEOUT_BAND
    if len(timed_out) != TIMED or counted < TIMED or not low <= median <= high:
        fail("Envoy did not time the requests out after 0.5 s",
             expected=f"{TIMED} entries flagged UT, taking {low}-{high} s by Envoy's clock; upstream_rq_timeout +{TIMED}",
             received=f"{len(timed_out)} flagged UT, median {median:.3f} s; timeouts counted +{counted}",
             hint=TIMEOUT_HINT)


# -- step 5: fault injection -------------------------------------------------------

@pytest.fixture(scope="module")
def faulted(traffic) -> Run:
    return traffic["faulted"].result()


def fault_counter(run: Run, name: str) -> int:
    """http.<stat_prefix>.fault.NAME, whatever the connection manager's stat_prefix."""
    names = {n for n in (*run.delta.before, *run.delta.after) if re.fullmatch(rf"http\.[^.]+\.fault\.{name}", n)}
    return sum(run.delta[n] for n in names)


@check("Step 5: 10 % of /faulty is aborted with 503 by the fault filter (exact test, counters, flag FI)",
       hint=FAULT_HINT)
def test_fault_aborts(faulted):
    injected = fault_counter(faulted, "aborts_injected")
    seen, flagged = faulted.result.count(503), len(with_flag(faulted.entries, "FI"))
    if injected == 0:
        fail(f"no request of {FAULT_REQUESTS} to /faulty was aborted",
             expected="about 10 % answered 503 by the fault filter",
             received=f"{faulted.result.codes_text()}; fault.aborts_injected +0", hint=FAULT_HINT)
    if not injected == seen == flagged:
        fail("the fault filter's aborts, the 503s and the FI flags disagree",
             expected="fault.aborts_injected = 503s received = access-log entries flagged FI",
             received=f"+{injected}, {seen} x 503, {flagged} flagged FI ({faulted.result.codes_text()})",
             hint="abort with http_status: 503, on the /faulty route only")
    expect_share(injected, FAULT_REQUESTS, FAULT_SHARE, what="were aborted by the fault filter", hint=FAULT_HINT)


@check("Step 5: 10 % of /faulty is delayed by 0.5 s (exact test, counters, flag DI with Envoy's durations)",
       hint=FAULT_HINT)
def test_fault_delays(faulted):
    injected = fault_counter(faulted, "delays_injected")
    delayed = with_flag(faulted.entries, "DI")
    if injected == 0:
        fail(f"no request of {FAULT_REQUESTS} to /faulty was delayed",
             expected=f"about 10 % delayed by {FAULT_DELAY_S:g} s",
             received=f"fault.delays_injected +0; median {faulted.result.durations.percentile(50) * 1000:.0f} ms",
             hint=FAULT_HINT)
    if injected != len(delayed):
        fail("the fault filter's delays and the DI flags disagree",
             expected="fault.delays_injected = access-log entries flagged DI",
             received=f"+{injected}, {len(delayed)} flagged DI", hint=FAULT_HINT)
    median = statistics.median(duration_s(e) for e in delayed)
    low, high = FAULT_DELAY_BAND
    if not low <= median <= high:
        fail(f"delayed requests took {median:.2f} s, not {FAULT_DELAY_S:g} s",
             expected=f"Envoy's duration of delayed requests about {FAULT_DELAY_S:g} s ({low}-{high} s)",
             received=f"median {median:.3f} s over {len(delayed)} delayed requests",
             hint=f"fixed_delay: {FAULT_DELAY_S:g}s (a Duration: seconds with an s)")
    expect_share(injected, FAULT_REQUESTS, FAULT_SHARE, what="were delayed by the fault filter", hint=FAULT_HINT)
