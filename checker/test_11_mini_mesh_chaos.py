"""Lab 11 — Mini-Mesh, chaos: fault experiments asked of the learner's control plane
through its admin API (POST/DELETE /faults, what `meshlab chaos` sends) reach the
sidecars as Envoy's fault filter, over xDS, without a restart.

Every check sends real traffic from inside web's pod (web -> api -> db) and decides from
what the sidecars count (`fault.aborts_injected`, `fault.delays_injected`, the
connection managers' request-time histograms, their routes and listeners) and what web
received; the learner's code is never read. Faults are counted on whichever sidecar
applied them (the contract puts them on the caller's side, as Istio does).
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time

import httpx
import pytest

from meshlab.grading import check, eventually, fail
from meshlab.grading.stats import expect_share, sample_size
from meshlab.mesh import inject, manifest
from meshlab.runtime.netns import NetnsTransport

pytestmark = pytest.mark.lab("11-mini-mesh")

WEB = "web-v1"
APP = "http://127.0.0.1:8080"               # web's app, from inside its pod
# 10 % must be told apart from a share read as per-cent-of-a-percent (0.1 %) or as 1 %,
# and from a quarter; both error rates stay below 1e-6.
ABORT_REQUESTS = sample_size(0.10, (0.01, 0.25))
DELAYED_REQUESTS = 3
WORKERS = 4

FAULT_HINT = ("an experiment of /faults on service S becomes envoy.filters.http.fault on the sidecars that call S: "
              "abort.http_status and abort.percentage (a FractionalPercent: 10 % is 10 per HUNDRED, or 100000 per "
              "MILLION), delay.fixed_delay and delay.percentage; pushed with the next snapshot")
ROUTE_HINT = ("put the fault filter in the outbound chain with no fault of its own and the experiment in the routes "
              "(typed_per_filter_config): a route update reaches the connections the app keeps open, a changed "
              "listener does not")
CLEAR_HINT = ("when an experiment ends (DELETE /faults or its expires_at) the next snapshot must be exactly the one "
              "from before: no fault filter setting left in any route or listener")


def admin_api(lab, method: str, path: str, **options) -> httpx.Response:
    port = manifest.load(lab.lab.mesh).admin_port
    return lab.pod(inject.CONTROL_POD).request(method, f"http://127.0.0.1:{port}{path}", timeout=20.0, **options)


def start_experiment(lab, **fields) -> str:
    response = admin_api(lab, "POST", "/faults", json={"service": "api", **fields})
    try:
        document = response.json()
    except ValueError:
        document = {}
    if response.status_code != 200 or "id" not in document:
        fail("the control plane did not accept a fault experiment",
             expected='POST /faults {"service": "api", ...} answered 200 {"id": ...} (the mesh contract)',
             received=f"{response.status_code} {response.text[:300]}", hint=FAULT_HINT)
    return document["id"]


def clear_experiments(lab) -> None:
    admin_api(lab, "DELETE", "/faults")


def in_sync(lab) -> bool:
    try:
        nodes = admin_api(lab, "GET", "/status").json().get("nodes", {})
    except (httpx.HTTPError, ValueError):
        return False
    return bool(nodes) and all(n.get("connected") and n.get("acked") and n.get("acked") == n.get("target")
                               for n in nodes.values())


def wait_in_sync(lab, timeout: float = 20.0) -> None:
    if eventually(lambda: in_sync(lab), timeout=timeout, interval=0.1) is not True:
        fail("not every sidecar runs the configuration the control plane pushed",
             expected="every node connected, its acknowledged version the one pushed",
             received=admin_api(lab, "GET", "/status").text[:500], hint=FAULT_HINT)


def sidecars(lab) -> list:
    return [lab.envoy(f"{w.name}-envoy") for w in manifest.load(lab.lab.mesh).workloads]


def fault_counters(lab, name: str) -> dict[str, int]:
    """Every sidecar's `<prefix>.fault.NAME` counters, keyed by sidecar and stat."""
    counts = {}
    for index, admin in enumerate(sidecars(lab)):
        for stat, value in admin.stats(rf"\.fault\.{name}$").items():
            counts[f"{index} {stat}"] = value
    return counts


def moved(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.get(key, 0) - before.get(key, 0) for key in set(before) | set(after))


def call_web(lab, count: int) -> list[tuple[int, dict]]:
    """COUNT requests to web from inside its pod, on WORKERS connections at once; each
    answer's status and body (web reports api's status as `upstream_status`)."""
    path = lab.runtime.pods.netns_path(WEB)
    answers: list[tuple[int, dict]] = []
    lock = threading.Lock()
    remaining = iter(range(count))

    def work() -> None:
        with httpx.Client(transport=NetnsTransport(path), timeout=30.0, trust_env=False) as http:
            while True:
                with lock:
                    if next(remaining, None) is None:
                        return
                try:
                    response = http.get(APP + "/chaos")
                    body = response.json()
                except (httpx.HTTPError, ValueError) as error:
                    response, body = None, {"error": f"{type(error).__name__}: {error}"}
                with lock:
                    answers.append((response.status_code if response is not None else 0, body))

    threads = [threading.Thread(target=work, daemon=True) for _ in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    return answers


def configuration(lab) -> str:
    """What every sidecar runs, without versions and times: listeners and routes."""
    parts = []
    for admin in sidecars(lab):
        for resource in ("dynamic_listeners", "dynamic_route_configs"):
            dump = admin.config_dump(resource).get("configs", [])
            parts.append(json.dumps([_without_stamps(c) for c in dump], sort_keys=True))
    return "\n".join(parts)


def _without_stamps(value):
    if isinstance(value, dict):
        return {k: _without_stamps(v) for k, v in value.items() if k not in ("version_info", "last_updated")}
    if isinstance(value, list):
        return [_without_stamps(v) for v in value]
    return value


@pytest.fixture(autouse=True)
def no_experiment_left(lab):
    clear_experiments(lab)
    yield
    clear_experiments(lab)


# -- the checks ---------------------------------------------------------------------------

@check("--abort 10%: the share of aborted calls to api passes the exact binomial test and equals "
       "Envoy's fault.aborts_injected", hint=FAULT_HINT)
def test_abort_share(lab):
    wait_in_sync(lab)
    start_experiment(lab, abort_percent=10.0, abort_status=503)
    wait_in_sync(lab)
    before = fault_counters(lab, "aborts_injected")
    answers = call_web(lab, ABORT_REQUESTS)
    injected = moved(before, fault_counters(lab, "aborts_injected"))
    aborted = sum(1 for status, body in answers if body.get("upstream_status") == 503)
    other = [f"{status} {json.dumps(body)[:160]}" for status, body in answers
             if status != 200 and body.get("upstream_status") != 503]
    if other:
        fail(f"{len(other)} calls failed otherwise than by the experiment's 503",
             expected="every call answered: 200, or api's 503 from the fault filter",
             received=" | ".join(other[:3]), hint=FAULT_HINT)
    expect_share(aborted, len(answers), 0.10, what="to api were aborted with 503", noun="calls", hint=FAULT_HINT)
    if injected != aborted:
        fail("the aborted calls are not the ones Envoy's fault filter counted",
             expected=f"fault.aborts_injected to grow by {aborted}, the calls web saw aborted",
             received=f"it grew by {injected}", hint=ROUTE_HINT if injected == 0 else FAULT_HINT)


@check("--delay 2s: every delayed call shows in Envoy's delays_injected and in its request times",
       hint=FAULT_HINT)
def test_delay(lab):
    wait_in_sync(lab)
    start_experiment(lab, delay_ms=2000, delay_percent=100.0)
    wait_in_sync(lab)
    before = fault_counters(lab, "delays_injected")
    slow_before = _requests_slower_than(lab, 1000)
    answers = call_web(lab, DELAYED_REQUESTS)
    injected = moved(before, fault_counters(lab, "delays_injected"))
    if injected != DELAYED_REQUESTS or any(status != 200 for status, _ in answers):
        fail(f"{DELAYED_REQUESTS} calls to api under a 2 s delay for all of them",
             expected=f"fault.delays_injected to grow by {DELAYED_REQUESTS}, every call still answered 200",
             received=f"it grew by {injected}; statuses {[status for status, _ in answers]}",
             hint=ROUTE_HINT if injected == 0 else FAULT_HINT)
    # Envoy's histograms move at its stats flush: wait for the delayed requests to show.
    slow = eventually(lambda: (n := _requests_slower_than(lab, 1000) - slow_before) >= DELAYED_REQUESTS and n,
                      timeout=15.0, interval=0.5)
    if not slow:
        fail("Envoy's request times do not show the delay",
             expected=f"{DELAYED_REQUESTS} more requests over 1000 ms in a connection manager's "
                      "downstream_rq_time histogram",
             received=f"{_requests_slower_than(lab, 1000) - slow_before} more", hint=FAULT_HINT)


def _requests_slower_than(lab, milliseconds: int) -> int:
    """Requests every sidecar's connection managers timed over MILLISECONDS (from the
    Prometheus histograms of downstream_rq_time, in ms)."""
    total = 0
    for admin in sidecars(lab):
        text = admin.get("/stats/prometheus", filter="downstream_rq_time").text
        counts, fast = 0, 0
        for line in text.splitlines():
            if not line.startswith("envoy_http_downstream_rq_time_") or "admin" in line:
                continue
            if line.startswith("envoy_http_downstream_rq_time_count"):
                counts += int(float(line.rsplit(" ", 1)[1]))
            elif f'le="{milliseconds}"' in line:
                fast += int(float(line.rsplit(" ", 1)[1]))
        total += counts - fast
    return total


@check("An experiment --for 3s ends by itself, clear ends one at once: 0 faults, the configuration from before",
       hint=CLEAR_HINT)
def test_expiry_and_clear(lab):
    wait_in_sync(lab)
    original = configuration(lab)
    ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=3)
    start_experiment(lab, abort_percent=100.0, expires_at=ends.isoformat())
    wait_in_sync(lab)
    if configuration(lab) == original:
        fail("an experiment changed nothing in the sidecars' listeners and routes",
             expected="the fault filter's setting for api in the configuration", received="the same configuration",
             hint=FAULT_HINT)
    time.sleep(max(0.0, (ends - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    for how in ("after its --for", "after clear"):
        back = eventually(lambda: in_sync(lab) and configuration(lab) == original, timeout=15.0, interval=0.2)
        if not back:
            fail(f"the sidecars did not get their configuration back {how}",
                 expected="the listeners and routes from before the experiment, exactly",
                 received="a different configuration (the experiment's, or another)", hint=CLEAR_HINT)
        before = fault_counters(lab, "aborts_injected")
        answers = call_web(lab, 50)
        injected = moved(before, fault_counters(lab, "aborts_injected"))
        failed = [status for status, _ in answers if status != 200]
        if injected or failed:
            fail(f"faults still injected {how}",
                 expected="0 aborts_injected and 50 answers 200", received=f"{injected} injected, {len(failed)} failed",
                 hint=CLEAR_HINT)
        if how == "after its --for":
            listed = admin_api(lab, "GET", "/faults").json()
            if listed:
                fail("an expired experiment is still listed", expected="GET /faults: []",
                     received=json.dumps(listed)[:300], hint=CLEAR_HINT)
            start_experiment(lab, abort_percent=100.0)
            wait_in_sync(lab)
            cleared = admin_api(lab, "DELETE", "/faults", params={"service": "api"}).json()
            if cleared.get("cleared") != 1:
                fail("DELETE /faults?service=api did not clear the one experiment",
                     expected='{"cleared": 1}', received=json.dumps(cleared), hint=CLEAR_HINT)
