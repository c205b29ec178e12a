"""Lab 05 — the programmable proxy: a Lua filter that buckets users.

The specification (README): h = 5381, then for each byte c of x-user-id
h = (h * 33 + c) mod 2^32 (djb2); "experimental" when h mod 100 < 20, else "stable";
no x-user-id means "stable". The filter sets the request header x-user-bucket,
experimental requests go to v2 (:8082), the rest to v1 (:8081), and every response
carries x-envoy-lua-processed: true.

The checks send real requests through Envoy and decide from what each backend
received (its journal: which version got the request, and the x-user-bucket it saw)
and from Envoy's own Lua counters; never from the Lua source.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from meshlab import load
from meshlab.envoy import EnvoyProcess
from meshlab.grading import check, describe, fail
from meshlab.ports import free_port

pytestmark = pytest.mark.lab("05-lua")

VERSION_OF = {"experimental": "v2", "stable": "v1"}
BUCKET_HINT = ("bucket.lua: h = 5381; for each byte c of x-user-id, h = (h * 33 + c) % 4294967296; experimental "
               "when h % 100 < 20; then request_handle:headers():replace('x-user-bucket', bucket)")
ROUTE_HINT = ("envoy.yaml: a route matching header x-user-bucket exact 'experimental' to cluster v2, before the "
              "catch-all route to v1; and the route must be chosen after Lua set the header (route cache)")
USERS = 400          # distinct ids in the main sample: about 80 experimental, 320 stable
REPEATS = 3          # each of the repeat sample's ids is sent this often
LATENCY_REQUESTS = 200


def bucket_of(user_id: str | None) -> str:
    """The specification, in Python."""
    if user_id is None:
        return "stable"
    h = 5381
    for byte in user_id.encode():
        h = (h * 33 + byte) % 2**32
    return "experimental" if h % 100 < 20 else "stable"


@dataclass
class Sent:
    user: str | None
    probe: str
    response: httpx.Response
    version: str | None = None      # which backend received it (from the journals)
    bucket: str | None = None       # the x-user-bucket that backend saw
    copies: int = 0                 # how many times it reached a backend

    @property
    def expected(self) -> str:
        return bucket_of(self.user)


def send(lab, users: list[str | None], *, extra: dict[str, str] | None = None) -> list[Sent]:
    """Send one GET per entry of USERS through Envoy (None: no x-user-id), then look up
    in both backends' journals where each one landed."""
    positions = {v: lab.journal_position(v) for v in ("v1", "v2")}
    sent = []
    for user in users:
        probe = uuid.uuid4().hex
        headers = dict(extra or {})
        if user is not None:
            headers["x-user-id"] = user
        response = lab.get(lab.url("envoy", "listener", "/"), params={"probe": probe}, headers=headers,
                           hint=f"Envoy listens on 127.0.0.1:{lab.port('envoy', 'listener')}")
        sent.append(Sent(user, probe, response))
    by_probe = {s.probe: s for s in sent}
    for version in ("v1", "v2"):
        for entry in lab.journal(version, since=positions[version]):
            record = by_probe.get((entry["query"].get("probe") or [None])[0])
            if record is not None:
                record.version, record.bucket = version, entry["headers"].get("x-user-bucket")
                record.copies += 1
    return sent


def sample_users(seed: int, count: int) -> list[str]:
    """Ids of the kinds real systems use: numbered, hex, e-mail-like; the hashes of many
    pass 2^31, where signed 32-bit arithmetic goes wrong. Seeded: every run the same."""
    rng = random.Random(seed)
    kinds = [lambda: f"user-{rng.randrange(10**6)}", lambda: uuid.UUID(int=rng.getrandbits(128)).hex[:12],
             lambda: f"{rng.choice(['ana', 'bo', 'chen', 'dev', 'eve'])}{rng.randrange(1000)}@example.com"]
    users: list[str] = []
    while len(users) < count:
        user = rng.choice(kinds)()
        if user not in users:
            users.append(user)
    return users


def _examples(rows: list[Sent], what) -> str:
    shown = "; ".join(what(s) for s in rows[:3])
    return shown + (f" (and {len(rows) - 3} more)" if len(rows) > 3 else "")


@pytest.fixture(scope="module")
def sample(lab) -> list[Sent]:
    """The main sample, sent once and read by several checks."""
    return send(lab, sample_users(2024, USERS))


def _require_arrival(sent: list[Sent]) -> None:
    lost = [s for s in sent if s.copies == 0]
    if lost:
        fail(f"{len(lost)} of {len(sent)} requests reached neither v1 nor v2",
             expected="every request forwarded to one backend",
             received=_examples(lost, lambda s: f"x-user-id {s.user!r}: {describe(s.response)}"),
             hint="the routes must send every request to cluster v1 or v2")


@check("x-user-bucket follows the specification for 400 user ids",
       hint=BUCKET_HINT)
def test_bucket_follows_spec(sample):
    _require_arrival(sample)
    unset = [s for s in sample if s.bucket is None]
    if len(unset) == len(sample):
        fail("the backends received no x-user-bucket header at all",
             expected="x-user-bucket: experimental or stable on every request",
             received="no such header on any request", hint=BUCKET_HINT)
    wrong = [s for s in sample if s.bucket != s.expected]
    if wrong:
        experimental = sum(1 for s in sample if s.expected == "experimental")
        fail(f"{len(wrong)} of {len(sample)} users got another bucket than the specification's",
             expected=f"{experimental} experimental and {len(sample) - experimental} stable, each as specified",
             received=_examples(wrong, lambda s: f"{s.user!r} -> {s.bucket!r} (specified: {s.expected}, "
                                                 f"h mod 100 = {_h(s.user) % 100})"),
             hint=_bucket_hint(wrong))


def _h(user: str) -> int:
    h = 5381
    for byte in user.encode():
        h = (h * 33 + byte) % 2**32
    return h


def _bucket_hint(wrong: list[Sent]) -> str:
    if all(_h(s.user) >= 2**31 for s in wrong if s.user):
        return ("only users whose hash is 2^31 or more are wrong: that is signed 32-bit arithmetic (LuaJIT's bit "
                "library returns signed numbers); wrap with % 4294967296 on plain numbers instead")
    if all(_h(s.user) % 100 == 20 for s in wrong if s.user):
        return "only users at exactly 20 are wrong: experimental means h mod 100 < 20, not <= 20"
    return BUCKET_HINT


@check("Experimental users are served by v2, stable users by v1", hint=ROUTE_HINT)
def test_version_follows_bucket(sample):
    _require_arrival(sample)
    twice = [s for s in sample if s.copies > 1]
    if twice:
        fail("some requests reached a backend more than once",
             expected="each request served once", received=_examples(twice, lambda s: f"{s.user!r} x{s.copies}"))
    wrong = [s for s in sample if s.bucket in VERSION_OF and s.version != VERSION_OF[s.bucket]]
    if wrong:
        stuck = all(s.version == "v1" for s in wrong)
        fail(f"{len(wrong)} of {len(sample)} requests went to the other version than their bucket says",
             expected="x-user-bucket experimental -> v2, stable -> v1",
             received=_examples(wrong, lambda s: f"{s.user!r} with bucket {s.bucket} served by {s.version}"),
             hint=("every experimental request still went to v1: the route was picked before Lua set the header "
                   "(with clear_route_cache: false, call request_handle:clearRouteCache()), or there is no route "
                   "for the experimental bucket") if stuck else ROUTE_HINT)
    if not any(s.version == "v2" for s in sample):
        fail("no request was served by v2", expected="the experimental users served by v2",
             received="every request served by v1", hint=ROUTE_HINT)


@check("The same user always lands in the same bucket and version",
       hint="the bucket must depend on x-user-id alone: no randomness, no time, no per-worker state")
def test_same_user_same_bucket(lab):
    users = sample_users(7, 30)
    order = users * REPEATS
    random.Random(7).shuffle(order)
    sent = send(lab, order)
    _require_arrival(sent)
    if all(s.bucket is None for s in sent):
        fail("the backends received no x-user-bucket header, so no user has a bucket yet",
             expected=f"each user's {REPEATS} requests with the same x-user-bucket",
             received="no x-user-bucket on any request", hint=BUCKET_HINT)
    seen: dict[str, set] = {}
    for s in sent:
        seen.setdefault(s.user, set()).add((s.bucket, s.version))
    unstable = {u: v for u, v in seen.items() if len(v) > 1}
    if unstable:
        user, outcomes = next(iter(unstable.items()))
        fail(f"{len(unstable)} of {len(users)} users changed bucket or version between requests",
             expected=f"each user's {REPEATS} requests in one bucket, served by one version",
             received=f"{user!r}: " + ", ".join(f"{b} on {v}" for b, v in sorted(outcomes, key=str)),
             hint="compute the bucket from the x-user-id header only (math.random or os.time make it change)")


@check("A request without x-user-id is stable and served by v1",
       hint="headers():get('x-user-id') is nil when the header is absent: handle nil before hashing")
def test_no_header_is_stable(lab):
    with lab.envoy().delta(r"\.lua\.") as lua:
        [sent] = send(lab, [None])
    lua_errors = sum(v for k, v in lua.changed().items() if k.endswith(".errors"))
    if sent.copies == 0:
        fail("a request without x-user-id did not reach a backend",
             expected="x-user-bucket: stable, served by v1", received=describe(sent.response),
             hint="a Lua error (calling a method on nil) makes Envoy answer 500 itself: test for nil first")
    if sent.bucket != "stable" or sent.version != "v1":
        fail("a request without x-user-id is not treated as the README says",
             expected="x-user-bucket: stable, served by v1",
             received=f"x-user-bucket: {sent.bucket}, served by {sent.version}",
             hint=("the script failed on this request (lua.errors +1): a Lua error (like taking the length of nil) "
                   "stops it, and Envoy passes the request on without your header. Test for nil before hashing")
             if lua_errors else "without x-user-id the bucket is 'stable': set x-user-bucket to it all the same")


@check("A client cannot choose its own bucket",
       hint="use headers():replace(), which overwrites, not headers():add(), which keeps the client's value")
def test_client_cannot_choose_bucket(lab):
    users = [u for u in sample_users(11, 60) if bucket_of(u) == "stable"][:10]
    sent = send(lab, users, extra={"x-user-bucket": "experimental"})
    _require_arrival(sent)
    cheated = [s for s in sent if s.version != "v1" or s.bucket != "stable"]
    if cheated:
        # 'stable' arriving at v2 is either a stale route (chosen by the client's header
        # before Lua ran) or add() (the client's value stays beside Lua's, and the route
        # sees it). A user who is experimental by the specification tells them apart.
        experimental = next(u for u in sample_users(13, 100) if bucket_of(u) == "experimental")
        [probe] = send(lab, [experimental])
        stale = all(s.bucket == "stable" and s.version == "v2" for s in cheated) and probe.version == "v1"
        fail("a client that sent x-user-bucket: experimental itself got it",
             expected="stable users stay stable (served by v1) whatever header they send",
             received=_examples(cheated, lambda s: f"{s.user!r} arrived with x-user-bucket {s.bucket!r} at "
                                                   f"{s.version}"),
             hint=("Lua wrote 'stable', yet the client's own header chose the route: it was picked before Lua ran "
                   "and never again (route cache; with clear_route_cache: false call "
                   "request_handle:clearRouteCache())") if stale else
                  "headers():replace('x-user-bucket', bucket) drops the client's value; add() appends to it")


@check("Every response carries x-envoy-lua-processed: true",
       hint="in envoy_on_response: response_handle:headers():add('x-envoy-lua-processed', 'true')")
def test_response_marked(lab, sample):
    sent = sample + send(lab, [None])
    unmarked = [s for s in sent if s.response.headers.get("x-envoy-lua-processed") != "true"]
    if unmarked:
        fail(f"{len(unmarked)} of {len(sent)} responses lack x-envoy-lua-processed: true",
             expected="x-envoy-lua-processed: true on every response, v1 and v2 alike",
             received=_examples(unmarked, lambda s: f"x-user-id {s.user!r}: x-envoy-lua-processed: "
                                                    f"{s.response.headers.get('x-envoy-lua-processed')}"))


# -- latency: information on the scorecard, never a verdict -----------------------

_PLAIN_ENVOY = """
admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}}}
static_resources:
  listeners:
  - address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: plain
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, route: {{cluster: v1}}}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
  - name: v1
    connect_timeout: 1s
    load_assignment:
      cluster_name: v1
      endpoints: [{{lb_endpoints: [{{endpoint: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {v1}}}}}}}}}]}}]
"""


def _plain_envoy(lab, tmp: Path) -> tuple[EnvoyProcess, str]:
    """An Envoy like the learner's but without the Lua filter, on a free port."""
    port = free_port()
    config = tmp / "plain-envoy.yaml"
    config.write_text(_PLAIN_ENVOY.format(port=port, v1=lab.port("v1")))
    return EnvoyProcess(config, workdir=tmp, name="plain-envoy").start(), f"http://127.0.0.1:{port}/"


@check("The filter answers 200 requests in a row, each one marked (the latency it adds is shown as a note)",
       hint="every response through the filter must be 200 with x-envoy-lua-processed: true")
def test_filter_latency(lab, tmp_path, record_property):
    plain, plain_url = _plain_envoy(lab, tmp_path)
    options = dict(engine="builtin", requests=LATENCY_REQUESTS, concurrency=1, headers={"x-user-id": "alice"})
    try:
        # The load engine, one connection, back to back: the same route with and without the filter.
        with_lua = load.run(lab.url("envoy", "listener", "/"), count_header="x-envoy-lua-processed", **options)
        without = load.run(plain_url, **options)
    finally:
        plain.stop()
    p50, p99 = (with_lua.durations.percentile(p) * 1000 for p in (50, 99))
    q50, q99 = (without.durations.percentile(p) * 1000 for p in (50, 99))
    record_property("note", f"latency over {LATENCY_REQUESTS} requests (meshlab's load engine, information only): "
                            f"with the Lua filter p50 {p50:.2f} ms, p99 {p99:.2f} ms; the same Envoy route without "
                            f"it p50 {q50:.2f} ms, p99 {q99:.2f} ms; the filter adds about {p50 - q50:+.2f} ms at p50")
    marked = with_lua.header_counts.get("true", 0)
    if with_lua.ok != LATENCY_REQUESTS or marked != LATENCY_REQUESTS:
        fail(f"of {LATENCY_REQUESTS} requests in a row, {with_lua.ok} were answered 200 and {marked} marked",
             expected="HTTP 200 with x-envoy-lua-processed: true, every time",
             received=f"status codes: {with_lua.codes_text()}; x-envoy-lua-processed values: "
                      + ", ".join(f"{v or '(none)'} x {n}" for v, n in sorted(with_lua.header_counts.items())))


@check("Envoy's Lua filter ran for every request of these checks without a single error",
       hint="`curl -s localhost:9901/stats?filter=lua` shows lua.errors; Envoy's log (level warning) shows the "
            "Lua error message and line")
def test_no_lua_errors(lab):
    # "No errors" means something only once the learner's code does something: an empty
    # filter runs without errors too.
    [probe] = send(lab, sample_users(17, 1))
    marked = probe.response.headers.get("x-envoy-lua-processed")
    stats = lab.envoy().stats(r"\.lua\.")
    errors = {name: value for name, value in stats.items() if name.endswith(".errors")}
    executions = sum(value for name, value in stats.items() if name.endswith(".executions"))
    if not errors:
        fail("Envoy has no Lua filter: there is no lua.errors counter",
             expected="an envoy.filters.http.lua filter before the router", received="no *.lua.errors stat",
             hint="keep the Lua filter of the starter in http_filters, before the router")
    total = sum(errors.values())
    if total:
        fail(f"the Lua code failed {total} times during the checks",
             expected="lua.errors: 0", received=", ".join(f"{k}: {v}" for k, v in errors.items()),
             hint="read the Lua error in Envoy's log (meshlab start 5, then the log file it names)")
    if executions == 0:
        fail("the Lua filter never ran", expected="lua.executions > 0", received="0")
    if probe.bucket is None and marked is None:
        fail("the Lua filter runs, but your code in it does nothing yet, so no errors proves nothing",
             expected="the filter's work visible: x-user-bucket set on the request (step 2) or "
                      "x-envoy-lua-processed on the response (step 3)",
             received=f"x-user-id {probe.user!r} reached {probe.version or 'no backend'} without x-user-bucket, "
                      "and the response has no x-envoy-lua-processed",
             hint="steps 2 and 3 of bucket.lua; then this check counts the Lua errors of all the checks' requests")
