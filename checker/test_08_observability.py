"""Lab 08 — Observability: metrics in Prometheus, traces across three hops, golden signals.

The chain productpage -> reviews -> ratings runs with a sidecar per app; reviews waits
0.3 s before it answers and fails every fifth request with 503 (productpage passes that
on as 502), and productpage answers 404 itself to paths under /missing. Checks decide
from what the real tools hold: Prometheus's HTTP API (`up`, and the learner's queries,
run as they are), the trace store's spans (trace ids, parent links, service names), and
Envoy's own counters.

The learner's queries run, as written, against the real Prometheus right after the
checker's own traffic, and are compared with what Prometheus computes at the same instant
from Envoy's metrics for that signal (request counters, 5xx counters, the request time
histogram, over the same minute). The tolerance admits other correct ways to write a
query (increase()/60, the per-code series summed) and nothing plausible but wrong: a
rate of a gauge sees only what was in flight at a scrape (near 0 for ratings, which
answers at once), counting 404s doubles productpage's error ratio, and without `le`
histogram_quantile returns nothing. Before its traffic, the checker makes every series
exist and waits until Prometheus has scraped it: a series that appears mid-window loses
its first value to rate() (FACTS: the first-sample effect). Prometheus 2.42 scrapes
first 5 s after it starts: meanwhile the first check sends all the traffic that needs
no scrape (those series, and the tracing checks' requests). The injected failures are exact (every fifth request: reviews' counters must show 20 of
100), so no statistical test is needed to know the traffic is what it should be.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from dataclasses import dataclass
from functools import lru_cache

import httpx
import pytest
import yaml

from meshlab import load
from meshlab.grading import CheckFailed, check, fail

pytestmark = pytest.mark.lab("08-observability")

# Every port, and what reviews is told to do (its --delay and --fail-every), comes from
# lab.yaml: see the functions below.
SERVICES = ("productpage", "reviews", "ratings")
PARENT = {"reviews": "productpage", "ratings": "reviews"}
TRACED_REQUESTS = 20              # at 50 % sampling, all 20 traced has probability 1e-6
SIGNAL_REQUESTS, MISSING_REQUESTS = 100, 25
# Two rounds of reviews' 0.3 s: all 100 at once would put them on ratings together, near
# reviews' delay in its p99 on a loaded machine.
SIGNAL_CONCURRENCY = 50

METRICS_HINT = ("step 2: in each sidecar, a listener `metrics` on 127.0.0.1:1509N whose only route is "
                "`match: {path: /stats/prometheus}` to the cluster envoy_admin")
TRACING_HINT = ("step 3: in each sidecar's inbound HTTP connection manager, `tracing:` with the provider "
                "envoy.tracers.opentelemetry (grpc_service to the cluster opentelemetry), the sidecar's "
                "service_name, and random_sampling 100")
PROPAGATION_HINT = ("step 4: outgoing_headers in propagation.py must copy `traceparent` (and `tracestate`) "
                    "from the incoming request, or the next sidecar starts a trace of its own")
SIGNALS_FILE = "signals.yaml"
SIGNALS = ("request_rate", "error_ratio", "p99_latency_ms")
RATE_HINT = ("request_rate: a rate of the counter envoy_cluster_upstream_rq_total (never of a gauge such as "
             "..._rq_active), filtered to envoy_cluster_name=\"local_app\", summed `by (service)`, over [1m]")
ERROR_HINT = ("error_ratio: 5xx answers over all answers, both as rates over [1m] `by (service)`; count "
              "envoy_response_code_class=\"5\" only: a 404 is the client's mistake, not the service's")
P99_HINT = ("p99_latency_ms: histogram_quantile(0.99, sum by (service, le) (rate("
            "envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=\"local_app\"}[1m]))): without `le` "
            "there is no histogram left to take a quantile of")


def http() -> httpx.Client:
    return httpx.Client(timeout=5.0, trust_env=False)


# -- the lab's manifest ---------------------------------------------------------------------

def prometheus(lab) -> str:
    return lab.url("prometheus")


def entry(lab) -> str:
    """productpage's sidecar, where the chain's requests enter."""
    return lab.url("sidecar-productpage", "inbound")


def metrics_port(lab, service: str) -> int:
    return lab.port(f"sidecar-{service}", "metrics")


def argument(lab, service: str, option: str) -> str:
    """The value SERVICE is given for OPTION in lab.yaml (`--delay 0.3`)."""
    args = lab.lab.service(service).args
    return args[args.index(option) + 1]


def reviews_delay_ms(lab) -> float:
    return float(argument(lab, "reviews", "--delay")) * 1000


def reviews_fail_every(lab) -> int:
    return int(argument(lab, "reviews", "--fail-every"))


# -- Prometheus ---------------------------------------------------------------------------

def promql(lab, query: str, at: float | None = None) -> list[dict]:
    """The result of an instant query: [{"metric": {...}, "value": [t, "text"]}] (or a
    matrix's "values"). A query Prometheus refuses raises CheckFailed with its reason."""
    params = {"query": query}
    if at is not None:
        params["time"] = f"{at:.3f}"
    with http() as client:
        try:
            answer = client.get(prometheus(lab) + "/api/v1/query", params=params).json()
        except (httpx.HTTPError, ValueError) as error:
            fail(f"Prometheus does not answer on {prometheus(lab)}", expected="Prometheus's HTTP API",
                 received=str(error), hint="look at the lab's prometheus.log")
    if answer.get("status") != "success":
        raise QueryRefused(answer.get("error") or "", query)
    return answer["data"]["result"]


class QueryRefused(CheckFailed):
    """Prometheus refused QUERY; REASON is its parser's message."""

    def __init__(self, reason: str, query: str):
        # Prometheus says `invalid parameter "query": 1:8: parse error: ...`: the line and
        # column are within the query.
        self.reason = reason.removeprefix('invalid parameter "query": ')
        super().__init__(f"Prometheus refused the query: {self.reason}", expected="a query Prometheus can run",
                         received=query)


def targets(lab) -> dict[str, dict]:
    """Prometheus's view of each sidecar's target, by service."""
    with http() as client:
        active = client.get(prometheus(lab) + "/api/v1/targets").json()["data"]["activeTargets"]
    return {t["labels"].get("service"): t for t in active}


def up_values(lab) -> dict[str, str]:
    return {r["metric"].get("service"): r["value"][1] for r in promql(lab, "up")}


def prometheus_counter(lab, metric: str) -> dict[str, float]:
    """The last scraped value of METRIC for each service's local_app cluster."""
    return {r["metric"].get("service"): float(r["value"][1])
            for r in promql(lab, f'{metric}{{envoy_cluster_name="local_app"}}')}


def sidecar(lab, service: str):
    """The admin API of SERVICE's sidecar."""
    return lab.envoy(f"sidecar-{service}")


def requests_now(lab) -> dict[str, int]:
    """Each sidecar's request counter as Envoy reports it now."""
    return {s: sidecar(lab, s).stat("cluster.local_app.upstream_rq_total") for s in SERVICES}


def wait_for_scrapes(lab, wanted: dict[str, int] | None = None, timeout: float = 15.0) -> None:
    """Until Prometheus holds, for every sidecar, the request counter and the request
    time histogram's count that Envoy reports now, or WANTED (histograms move at stats
    flushes)."""
    wanted = wanted or requests_now(lab)
    deadline = time.monotonic() + timeout
    down_since: dict[str, float] = {}
    while True:
        # A sidecar Prometheus cannot scrape never catches up: say so at once. A scrape
        # that failed once (a slow machine) or a target just restarted reads 0 briefly:
        # only 3 s of 0 in a row count.
        now = time.monotonic()
        up = up_values(lab)
        down_since = {s: down_since.get(s, now) for s in SERVICES if up.get(s, "1") != "1"}
        down = {s: up[s] for s, since in down_since.items() if now - since > 3.0}
        if down:
            fail(f"Prometheus cannot scrape the sidecar of {', '.join(sorted(down, key=SERVICES.index))}, "
                 "so it has none of the counters these queries read",
                 expected="up == 1 for every sidecar (the first check) before a signal can be computed",
                 received=", ".join(f"{s} (127.0.0.1:{metrics_port(lab, s)}): up {v}" for s, v in down.items()),
                 hint=METRICS_HINT)
        counters = prometheus_counter(lab, "envoy_cluster_upstream_rq_total")
        histograms = prometheus_counter(lab, "envoy_cluster_upstream_rq_time_count")
        if all(counters.get(s, -1) >= wanted[s] and histograms.get(s, -1) >= wanted[s] for s in SERVICES):
            return
        if time.monotonic() > deadline:
            fail("Prometheus did not catch up with Envoy's counters",
                 expected=f"envoy_cluster_upstream_rq_total and ..._rq_time_count per service: {wanted}",
                 received=f"counters {counters}, histogram counts {histograms}",
                 hint=METRICS_HINT + "; Prometheus must be scraping every sidecar (the first check)")
        time.sleep(0.1)


def settled_instant(lab, timeout: float = 5.0) -> float:
    """Now (to the millisecond), once Prometheus can add no more samples at or before it.
    A scrape's samples are stamped with the scrape's start but written at its end: a query
    at an instant that a scrape had just started before misses that sample, and a second
    query at the same instant a few milliseconds later sees it. One more sample changes
    rate()'s extrapolation (by 14 % when measured, more than request_rate's tolerance), so
    the learner's query and the reference would read different data. Each target's scrapes are written in order: once every target has
    a sample stamped after the instant, nothing at or before it can still come."""
    at = math.floor(time.time() * 1000) / 1000
    deadline = time.monotonic() + timeout
    while True:
        stamps = {r["metric"].get("service"): float(r["value"][1]) for r in promql(lab, "timestamp(up)")}
        if all(stamps.get(s, 0.0) > at for s in SERVICES):
            return at
        if time.monotonic() > deadline:
            fail("Prometheus stopped scraping the sidecars",
                 expected=f"a scrape of every sidecar within {timeout:.0f} s",
                 received=", ".join(f"{s}: last sample {at - stamps[s]:.1f} s before" if s in stamps else
                                    f"{s}: no sample" for s in SERVICES),
                 hint=METRICS_HINT + "; Prometheus must be scraping every sidecar (the first check)")
        time.sleep(0.05)


# -- the trace store ------------------------------------------------------------------------

def spans_since(lab, seq: int) -> list[dict]:
    with http() as client:
        return client.get(lab.url("traces", "http", "/api/spans"), params={"since": seq}).json()


def last_seq(lab) -> int:
    spans = spans_since(lab, 0)
    return spans[-1]["seq"] if spans else 0


def hop_of(lab, span: dict) -> str | None:
    """The sidecar a span describes, known from the port its request arrived on."""
    url = span["attributes"].get("http.url", "")
    for service in SERVICES:
        if lab.url(f"sidecar-{service}", "inbound", "/").removeprefix("http://") in url:
            return service
    return None


@dataclass(frozen=True)
class Probe:
    """Requests to productpage tagged ?probe=TAG, sent all at once."""
    tag: str
    since: int                # the trace store's last span before them
    answered: float           # time.monotonic() when the last of them was answered
    result: load.LoadResult


@lru_cache(maxsize=2)
def probe(lab, requests: int) -> Probe:
    """The tracing checks' traffic, sent once: the first check sends it while Prometheus
    discovers its targets, so that these checks only read the spans. All at once: each
    request waits 0.3 s for reviews, and sampling does not depend on the order."""
    since, tag = last_seq(lab), uuid.uuid4().hex
    result = load.run(f"{entry(lab)}/?probe={tag}", engine="builtin", requests=requests, concurrency=requests,
                      timeout=10.0)
    return Probe(tag, since, time.monotonic(), result)


def probe_spans(lab, sent: Probe, want: int, timeout: float = 5.0) -> dict[str, list[dict]]:
    """The spans of the requests SENT, by hop; waits until each hop has WANT of them or
    TIMEOUT has passed since they were answered (spans arrive ~10 ms after their request
    with the lab's flush settings)."""
    deadline = sent.answered + timeout
    while True:
        by_hop: dict[str, list[dict]] = {s: [] for s in SERVICES}
        for span in spans_since(lab, sent.since):
            hop = hop_of(lab, span)
            if hop and f"probe={sent.tag}" in span["attributes"].get("http.url", ""):
                by_hop[hop].append(span)
        if all(len(v) >= want for v in by_hop.values()) or time.monotonic() > deadline:
            return by_hop
        if not any(by_hop.values()) and time.monotonic() > deadline - timeout / 2:
            return by_hop  # not one span in half the time: tracing is off, not slow
        time.sleep(0.05)


def lost_spans(lab, services: list[str]) -> str:
    """For the sidecars among SERVICES whose tracer says it sent spans that never reached
    the store: why (Envoy accepts a grpc_service to a cluster it does not have, and drops
    what it sends there). Empty when there are none."""
    sent = {s: n for s in services if (n := sidecar(lab, s).stat("tracing.opentelemetry.spans_sent"))}
    if not sent:
        return ""
    return ("; yet " + ", ".join(f"the {s} sidecar's tracer says it sent {n}" for s, n in sent.items())
            + ": its grpc_service goes to a cluster that is not `opentelemetry` (Envoy drops those spans)")


# -- checks ------------------------------------------------------------------------------------

@check("Prometheus scrapes every sidecar (up == 1) through a port that serves metrics only", hint=METRICS_HINT)
def test_prometheus_scrapes_every_sidecar(lab):
    # Prometheus scrapes first 5 s after it starts, whatever else happens. Until then,
    # the traffic that needs no scrape goes out: the signals' series, so that the first
    # scrape already holds them, and the tracing checks' requests.
    every_series(lab)
    probe(lab, TRACED_REQUESTS)
    probe(lab, 1)
    # Then a down target shows 0 within a scrape or two: a few seconds more allow a
    # sidecar that just restarted.
    deadline, settle = time.monotonic() + 20.0, None
    while True:
        values = up_values(lab)
        if all(values.get(s) == "1" for s in SERVICES):
            break
        if all(s in values for s in SERVICES):
            settle = settle or time.monotonic() + 3.0
        if time.monotonic() > (settle or deadline) or time.monotonic() > deadline:
            seen = targets(lab)
            down = [f"{s} (127.0.0.1:{metrics_port(lab, s)}): "
                    + (f"up {values[s]}, {seen.get(s, {}).get('lastError') or 'no error given'}"
                       if s in values else "not scraped yet")
                    for s in SERVICES if values.get(s) != "1"]
            fail(f"Prometheus cannot scrape {len(down)} of the 3 sidecars",
                 expected="up == 1 for productpage, reviews and ratings (Prometheus's /api/v1/query?query=up)",
                 received="; ".join(down), hint=METRICS_HINT)
        time.sleep(0.1)
    with http() as client:
        leaks = [f"{s}: GET 127.0.0.1:{metrics_port(lab, s)}/config_dump answered {code}" for s in SERVICES
                 if (code := client.get(f"http://127.0.0.1:{metrics_port(lab, s)}/config_dump").status_code) == 200]
    if leaks:
        fail("the metrics port hands out more of the admin API than the metrics",
             expected="404 for every path but /stats/prometheus on the metrics ports",
             received="; ".join(leaks),
             hint="route `path: /stats/prometheus` only (not `prefix: /`): the admin API can also change "
                  "and stop Envoy")


@check("Every sidecar traces every request, under its own service name", hint=TRACING_HINT)
def test_every_request_is_traced(lab):
    result = (sent := probe(lab, TRACED_REQUESTS)).result
    if result.count(200) + result.count(502) != TRACED_REQUESTS:  # 502: reviews' every fifth 503
        fail("requests to productpage's sidecar did not get through",
             expected=f"{TRACED_REQUESTS} answers from {entry(lab)} (200, or 502 when reviews fails)",
             received=result.codes_text(),
             hint="a 500 is the app's own error: an exception in propagation.py (the app's log shows it); "
                  "the inbound listeners, routes and clusters come with the starter: compare with it")
    by_hop = probe_spans(lab, sent, TRACED_REQUESTS)
    counts = {s: len(v) for s, v in by_hop.items()}
    lost = lost_spans(lab, [s for s, n in counts.items() if n == 0])
    if not any(counts.values()):
        fail("no sidecar sent a span to the trace store",
             expected=f"{TRACED_REQUESTS} spans from each of the 3 sidecars", received="no span at all "
             "(`meshlab traces` shows what the store has)" + lost, hint=TRACING_HINT)
    missing = {s: n for s, n in counts.items() if n < TRACED_REQUESTS}
    if missing:
        fail(f"not every request was traced: {', '.join(f'{s} sent {n} spans' for s, n in missing.items())}",
             expected=f"{TRACED_REQUESTS} spans from each sidecar (100 % sampling)",
             received=", ".join(f"{s} {n}" for s, n in counts.items()) + lost,
             hint="trace every request: random_sampling {value: 100} (or leave it out: 100 is its default), "
                  "and configure the tracer in all three sidecars, each exporting to the cluster opentelemetry")
    wrong = {s: sorted({span["service"] for span in by_hop[s]} - {s}) for s in SERVICES}
    wrong = {s: names for s, names in wrong.items() if names}
    if wrong:
        fail("spans carry the wrong service name",
             expected="service.name productpage, reviews and ratings, each from its own sidecar",
             received=", ".join(f"the {s} sidecar's spans say {names}" for s, names in wrong.items()),
             hint="service_name in each sidecar's OpenTelemetryConfig names the service it stands beside")


@check("One request to productpage is one trace across three hops, each span the child of the one before",
       hint=PROPAGATION_HINT)
def test_one_trace_across_three_hops(lab, record_property):
    sent = probe(lab, 1)
    if sent.result.count(load.NO_RESPONSE):
        fail(f"the request to {entry(lab)}/ got no answer", expected="an HTTP response from productpage's sidecar",
             received=", ".join(sent.result.error_kinds) or "no response", hint=TRACING_HINT)
    by_hop = probe_spans(lab, sent, 1)
    absent = [s for s in SERVICES if not by_hop[s]]
    if absent:
        fail(f"{len(absent)} of the 3 sidecars reported no span for the request",
             expected="a span from productpage's, reviews' and ratings' sidecars",
             received=f"none from {', '.join(absent)}", hint=TRACING_HINT)
    span = {s: by_hop[s][0] for s in SERVICES}
    traces = {s: span[s]["trace_id"] for s in SERVICES}
    if len(set(traces.values())) > 1:
        broken = [f"{PARENT[s]} -> {s}" for s in ("reviews", "ratings") if traces[s] != traces[PARENT[s]]]
        fail(f"the spans fell apart into {len(set(traces.values()))} separate traces: each broken hop "
             f"({', '.join(broken)}) started a trace of its own",
             expected="one trace id shared by the spans of productpage, reviews and ratings",
             received=", ".join(f"{s} in trace {t[:12]}…" for s, t in traces.items()),
             hint=PROPAGATION_HINT)
    problems = []
    if span["productpage"]["parent_span_id"]:
        problems.append(f"productpage's span has a parent ({span['productpage']['parent_span_id']}) "
                        "although nothing called it from inside the trace")
    for child, parent in PARENT.items():
        if span[child]["parent_span_id"] != span[parent]["span_id"]:
            problems.append(f"{child}'s parent is {span[child]['parent_span_id'] or 'none'}, not {parent}'s span "
                            f"{span[parent]['span_id']}")
    if problems:
        fail("the trace is one, but its spans are not linked hop by hop",
             expected="productpage's span the root, reviews' its child, ratings' the child of reviews'",
             received="; ".join(problems),
             hint="hand on the incoming traceparent unchanged: it names the span of the sidecar in front of "
                  "the app, which becomes the parent of the next hop")
    hops = " > ".join(f"{s} {span[s]['duration_ms']:.1f} ms" for s in SERVICES)
    record_property("note", f"trace {traces['productpage'][:12]}…: {hops}")


# -- the golden signals ---------------------------------------------------------------------

def signals(lab) -> dict[str, str]:
    """The learner's three queries; structural mistakes are failures of every signals
    check (YAML syntax is refused before the lab starts)."""
    path = lab.dir / SIGNALS_FILE
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        fail(f"{SIGNALS_FILE} is not a mapping of signal names to queries",
             expected=", ".join(SIGNALS), received=type(data).__name__, hint="keep the starter's three keys")
    return {name: data.get(name) for name in SIGNALS}


def line_of(lab, name: str) -> int | None:
    """The line of signals.yaml on which NAME's query is written."""
    try:
        root = yaml.compose((lab.dir / SIGNALS_FILE).read_text())
    except yaml.YAMLError:
        return None
    for key, _ in getattr(root, "value", None) or []:
        if getattr(key, "value", None) == name:
            return key.start_mark.line + 1
    return None


def learners(lab, name: str, query: str, at: float, hint: str) -> list[dict]:
    """The result of the learner's query NAME at AT; one Prometheus refuses fails with
    the place it is written and Prometheus's reason."""
    try:
        return promql(lab, query, at)
    except QueryRefused as refused:
        line = line_of(lab, name)
        where = f"{SIGNALS_FILE}:{line}" if line else SIGNALS_FILE
        raise CheckFailed(f"Prometheus refused {name} ({where}): {refused.reason} (line:column within the query)",
                          expected=f"a query Prometheus can run (try it at {prometheus(lab)}/graph first)",
                          received=query, hint=hint) from None


def query_of(lab, name: str, hint: str) -> str:
    query = signals(lab).get(name)
    if not isinstance(query, str) or not query.strip():
        fail(f"{SIGNALS_FILE} has no query for {name} yet",
             expected=f"a PromQL query under `{name}:`", received=repr(query), hint=hint)
    return query


def send(lab, path: str, requests: int, concurrency: int = 25) -> load.LoadResult:
    return load.run(f"{entry(lab)}{path}", engine="builtin", requests=requests, concurrency=concurrency, timeout=10.0)


@lru_cache(maxsize=1)
def every_series(lab) -> dict[str, int]:
    """Make every series the signals read exist (503s, 502s, 404s), once; the request
    counters right after."""
    send(lab, "/?phase=warm-up", reviews_fail_every(lab) * 2)
    send(lab, "/missing?phase=warm-up", 2)
    return requests_now(lab)


@lru_cache(maxsize=1)
def known_traffic(lab) -> float:
    """Send the signals' traffic once for the three checks; returns the instant
    (after Prometheus caught up, and past every sample it may still be writing) at which
    their queries are evaluated."""
    # Every series first, scraped, so that the window's rates lose nothing to the
    # first-sample effect (made before the first check, they are scraped already).
    fail_every = reviews_fail_every(lab)
    wait_for_scrapes(lab, every_series(lab))
    reviews = sidecar(lab, "reviews")
    before = {name: reviews.stat(f"cluster.local_app.upstream_rq_{name}") for name in ("total", "5xx")}
    send(lab, "/?phase=signals", SIGNAL_REQUESTS, SIGNAL_CONCURRENCY)
    send(lab, "/missing?phase=signals", MISSING_REQUESTS)
    failed = reviews.stat("cluster.local_app.upstream_rq_5xx") - before["5xx"]
    answered = reviews.stat("cluster.local_app.upstream_rq_total") - before["total"]
    # Exact by construction: of any 100 consecutive requests, reviews fails 20.
    if (answered, failed) != (SIGNAL_REQUESTS, SIGNAL_REQUESTS // fail_every):
        raise RuntimeError(f"reviews answered {answered} requests with {failed} 5xx, not {SIGNAL_REQUESTS} with "
                           f"{SIGNAL_REQUESTS // fail_every}: the lab's own apps misbehave")
    wait_for_scrapes(lab)
    return settled_instant(lab)


def by_service(result: list[dict], name: str, hint: str) -> dict[str, float]:
    """One value per service from a query's RESULT, or a failure saying why not."""
    if not result:
        fail(f"{name} returned no series at all", expected="one series per service, labelled `service`",
             received="an empty result", hint=hint)
    if "value" not in result[0]:
        fail(f"{name} returned a range vector, not a value per service",
             expected="an instant vector, one series per service", received=json.dumps(result[0])[:200], hint=hint)
    values: dict[str, list[float]] = {}
    for series in result:
        values.setdefault(series["metric"].get("service"), []).append(float(series["value"][1]))
    if None in values:
        fail(f"{name} returned series without the `service` label",
             expected="one series per service, labelled `service` (sum by (service) keeps it)",
             received=", ".join(json.dumps(s["metric"]) or "{}" for s in result[:4]), hint=hint)
    doubles = {s: len(v) for s, v in values.items() if len(v) > 1}
    if doubles:
        fail(f"{name} returned several series for one service",
             expected="one series per service", received=", ".join(f"{s}: {n} series" for s, n in doubles.items()),
             hint=hint + "; sum the series of a service together")
    return {s: v[0] for s, v in values.items()}


# What each signal is, computed by Prometheus from Envoy's counters and histograms at
# the same instant as the learner's query: the yardstick. A learner's query written
# differently (increase()/60, per-code series summed, the HCM's own histogram) lands
# within the tolerance; the plausible wrong ones land far outside it.
LOCAL = 'envoy_cluster_name="local_app"'
REFERENCE = {
    "request_rate": f"sum by (service) (rate(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m]))",
    "error_ratio": (f'(sum by (service) (rate(envoy_cluster_upstream_rq_xx{{{LOCAL}, envoy_response_code_class="5"}}'
                    f"[1m])) or sum by (service) (rate(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m])) * 0) / "
                    f"sum by (service) (rate(envoy_cluster_upstream_rq_total{{{LOCAL}}}[1m]))"),
    "p99_latency_ms": ("histogram_quantile(0.99, sum by (service, le) "
                       f"(rate(envoy_cluster_upstream_rq_time_bucket{{{LOCAL}}}[1m])))"),
}


def reference(lab, name: str, at: float) -> dict[str, float]:
    return {r["metric"]["service"]: float(r["value"][1]) for r in promql(lab, REFERENCE[name], at)}


def show(values: dict[str, float], unit: str = "", digits: int = 3) -> str:
    return ", ".join(f"{s} {values[s]:.{digits}g}{unit}" if s in values and not math.isnan(values[s])
                     else f"{s} {'NaN' if s in values else 'absent'}" for s in SERVICES)


def within(got: dict[str, float], want: dict[str, float], relative: float, absolute: float = 0.0) -> list[str]:
    """The services whose value in GOT is not within the tolerance of WANT."""
    off = []
    for service in SERVICES:
        value, target = got.get(service, math.nan), want.get(service, math.nan)
        if math.isnan(value) or math.isnan(target) or abs(value - target) > max(absolute, relative * abs(target)):
            off.append(service)
    return off


@check("request_rate: the rate of each service's requests, as the counters say", hint=RATE_HINT)
def test_request_rate(lab):
    query = query_of(lab, "request_rate", RATE_HINT)
    at = known_traffic(lab)
    got = by_service(learners(lab, "request_rate", query, at, RATE_HINT), "request_rate", RATE_HINT)
    want = reference(lab, "request_rate", at)
    off = within(got, want, 0.10)
    if off:
        fail(f"request_rate is off for {', '.join(off)}",
             expected=f"requests per second over the last minute, from Envoy's counters: {show(want, '/s')} (the "
                      f"checker just sent {SIGNAL_REQUESTS + MISSING_REQUESTS} requests to productpage)",
             received=show(got, "/s"), hint=RATE_HINT)


@check("error_ratio: the share of 5xx answers, as the counters say (4xx are not errors)", hint=ERROR_HINT)
def test_error_ratio(lab):
    query = query_of(lab, "error_ratio", ERROR_HINT)
    at = known_traffic(lab)
    got = by_service(learners(lab, "error_ratio", query, at, ERROR_HINT), "error_ratio", ERROR_HINT)
    want = reference(lab, "error_ratio", at)
    if "ratings" not in got:
        got["ratings"] = 0.0  # never a 5xx: a query may leave the service out rather than say 0
    off = within(got, want, 0.15, 0.02)
    if off:
        fail(f"error_ratio is off for {', '.join(off)}",
             expected=f"5xx over all answers in the last minute, from Envoy's counters: {show(want)} (reviews "
                      f"failed exactly {SIGNAL_REQUESTS // reviews_fail_every(lab)} of the checker's {SIGNAL_REQUESTS} "
                      f"requests, productpage passed them on as 502 and answered {MISSING_REQUESTS} requests "
                      f"for /missing 404)",
             received=show(got), hint=ERROR_HINT)


@check("p99_latency_ms: reviews' 0.3 s shows in its p99 and productpage's, not in ratings'", hint=P99_HINT)
def test_p99_latency(lab, record_property):
    query = query_of(lab, "p99_latency_ms", P99_HINT)
    at = known_traffic(lab)
    record_property("note", latency_note(lab))
    got = by_service(learners(lab, "p99_latency_ms", query, at, P99_HINT), "p99_latency_ms", P99_HINT)
    want = reference(lab, "p99_latency_ms", at)
    delay_ms = reviews_delay_ms(lab)
    slow = [s for s in ("productpage", "reviews") if not got.get(s, math.nan) >= delay_ms]
    fast = [] if got.get("ratings", math.nan) < delay_ms else ["ratings"]
    off = sorted(set(within(got, want, 0.25)) | set(slow) | set(fast), key=SERVICES.index)
    if off:
        unit = " (a value under 1 looks like seconds: Envoy's histograms count milliseconds)" \
            if any(0 < v < 1 for v in got.values()) else ""
        fail(f"p99_latency_ms is off for {', '.join(off)}" + unit,
             expected=f"the 99th percentile from Envoy's histograms: {show(want, ' ms', 4)} (reviews waits "
                      f"{delay_ms:.0f} ms before it answers; productpage waits for reviews; ratings is quick)",
             received=show(got, " ms", 4), hint=P99_HINT)

def latency_note(lab) -> str:
    """Where the time goes, per hop: the sidecar's whole request (downstream_rq_time)
    against the app's answer (the cluster's upstream_rq_time), medians from Envoy."""
    parts = []
    for service in SERVICES:
        stats = sidecar(lab, service).get("/stats", format="json", filter="(downstream|upstream)_rq_time$").json()
        medians = {}
        for entry in stats.get("stats", []):
            histograms = entry.get("histograms") if isinstance(entry, dict) else None
            if not histograms:
                continue
            quantiles = histograms["supported_quantiles"]
            for histogram in histograms["computed_quantiles"]:
                medians[histogram["name"]] = histogram["values"][quantiles.index(50)].get("cumulative")
        envoy = medians.get("http.inbound.downstream_rq_time")
        app = medians.get("cluster.local_app.upstream_rq_time")
        if envoy is not None and app is not None:
            parts.append(f"{service}: the sidecar saw {envoy:g} ms, the app took {app:g} ms")
    return "median per request: " + "; ".join(parts)
