"""Lab 02 — Canary: weighted clusters, a header route, and mirroring.

Checks send real traffic through Envoy and count two things that must agree: which
version answered (the `x-served-by` header each app sets) and which app received the
request (each app's journal, read directly). Ratios are decided by an exact binomial
test with a sample large enough that a correct split fails once in a million runs and
the plausible wrong ones (50/50, 100/0, 80/20) pass once in a million.
"""

from __future__ import annotations

import uuid

import pytest

from meshlab import load
from meshlab.grading import check, eventually, fail
from meshlab.grading.stats import expect_share, sample_size

pytestmark = pytest.mark.lab("02-canary")

STABLE, CANARY = "Version 1.0 (Stable)", "Version 2.0 (Canary)"
CANARY_SHARE = 0.10
MIRROR_SHARE = 0.50
# Wrong setups each sample must tell apart from the target, with certainty 1 - 1e-6.
SPLIT_REQUESTS = sample_size(CANARY_SHARE, (0.0, 0.2, 0.5))          # 100/0, 80/20, 50/50
MIRROR_REQUESTS = sample_size(MIRROR_SHARE, (0.0, CANARY_SHARE, 1.0))  # none, the canary's 10 %, all
HEADER_REQUESTS = 20

SPLIT_HINT = ("in the catch-all route, replace `cluster: v1` by `weighted_clusters` listing v1 with weight 90 "
              "and v2 with weight 10")
HEADER_HINT = ("add a route BEFORE the catch-all one: match prefix \"/\" and the header x-canary with "
               "string_match exact \"true\", route to cluster v2")
MIRROR_HINT = ("add a first route for prefix \"/checkout\" to cluster v1 with request_mirror_policies: "
               "cluster v2, runtime_fraction default_value numerator 50, denominator HUNDRED")


class Traffic:
    """A batch of requests tagged `?run=ID`, and what each app's journal saw of it."""

    def __init__(self, lab, path: str = "/"):
        self.lab = lab
        self.id = uuid.uuid4().hex
        self.url = lab.url("envoy", "listener", f"{path}{'&' if '?' in path else '?'}run={self.id}")
        self.positions = {app: lab.journal_position(app) for app in ("v1", "v2")}

    def received(self, app: str) -> list[dict]:
        """The requests of this batch that APP received."""
        return [e for e in self.lab.journal(app, since=self.positions[app]) if e["query"].get("run") == [self.id]]

    def load(self, requests: int, *, concurrency: int = 8, headers: dict[str, str] | None = None,
             hint: str | None = None) -> load.LoadResult:
        result = load.run(self.url, engine="builtin", requests=requests, concurrency=concurrency,
                          headers=headers, timeout=10.0, count_header="x-served-by")
        if result.count(200) != requests:
            fail(f"not every request through Envoy was answered with 200 ({result.codes_text()})",
                 expected=f"{requests} x HTTP 200 from {self.url.split('?')[0]}", received=result.codes_text(),
                 hint=hint or "every route must lead to a cluster, v1 or v2")
        return result


def answered(result: load.LoadResult, version: str) -> int:
    return result.header_counts.get(version, 0)


def both_apps_saw_it(traffic: Traffic, result: load.LoadResult) -> tuple[int, int]:
    """What each app received equals what clients say it answered (no stand-in answers)."""
    v1, v2 = len(traffic.received("v1")), len(traffic.received("v2"))
    copies = [e for app in ("v1", "v2") for e in traffic.received(app)
              if "-shadow" in e["headers"].get("host", "")]  # Envoy's mark: 127.0.0.1-shadow:10000
    if copies:
        fail(f"{len(copies)} mirrored copies of requests to / reached the apps",
             expected="mirroring on /checkout only; requests to / are split, not copied",
             received=f"{len(copies)} requests with host {copies[0]['headers'].get('host')!r}",
             hint="put request_mirror_policies on the /checkout route, not on the catch-all route")
    if (v1, v2) != (answered(result, STABLE), answered(result, CANARY)):
        fail("the versions that answered are not the apps that received the requests",
             expected=f"v1's journal to hold the {answered(result, STABLE)} requests answered '{STABLE}' and v2's "
                      f"the {answered(result, CANARY)} answered '{CANARY}'",
             received=f"v1 received {v1}, v2 received {v2}",
             hint="route to the clusters v1 and v2; do not answer with a direct_response")
    return v1, v2


@check("Envoy splits traffic 90/10 between v1 and v2 (exact binomial test)", hint=SPLIT_HINT)
def test_weighted_split(lab):
    traffic = Traffic(lab)
    result = traffic.load(SPLIT_REQUESTS, hint=SPLIT_HINT)
    _, v2 = both_apps_saw_it(traffic, result)
    if v2 == 0:
        fail(f"all {SPLIT_REQUESTS} requests went to v1; the canary got none",
             expected=f"about 10 % of {SPLIT_REQUESTS} requests answered '{CANARY}'",
             received=f"{SPLIT_REQUESTS} x '{STABLE}'", hint=SPLIT_HINT)
    expect_share(v2, SPLIT_REQUESTS, CANARY_SHARE, what="went to v2", hint=SPLIT_HINT)


@check("x-canary: true always reaches v2; x-canary: false follows the split", hint=HEADER_HINT)
def test_header_route(lab):
    traffic = Traffic(lab)
    for value in ("true", "false"):
        traffic.load(HEADER_REQUESTS, concurrency=4, headers={"x-canary": value}, hint=HEADER_HINT)
    opted_in = [e for e in traffic.received("v2") if e["headers"].get("x-canary") == "true"]
    strays = [e for e in traffic.received("v1") if e["headers"].get("x-canary") == "true"]
    if strays or len(opted_in) != HEADER_REQUESTS:
        fail(f"{len(strays)} of {HEADER_REQUESTS} requests with x-canary: true went to v1",
             expected=f"all {HEADER_REQUESTS} requests with x-canary: true answered by v2",
             received=f"v2 received {len(opted_in)}, v1 received {len(strays)}",
             hint=HEADER_HINT + "; routes are tried in order, so the header route must come before the catch-all")
    not_opted = [e for e in traffic.received("v2") if e["headers"].get("x-canary") == "false"]
    if len(not_opted) == HEADER_REQUESTS:
        # With a 90/10 split, all 20 going to v2 by chance has probability 1e-20.
        fail("requests with x-canary: false went to v2 too, every one of them",
             expected="x-canary: false to follow the 90/10 split (mostly v1)",
             received=f"all {HEADER_REQUESTS} went to v2",
             hint="match the header's VALUE (string_match: {exact: \"true\"}), not only its presence")


def copies_received(lab, traffic: Traffic, *, timeout: float = 5.0) -> list[dict]:
    """v2's journal of the batch once Envoy has no request to v2 in flight. Envoy sends
    each copy when it forwards the real request, so by the time every client has its
    answer the copies are sent; an app journals a request before answering it, so with
    nothing in flight every copy is in the journal."""
    admin, clusters = lab.envoy(), lab.envoy().clusters_reaching(lab.port("v2"))
    gauges = [f"cluster.{c}.{g}" for c in clusters for g in ("upstream_rq_active", "upstream_rq_pending_active")]

    def idle() -> bool:
        stats = admin.stats(r"^cluster\.")
        return not any(stats.get(name, 0) for name in gauges)

    eventually(idle, timeout)
    return traffic.received("v2")


@check("/checkout is answered by v1 while half of it is mirrored to v2", hint=MIRROR_HINT)
def test_mirroring(lab):
    traffic = Traffic(lab, "/checkout")
    result = traffic.load(MIRROR_REQUESTS, concurrency=4, hint=MIRROR_HINT)
    if answered(result, STABLE) != MIRROR_REQUESTS:
        fail("clients of /checkout got answers from v2: mirroring must not change responses",
             expected=f"all {MIRROR_REQUESTS} answers from '{STABLE}'",
             received=", ".join(f"{n} x '{v}'" for v, n in result.header_counts.items()),
             hint="route /checkout to v1 and MIRROR to v2 (request_mirror_policies); a weighted split "
                  "sends real users to v2")
    primaries = traffic.received("v1")
    copies = copies_received(lab, traffic)
    if len(primaries) != MIRROR_REQUESTS:
        fail("v1 did not receive each /checkout request exactly once",
             expected=f"{MIRROR_REQUESTS} requests in v1's journal", received=f"{len(primaries)}",
             hint="send /checkout to cluster v1")
    if not copies:
        fail("no copy of a /checkout request reached v2",
             expected=f"about half of {MIRROR_REQUESTS} requests mirrored to v2", received="v2 received none",
             hint=MIRROR_HINT)
    expect_share(len(copies), MIRROR_REQUESTS, MIRROR_SHARE, what="were mirrored to v2",
                 hint="runtime_fraction sets the share that is copied: numerator 50 of denominator HUNDRED; "
                      "without it Envoy copies every request")
