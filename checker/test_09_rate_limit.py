"""Lab 09 — global rate limiting: two Envoy replicas ask the learner's rate-limit
service, whose two replicas count in one Redis.

The limits are limits.yaml's: each user 5 requests per second, the user `batch-job` 2,
the path /report 3 for everyone together. envoy-a asks ratelimit-a and fails open;
envoy-b asks ratelimit-b and fails closed. Every port comes from lab.yaml (`lab.port`).

Checks decide from the HTTP statuses and headers Envoy returns, Envoy's own rate-limit
counters (`cluster.<route's cluster>.ratelimit.ok / over_limit / error /
failure_mode_allowed`), what reached the app (its journal) and the counters the service
left in Redis (read with redis-py); never from the learner's files.

Windows are one second long. A check that needs an exact count sends within one second:
in the current one if enough of it is left, else from the next boundary, and it repeats
with fresh users (from a boundary) if the machine was too slow to finish within that
second, so an exact count never depends on luck. The service reads the same clock, so a
request sent after the window began and answered before it ended was counted in it.
(The fixed descriptors, batch-job and /report, are sent by one check only, and its
retries start from a boundary: a new window.) Only the first check sends concurrently
(both Envoys at once, to catch a count that is read and then written back); the others
send one request at a time, so a racy counter fails only where a race is what is being
checked.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, TypeVar

import grpc
import httpx
import pytest
import redis
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from meshlab.grading import check, describe, fail

pytestmark = pytest.mark.lab("09-rate-limit")

ENVOYS = ("envoy-a", "envoy-b")               # services of lab.yaml, each with a `listener` port
SERVICES = ("ratelimit-a", "ratelimit-b")     # each with a `grpc` port
DOMAIN = "ingress"
USER_LIMIT, BATCH_LIMIT, REPORT_LIMIT = 5, 2, 3
BURST = 24                     # requests of one user in the concurrent burst, half per Envoy
ROUNDS = 3                     # bursts, each of its own user: a racy count rarely comes out exact thrice
MARGIN_S = 0.03                # start this long after a second boundary
WINDOW_BUDGET_S = 0.95         # and be done this long after it (answers came, so decisions fell in it)
# Begin in the current second if this much of the budget is left, else wait for the next
# one: two to three times what a try took on a loaded 2-core machine (load average 3-5:
# 55-120 ms for the one-at-a-time checks' 12-22 requests, 70-135 ms for a burst of 24
# with its counters and Redis keys). A try that does not fit costs its own time and a
# retry from the boundary it would have waited for anyway; a needless wait, up to 1 s.
ROOM_S = 0.2
BURST_ROOM_S = 0.3
RESET_ROOM_S = 0.1
ATTEMPTS = 3                   # from a boundary, after a first try in the current second that did not fit
FAST_S = 0.5                   # "answers quickly" without Redis (redis-py's default retries: ~3 s)
COUNTERS = ("ok", "over_limit", "error", "failure_mode_allowed")

ENVOY_HINT = ("both Envoys need the envoy.filters.http.ratelimit filter before the router (domain ingress, "
              "rate_limit_service to their own service's cluster with http2_protocol_options) and the virtual "
              "host's rate_limits: x-user-id as descriptor key `user`, :path as descriptor key `path`")
MATCH_HINT = ("step 3: look up \"key_value\" first and \"key\" alone second at each level; the limit is the one "
              "of the node the last entry reaches; no node means no limit")
TIMEOUT_HINT = ("ratelimit.error counts calls that failed or took longer than the filter's timeout (default 20 ms): "
                "set `timeout: 0.5s` on the filter, and read the services' logs")
COUNT_HINT = ("step 4: count in Redis, atomically (a Lua script doing INCRBY and EXPIRE, or MULTI/EXEC), under "
              "a key made of the domain, the descriptor's entries and the window's start")

# The titles above are literals (the course linter reads them without importing this
# module); they state these numbers, so keep them in step.
assert (USER_LIMIT, BURST - USER_LIMIT, BATCH_LIMIT, REPORT_LIMIT, FAST_S) == (5, 19, 2, 3, 0.5)

T = TypeVar("T")


# -- traffic ------------------------------------------------------------------------------

@dataclass
class Sent:
    envoy: str
    path: str
    user: str | None
    response: httpx.Response

    @property
    def limited(self) -> bool:
        return self.response.status_code == 429


def send(lab, envoy: str, path: str = "/", user: str | None = None) -> Sent:
    headers = {"x-user-id": user} if user is not None else {}
    response = lab.get(lab.url(envoy, "listener", path), headers=headers,
                       hint=f"{envoy} listens on {lab.url(envoy, 'listener')}")
    return Sent(envoy, path, user, response)


class Together:
    """Requests sent at the same moment: one thread and one connection each, the
    connections opened (and used once) beforehand, the threads released together."""

    def __init__(self, lab, count: int):
        self.urls = {envoy: lab.url(envoy, "listener") for envoy in ENVOYS}
        # verify=False: plain HTTP, so no CA bundle loaded per client (~50 ms each).
        self.clients = [httpx.Client(timeout=10.0, trust_env=False, verify=False) for _ in range(count)]
        self.pool = ThreadPoolExecutor(count)  # its threads stay for every send

    def __enter__(self) -> "Together":
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown()
        for client in self.clients:
            client.close()

    def warm(self, envoys: list[str]) -> None:
        """Open each client's connection (to the Envoy it sends to), all at once."""
        list(self.pool.map(lambda pair: self._get(pair[0], pair[1], "/", None), zip(self.clients, envoys)))

    def send(self, plan: list[tuple[str, str, str | None]]) -> list[Sent]:
        gate = threading.Barrier(len(plan))

        def one(index: int) -> Sent:
            envoy, path, user = plan[index]
            gate.wait()
            return Sent(envoy, path, user, self._get(self.clients[index], envoy, path, user))

        try:
            return list(self.pool.map(one, range(len(plan))))
        except BaseException:
            # A Ctrl-C here cancels the sends not yet begun: those begun must not wait
            # at the gate for them (and the pool's shutdown for those, forever).
            gate.abort()
            raise

    def _get(self, client: httpx.Client, envoy: str, path: str, user: str | None) -> httpx.Response:
        headers = {"x-user-id": user} if user is not None else {}
        try:
            return client.get(self.urls[envoy] + path, headers=headers)
        except httpx.HTTPError as error:
            fail(f"a request to {envoy} failed", expected="an HTTP response",
                 received=f"{type(error).__name__}: {error}", hint=ENVOY_HINT)


def next_window() -> float:
    """Sleep until just after the next second boundary; the boundary."""
    now = time.time()
    boundary = int(now) + 1
    time.sleep(boundary + MARGIN_S - now)
    return boundary


def this_window(room: float = ROOM_S) -> float:
    """The start of the second to send in: the current one if ROOM of its budget is left
    (waiting for a boundary is most of what these checks would cost), else the next."""
    now = time.time()
    if now - int(now) + room <= WINDOW_BUDGET_S:
        return int(now)
    return next_window()


def in_one_window(attempt: Callable[[int], T], room: float = ROOM_S) -> T:
    """ATTEMPT(n)'s result, run within one window: begun after it started, finished
    before it ended (with fresh users on each try, each retry from a boundary: a slow
    machine costs a retry, never a wrong count). The first try is in the current second
    if ROOM of it is left."""
    for n in range(ATTEMPTS + 1):
        window = this_window(room) if n == 0 else next_window()
        result = attempt(n)
        if time.time() < window + WINDOW_BUDGET_S:
            return result
    too_slow()


def too_slow() -> None:
    fail(f"{ATTEMPTS + 1} tries in a row did not fit in one second", expected=f"the requests done within "
         f"{WINDOW_BUDGET_S} s", received="slower each time", hint="the service or the machine is very slow: "
         "look at the services' logs; is the Envoys' timeout long enough?")


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


def statuses(sent: list[Sent]) -> str:
    counts = Counter(s.response.status_code for s in sent)
    return ", ".join(f"{n} x {code}" for code, n in sorted(counts.items()))


# -- what Envoy counted ----------------------------------------------------------------------

def counters(lab) -> dict[str, Counter]:
    """Each Envoy's rate-limit counters, summed over clusters (Envoy counts them under the
    cluster the route sends to, whatever its name)."""
    out = {}
    for envoy in ENVOYS:
        totals: Counter = Counter()
        for name, value in lab.envoy(envoy).stats(r"\.ratelimit\.").items():
            kind = name.rsplit(".", 1)[-1]
            if name.startswith("cluster.") and kind in COUNTERS:
                totals[kind] += value
        out[envoy] = totals
    return out


def moved(before: dict[str, Counter], after: dict[str, Counter]) -> dict[str, Counter]:
    return {envoy: Counter({k: after[envoy][k] - before[envoy][k] for k in COUNTERS}) for envoy in ENVOYS}


def show(delta: dict[str, Counter]) -> str:
    return "; ".join(f"{envoy}: " + ", ".join(f"ratelimit.{k} +{delta[envoy][k]}" for k in COUNTERS)
                     for envoy in ENVOYS)


def _grpc_clusters(node: object) -> list[str]:
    """The clusters named by every rate_limit_service in a config dump."""
    found = []
    if isinstance(node, dict):
        service = node.get("rate_limit_service")
        if isinstance(service, dict):
            found.append(service.get("grpc_service", {}).get("envoy_grpc", {}).get("cluster_name", ""))
        for value in node.values():
            found += _grpc_clusters(value)
    elif isinstance(node, list):
        for value in node:
            found += _grpc_clusters(value)
    return found


def call_trouble(lab, envoy: str) -> str | None:
    """Why ENVOY's calls to its rate-limit service fail, as Envoy reports it: the cluster
    its filter names, and that cluster's connection counters (None: nothing to blame
    but time)."""
    admin = lab.envoy(envoy)
    clusters = {c["name"] for c in admin.clusters()}
    service = dict(zip(ENVOYS, SERVICES))[envoy]
    port = lab.port(service, "grpc")
    for name in dict.fromkeys(_grpc_clusters(admin.config_dump())):
        if name not in clusters:
            return (f"{envoy}'s rate-limit filter sends to the cluster {name!r}, which {envoy} does not have (its "
                    f"clusters: {', '.join(sorted(clusters))}): envoy_grpc's cluster_name must be the name of "
                    f"the cluster of {service}")
        stats = admin.stats(rf"^cluster\.{re.escape(name)}\.upstream_cx_(http1_total|http2_total|protocol_error|"
                            rf"connect_fail)$")
        count = {key.rsplit(".", 1)[-1]: value for key, value in stats.items()}
        if count.get("upstream_cx_http1_total") and not count.get("upstream_cx_http2_total"):
            return (f"{envoy}'s cluster {name!r} speaks HTTP/1.1 to a gRPC service (upstream_cx_protocol_error "
                    f"{count.get('upstream_cx_protocol_error', 0)}): gRPC needs HTTP/2, typed_extension_protocol_"
                    "options with envoy.extensions.upstreams.http.v3.HttpProtocolOptions and explicit_http_config: "
                    "{http2_protocol_options: {}}")
        if count.get("upstream_cx_connect_fail"):
            ports = sorted({h.port for h in admin.hosts() if h.cluster == name})
            return (f"{envoy}'s cluster {name!r} cannot connect (upstream_cx_connect_fail "
                    f"{count['upstream_cx_connect_fail']}) to port {', '.join(map(str, ports))}: {service} "
                    f"listens on 127.0.0.1:{port}; if that is the port, read {service}'s log")
    failure = service_error(port)
    if failure:
        return (f"{service} answers an error itself, asked directly with Redis up ({failure}): its log in the "
                f"lab's run folder shows the traceback")
    return None


def service_error(port: int) -> str | None:
    """The error the service on PORT answers for a new user, if it answers one."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            rls_pb2_grpc.RateLimitServiceStub(channel).ShouldRateLimit(question(fresh("direct")), timeout=2)
        except grpc.RpcError as error:
            return f"{error.code().name}: {error.details()}"
    return None


def answering(lab, *envoys: str) -> None:
    """Fail at once if ENVOYS' calls to their rate-limit service fail: what a check sees
    then says nothing about limits (and its own hint would point elsewhere)."""
    before = counters(lab)
    for envoy in envoys:
        send(lab, envoy, "/", fresh("probe"))
    delta = moved(before, counters(lab))
    for envoy in envoys:
        if delta[envoy]["error"]:
            fail(f"{envoy}'s calls to the rate-limit service fail", expected=f"an answer from the service "
                 f"(ratelimit.ok or over_limit +1) for one request through {envoy}", received=show(delta),
                 hint=call_trouble(lab, envoy) or TIMEOUT_HINT)


def unlimited_envoy(delta: dict[str, Counter], passed: Callable[[str], int], sent: int) -> str | None:
    """The Envoy that asked the service about each of its SENT requests and let every one
    through, while the other one was refused some: its descriptors reach no limit."""
    for envoy, other in (tuple(ENVOYS), tuple(reversed(ENVOYS))):
        if passed(envoy) == sent and delta[envoy]["ok"] >= sent and not delta[envoy]["over_limit"] \
                and delta[other]["over_limit"]:
            return envoy
    return None


def unlimited_alone(lab, envoy: str) -> bool:
    """Whether ENVOY lets a user through unlimited with nobody else sending: USER_LIMIT + 1
    requests of a new user, one at a time within a second, all pass and Envoy counts no
    over_limit. A burst in which one Envoy was never refused can also come from lost
    updates (a count read and written back by two replicas at once); one request at a
    time there is no race, so only descriptors that reach no limit pass them all."""
    def attempt(n: int) -> tuple[list[Sent], dict[str, Counter]]:
        user, before = fresh("alone"), counters(lab)
        sent = [send(lab, envoy, "/", user) for _ in range(USER_LIMIT + 1)]
        return sent, moved(before, counters(lab))
    sent, delta = in_one_window(attempt)
    return all(s.response.status_code == 200 for s in sent) and not delta[envoy]["over_limit"]


def unlimited_hint(envoy: str) -> str:
    other = next(e for e in ENVOYS if e != envoy)
    return (f"the service found no limit for {envoy}'s descriptors, while it did for {other}'s: compare the "
            f"rate_limits of the two Envoys (x-user-id as descriptor key `user`, :path as descriptor key `path`)")


# -- what the service left in Redis -------------------------------------------------------------

@dataclass
class Key:
    name: str
    value: str | None
    pttl_ms: int


def redis_keys(lab, containing: str) -> list[Key]:
    port = lab.port("redis")
    client = redis.Redis(port=port, socket_timeout=2, decode_responses=True)
    try:
        names = sorted(client.scan_iter(match=f"*{containing}*", count=1000))
        return [Key(n, client.get(n), client.pttl(n)) for n in names]
    except redis.RedisError as error:
        fail("Redis does not answer", expected=f"Redis on 127.0.0.1:{port}",
             received=str(error), hint="the lab starts Redis: look at its log in the lab's run folder")
    finally:
        client.close()


# -- 1. the global limit ------------------------------------------------------------------------

@dataclass
class Burst:
    user: str
    sent: list[Sent]
    delta: dict[str, Counter]
    keys: list[Key] = field(default_factory=list)

    def passed(self, envoy: str | None = None) -> int:
        return sum(1 for s in self.sent if s.response.status_code == 200 and envoy in (None, s.envoy))


@pytest.fixture(scope="module")
def bursts(lab) -> list[Burst]:
    """ROUNDS times, BURST requests of a new user, half through each Envoy, all at once;
    what Envoy counted, and (read at once, before the window's key can expire) what Redis
    holds."""
    envoys = [envoy for _ in range(BURST // 2) for envoy in ENVOYS]
    with Together(lab, BURST) as together:
        together.warm(envoys)

        def attempt(n: int) -> Burst:
            user = fresh("burst")
            before = counters(lab)
            sent = together.send([(envoy, "/", user) for envoy in envoys])
            keys = redis_keys(lab, user)
            return Burst(user, sent, moved(before, counters(lab)), keys)
        return [in_one_window(attempt, BURST_ROOM_S) for _ in range(ROUNDS)]


@check("A user gets exactly 5 requests per second across both Envoys together; the other 19 get 429 with "
       "x-envoy-ratelimited",
       hint=ENVOY_HINT)
def test_global_limit(lab, bursts):
    for number, burst in enumerate(bursts, 1):
        judge_burst(lab, burst, f"burst {number} of {ROUNDS}: ")


def judge_burst(lab, burst: Burst, which: str) -> None:
    passed, delta = burst.passed(), burst.delta
    asked = {envoy: delta[envoy]["ok"] + delta[envoy]["over_limit"] + delta[envoy]["error"] for envoy in ENVOYS}
    received = (f"{which}{statuses(burst.sent)} (envoy-a let {burst.passed('envoy-a')} through, envoy-b "
                f"{burst.passed('envoy-b')}); {show(delta)}")
    expected = (f"{USER_LIMIT} x 200 and {BURST - USER_LIMIT} x 429 for {BURST} requests sent at once within "
                f"one second, {BURST // 2} through each Envoy")
    silent = [envoy for envoy in ENVOYS if asked[envoy] == 0]
    if silent:
        fail(f"{' and '.join(silent)} did not ask the rate-limit service about any request",
             expected=expected, received=received, hint=ENVOY_HINT)
    failing = [envoy for envoy in ENVOYS if delta[envoy]["error"]]
    if failing:
        trouble = next(filter(None, (call_trouble(lab, envoy) for envoy in failing)), None)
        fail(f"{' and '.join(failing)}'s calls to the rate-limit service failed" if trouble else
             "the rate-limit service did not answer every request in time", expected=expected, received=received,
             hint=trouble or TIMEOUT_HINT)
    if passed == BURST and not burst.keys:
        fail(f"none of the {BURST} requests was limited", expected=expected, received=received,
             hint="the service answered OK every time: it found no limit for (\"user\", <id>). Do the Envoys "
                  "send the descriptor key `user` (limits.yaml's key)? " + MATCH_HINT)
    if passed == 2 * USER_LIMIT and burst.passed("envoy-a") == burst.passed("envoy-b") == USER_LIMIT:
        fail(f"each Envoy let {USER_LIMIT} through: {2 * USER_LIMIT} in all", expected=expected, received=received,
             hint="each replica of the service keeps its own count: the count must live in Redis, shared by "
                  "both replicas. " + COUNT_HINT)
    deaf = unlimited_envoy(delta, burst.passed, BURST // 2)
    if deaf and unlimited_alone(lab, deaf):
        fail(f"{deaf} let all {BURST // 2} of its requests through", expected=expected, received=received,
             hint=unlimited_hint(deaf))
    if passed > USER_LIMIT:
        fail(f"{passed} requests passed where {USER_LIMIT} may", expected=expected, received=received,
             hint="requests that arrive together read the same count and are all admitted: reading the count "
                  "and writing it back (GET, then SET) is not atomic. " + COUNT_HINT)
    if passed < USER_LIMIT:
        fail(f"only {passed} requests passed", expected=expected, received=received,
             hint=f"a user may make {USER_LIMIT} requests per second: OVER_LIMIT only when the count after this "
                  f"hit is above requests_per_unit")
    unmarked = [s for s in burst.sent if s.limited and s.response.headers.get("x-envoy-ratelimited") != "true"]
    others = [s for s in burst.sent if s.response.status_code not in (200, 429)]
    if others or unmarked:
        fail("some refusals were not Envoy's rate-limit 429", expected=expected + ", each 429 with "
             "x-envoy-ratelimited: true", received=describe((others or unmarked)[0].response), hint=ENVOY_HINT)


@check("Counts live in Redis: one key for the user in that second, counting every request, with an expiry",
       hint=COUNT_HINT)
def test_counts_in_redis(lab, bursts):
    for burst in bursts:
        judge_keys(lab, burst)


def judge_keys(lab, burst: Burst) -> None:
    keys = burst.keys
    received = "; ".join(f"{k.name} = {k.value} (expires in {k.pttl_ms} ms)" for k in keys) or "no such key"
    expected = f"one key containing {burst.user!r}, value {BURST}, expiring within the window's unit"
    failing = [envoy for envoy in ENVOYS if burst.delta[envoy]["error"]]
    calls_failed = (f"{' and '.join(failing)}'s calls to the rate-limit service failed (ratelimit.error), so "
                    "nothing of theirs was counted: the first check says why")
    if not keys:
        fail(f"Redis holds no key for the burst's user {burst.user!r}", expected=expected, received=received,
             hint=calls_failed if failing else "the service does not count in Redis (or not under a key naming "
                  "the descriptor's value). " + COUNT_HINT)
    if len(keys) > 1:
        fail(f"Redis holds {len(keys)} keys for one user in one second", expected=expected, received=received,
             hint="one counter per descriptor and window: the key holds the window's start (the time rounded "
                  "down to the unit), not the time of each request")
    key = keys[0]
    if failing and key.value != str(BURST):
        fail(f"the count is {key.value}: the requests of {' and '.join(failing)} were never counted",
             expected=expected, received=received, hint=calls_failed)
    deaf = unlimited_envoy(burst.delta, burst.passed, BURST // 2)
    if deaf and key.value == str(BURST // 2) and unlimited_alone(lab, deaf):
        fail(f"the count is {key.value}: only the requests through one Envoy were counted", expected=expected,
             received=received, hint=unlimited_hint(deaf))
    if key.value != str(BURST):
        fail(f"the count is {key.value}, not the {BURST} requests sent", expected=expected, received=received,
             hint="every hit must be counted, over the limit or not; a count lower than the hits means "
                  "concurrent updates were lost (GET then SET). " + COUNT_HINT)
    if key.pttl_ms < 0:
        fail("the key never expires", expected=expected, received=received,
             hint="EXPIRE the key (for the unit's length) in the same step as the INCR: otherwise every "
                  "user's every window stays in Redis forever, and a crash between two commands leaves one too")


# -- 2. descriptors -----------------------------------------------------------------------------

def by_outcome(sent: list[Sent]) -> tuple[int, int]:
    return sum(1 for s in sent if s.response.status_code == 200), sum(1 for s in sent if s.limited)


@check("Each user, the batch job (2/s) and /report (3/s for everyone) are counted separately", hint=MATCH_HINT)
def test_descriptors_counted_separately(lab):
    answering(lab, "envoy-a")
    def attempt(n: int) -> dict[str, list[Sent]]:
        first, second = fresh("first"), fresh("second")
        groups: dict[str, list[Sent]] = {"first": [], "second": [], "batch-job": [], "report": []}
        for _ in range(USER_LIMIT):
            groups["first"].append(send(lab, "envoy-a", "/", first))
            groups["second"].append(send(lab, "envoy-a", "/", second))
        groups["first"].append(send(lab, "envoy-a", "/", first))
        for _ in range(BATCH_LIMIT + 1):
            groups["batch-job"].append(send(lab, "envoy-a", "/", "batch-job"))
        for _ in range(REPORT_LIMIT + 1):
            groups["report"].append(send(lab, "envoy-a", "/report", fresh("reader")))
        return groups
    groups = in_one_window(attempt)
    want = {"first": (USER_LIMIT, 1), "second": (USER_LIMIT, 0), "batch-job": (BATCH_LIMIT, 1),
            "report": (REPORT_LIMIT, 1)}
    what = {"first": f"a user's {USER_LIMIT + 1} requests", "second": f"another user's {USER_LIMIT}",
            "batch-job": f"batch-job's {BATCH_LIMIT + 1}", "report": f"{REPORT_LIMIT + 1} users' /report"}
    expected = "; ".join(f"{what[g]}: {ok} pass, {no} limited" for g, (ok, no) in want.items())
    got = {g: by_outcome(sent) for g, sent in groups.items()}
    received = "; ".join(f"{what[g]}: {ok} pass, {no} limited" for g, (ok, no) in got.items())
    wrong = [g for g in want if got[g] != want[g]]
    if not wrong:
        return
    if all(no == 0 for _, no in got.values()):
        hint = ("nothing was limited: the service found no limit for any descriptor. Do the Envoys send the "
                "descriptor keys `user` and `path`, and does find_limit find them? " + MATCH_HINT)
    elif wrong == ["batch-job"]:
        hint = ("batch-job got the limit of `user` alone: the node \"user_batch-job\" (key and value) must win "
                "over \"user\" (the key alone). " + MATCH_HINT)
    elif "report" in wrong and got["report"][1] == 0:
        hint = ("/report was not limited: it needs the descriptor (\"path\", \"/report\") from the :path "
                "header (descriptor key `path`), and find_limit must find \"path_/report\". " + MATCH_HINT)
    elif "second" in wrong:
        hint = ("another user was limited by the first user's count: the Redis key must hold the descriptor's "
                "entries, keys and values")
    else:
        hint = MATCH_HINT
    fail(f"{', '.join(what[g] for g in wrong)} came out wrong", expected=expected, received=received, hint=hint)


@check("Requests that match no limit (no x-user-id, a path without a limit) are never limited",
       hint="a descriptor no node of limits.yaml matches has no limit: answer OK for it, count nothing")
def test_unmatched_not_limited(lab):
    answering(lab, "envoy-a")
    def attempt(n: int) -> tuple[list[Sent], list[Sent]]:
        user = fresh("limited")
        limited = [send(lab, "envoy-a", "/", user) for _ in range(USER_LIMIT + 2)]
        anonymous = [send(lab, "envoy-a", path) for _ in range(5) for path in ("/", "/other", "/reports")]
        return anonymous, limited
    before = counters(lab)
    anonymous, limited = in_one_window(attempt)
    delta = moved(before, counters(lab))
    expected = (f"15 requests without x-user-id to /, /other and /reports: all 200; in the same second a user's "
                f"{USER_LIMIT + 2}: {USER_LIMIT} pass, 2 limited (the limiter works)")
    received = f"without x-user-id: {statuses(anonymous)}; the user: {statuses(limited)}; {show(delta)}"
    if by_outcome(limited) != (USER_LIMIT, 2):
        fail("the user's requests were not limited as specified, so this says nothing yet", expected=expected,
             received=received, hint=ENVOY_HINT)
    if any(s.response.status_code != 200 for s in anonymous):
        fail("requests that match no limit were refused", expected=expected, received=received,
             hint="a descriptor that reaches no node of limits.yaml, or stops at a node without a rate_limit, "
                  "has no limit. " + MATCH_HINT)


@check("The window resets: in the next second the same user gets 5 requests again",
       hint="the key's window start must be the time rounded down to the unit (int(now // 1) for second), so a "
            "new second is a new counter")
def test_window_resets(lab):
    answering(lab, "envoy-a")
    for n in range(ATTEMPTS + 1):
        user = fresh("resets")
        # 7 requests one at a time take some 30 ms: waiting for a boundary here would cost
        # a whole second more, for the wait between the two seconds comes on top.
        first_second = this_window(RESET_ROOM_S) if n == 0 else next_window()
        first = [send(lab, "envoy-a", "/", user) for _ in range(USER_LIMIT + 2)]
        if time.time() > first_second + WINDOW_BUDGET_S:
            continue
        next_second = next_window()
        second = [send(lab, "envoy-a", "/", user) for _ in range(USER_LIMIT + 2)]
        if time.time() < next_second + WINDOW_BUDGET_S:
            break
    else:
        too_slow()
    expected = f"in each of two seconds in a row, {USER_LIMIT} pass and 2 are limited"
    received = f"first second: {statuses(first)}; next second: {statuses(second)}"
    if by_outcome(first) != (USER_LIMIT, 2):
        fail("the user was not limited in the first second", expected=expected, received=received,
             hint=ENVOY_HINT)
    if by_outcome(second) != (USER_LIMIT, 2):
        fail("the next second did not start a new count", expected=expected, received=received)


@check("Responses tell the client its limit: x-ratelimit-limit, and x-ratelimit-remaining counting down",
       hint="enable_x_ratelimit_headers: DRAFT_VERSION_03 on the filter, and the service's DescriptorStatus "
            "with current_limit, limit_remaining and duration_until_reset")
def test_ratelimit_headers(lab):
    answering(lab, *ENVOYS)
    def attempt(n: int) -> dict[str, list[Sent]]:
        return {envoy: [send(lab, envoy, "/", user) for _ in range(USER_LIMIT + 1)]
                for envoy, user in (("envoy-a", fresh("headers")), ("envoy-b", fresh("headers")))}
    sent = in_one_window(attempt)
    countdown = [str(n) for n in range(USER_LIMIT - 1, -1, -1)] + ["0"]
    expected = (f"x-ratelimit-limit: {USER_LIMIT}, {USER_LIMIT};w=1 and x-ratelimit-remaining "
                f"{', '.join(countdown)} on a user's {USER_LIMIT + 1} requests, through each Envoy")
    limited = {envoy: any(s.limited for s in responses) for envoy, responses in sent.items()}
    for envoy, responses in sent.items():
        limits = [s.response.headers.get("x-ratelimit-limit") for s in responses]
        remaining = [s.response.headers.get("x-ratelimit-remaining") for s in responses]
        received = f"{envoy}: x-ratelimit-limit {limits[0]!r}, x-ratelimit-remaining {', '.join(map(str, remaining))}"
        if any(limit is None or not limit.startswith(f"{USER_LIMIT}, {USER_LIMIT};w=1") for limit in limits) \
                or remaining != countdown:
            fail(f"{envoy}'s responses do not carry the limit as expected", expected=expected, received=received,
                 hint=unlimited_hint(envoy) if all(limit is None for limit in limits) and not limited[envoy]
                 and any(limited.values()) else None)


# -- 3. when something is down ---------------------------------------------------------------------

def question(user: str) -> rls_pb2.RateLimitRequest:
    """What Envoy would ask about a request of USER."""
    return rls_pb2.RateLimitRequest(domain=DOMAIN, descriptors=[ratelimit_pb2.RateLimitDescriptor(
        entries=[ratelimit_pb2.RateLimitDescriptor.Entry(key="user", value=user)])])


def connected(channel: grpc.Channel, port: int) -> rls_pb2_grpc.RateLimitServiceStub:
    """A stub on CHANNEL to the service on PORT, once a first question was answered (an
    error too): the connection is made and the code paths are warm, so that a later
    question is timed alone. (Not grpc.channel_ready_future: its connectivity poller
    makes closing the channel take 200 ms.)"""
    stub = rls_pb2_grpc.RateLimitServiceStub(channel)
    try:
        stub.ShouldRateLimit(question(fresh("warm")), timeout=5, wait_for_ready=True)
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            fail(f"the rate-limit service on 127.0.0.1:{port} does not answer", expected="an answer",
                 received="no answer within 5 s, with Redis up", hint="read the service's log in the lab's run folder")
    return stub


def ask_service(stub: rls_pb2_grpc.RateLimitServiceStub, user: str) -> tuple[float, str]:
    """Ask the service behind STUB directly about USER: (seconds it took, what it answered)."""
    request = question(user)
    started = time.monotonic()
    try:
        response = stub.ShouldRateLimit(request, timeout=5)
        answer = "OK response, overall_code " + rls_pb2.RateLimitResponse.Code.Name(response.overall_code)
    except grpc.RpcError as error:
        answer = f"error {error.code().name}"
    return time.monotonic() - started, answer


@check("With Redis stopped, each service replica answers an error within 0.5 s",
       hint="step 6: by default the Redis client tries again and again for about 3 s; without retries and "
            "with short socket timeouts it fails at once, and the service answers an error")
def test_fast_without_redis(lab):
    ports = {name: lab.port(name, "grpc") for name in SERVICES}
    channels = {name: grpc.insecure_channel(f"127.0.0.1:{port}") for name, port in ports.items()}
    try:
        stubs = {name: connected(channels[name], port) for name, port in ports.items()}
        with lab.stopped("redis"):
            answers = {name: ask_service(stub, fresh("no-redis")) for name, stub in stubs.items()}
    finally:
        for channel in channels.values():
            channel.close()
    received = "; ".join(f"{name}: {answer} after {took * 1000:.0f} ms" for name, (took, answer) in answers.items())
    expected = f"an error (such as UNAVAILABLE) from each replica within {FAST_S * 1000:.0f} ms"
    if any(answer.startswith("OK") for _, answer in answers.values()):
        fail("a replica answered OK for a user it cannot count", expected=expected, received=received,
             hint="without Redis the service cannot know the count: answer an error (context.abort) and let "
                  "each Envoy's failure_mode_deny decide; if it answered OK without trying Redis, it found no "
                  "limit for (\"user\", <id>): " + MATCH_HINT)
    if any(took > FAST_S for took, _ in answers.values()):
        fail("a replica took too long to notice that Redis is down", expected=expected, received=received)


def through_both(lab) -> tuple[dict[str, list[Sent]], dict[str, Counter], dict[str, int]]:
    """Three requests of a fresh user through each Envoy (a user per Envoy); what Envoy
    counted, and how many of each Envoy's requests reached the app."""
    users = {envoy: fresh(f"down-{envoy}") for envoy in ENVOYS}
    since = lab.journal_position("app")
    before = counters(lab)
    sent = {envoy: [send(lab, envoy, "/", users[envoy]) for _ in range(3)] for envoy in ENVOYS}
    delta = moved(before, counters(lab))
    entries = lab.journal("app", since=since)
    reached = {envoy: sum(1 for e in entries if e["headers"].get("x-user-id") == users[envoy]) for envoy in ENVOYS}
    return sent, delta, reached


def service_ports(lab, envoy: str) -> list[int]:
    """The ports ENVOY's rate-limit filter reaches: the hosts of the cluster its
    rate_limit_service names, as Envoy reports them."""
    admin = lab.envoy(envoy)
    names = set(_grpc_clusters(admin.config_dump()))
    return sorted({h.port for h in admin.hosts() if h.cluster in names})


def answered_anyway(lab, envoy: str, delta: dict[str, Counter], what: str) -> str:
    """Why ENVOY got OK or OVER_LIMIT answers while WHAT was stopped."""
    if what != "Redis":
        ports = ", ".join(map(str, service_ports(lab, envoy))) or "none"
        return (f"{envoy} got answers with {what} stopped, so another process answers it: its rate-limit cluster "
                f"leads to port {ports}, and {what} listens on {lab.port(what, 'grpc')} (if that is the port, "
                f"`ss -ltnp` shows who else listens there: a service started by hand, or left over)")
    other = next(e for e in ENVOYS if e != envoy)
    if delta[other]["error"]:
        return (f"{envoy} got answers without Redis while {other} got errors: the service found no limit for "
                f"{envoy}'s descriptors (so it counted nothing). Compare the rate_limits of the two Envoys")
    return (f"{envoy} got answers anyway: the service answered without Redis (step 3 found no limit, or the "
            f"service does not count in Redis)")


# How each Envoy is configured to fail: failure_mode_deny false on envoy-a, true on envoy-b.
FAILS = {"envoy-a": "3 x 200 (failed open: ratelimit.error +3, failure_mode_allowed +3), all 3 reaching the app",
         "envoy-b": "3 x 500 (failed closed: ratelimit.error +3), none reaching the app"}


def failure_modes(lab, sent: dict[str, list[Sent]], delta: dict[str, Counter], reached: dict[str, int], what: str,
                  envoys: tuple[str, ...] = ENVOYS, expected: str | None = None) -> None:
    """ENVOYS, whose rate-limit calls failed because WHAT was stopped, each failed as
    configured."""
    expected = expected or "; ".join(f"{envoy}: {FAILS[envoy]}" for envoy in envoys)
    received = "; ".join(f"{envoy}: {statuses(sent[envoy])}, {reached[envoy]} reached the app" for envoy in ENVOYS)
    received += f"; {show(delta)}"
    for envoy in envoys:
        if delta[envoy]["error"] != 3:
            asked = delta[envoy]["ok"] + delta[envoy]["over_limit"]
            fail(f"with {what} stopped, {envoy} did not count its calls as errors", expected=expected,
                 received=received,
                 hint=(answered_anyway(lab, envoy, delta, what) if asked else
                       f"{envoy} does not ask a rate-limit service at all. " + ENVOY_HINT))
    if "envoy-a" in envoys and ([s.response.status_code for s in sent["envoy-a"]] != [200] * 3
                                or delta["envoy-a"]["failure_mode_allowed"] != 3 or reached["envoy-a"] != 3):
        fail(f"with {what} stopped, envoy-a did not fail open", expected=expected, received=received,
             hint="envoy-a: failure_mode_deny: false (the default) lets requests through when the service fails")
    if "envoy-b" in envoys and ([s.response.status_code for s in sent["envoy-b"]] != [500] * 3
                                or reached["envoy-b"] != 0):
        fail(f"with {what} stopped, envoy-b did not fail closed", expected=expected, received=received,
             hint="envoy-b: failure_mode_deny: true refuses requests (500) when the service fails")


@check("With Redis stopped, envoy-a fails open (200) and envoy-b fails closed (500)",
       hint="failure_mode_deny: false on envoy-a, true on envoy-b; and the service answers an error without Redis")
def test_redis_down(lab):
    with lab.stopped("redis"):
        sent, delta, reached = through_both(lab)
    failure_modes(lab, sent, delta, reached, "Redis")


@check("With one service replica stopped, only the Envoy next to it fails: envoy-a open, envoy-b closed",
       hint="failure_mode_deny: false on envoy-a, true on envoy-b; and each Envoy's rate-limit cluster leads to "
            "its own replica (ratelimit-a, ratelimit-b)")
def test_service_down(lab):
    # One replica at a time. The other Envoy, answered with both replicas up, must still
    # be answered (its ratelimit.ok) with this one stopped: each Envoy asks its own
    # replica, so the bursts of the first check really were counted by two replicas
    # agreeing through Redis. (An Envoy whose calls fail anyway is the other checks'
    # business: they say why.) The last replica stopped is not used here again: it is
    # started again only if a check comes after this one (`lab.stopped`'s restart).
    for service, envoy in zip(SERVICES, ENVOYS):
        other = next(e for e in ENVOYS if e != envoy)
        own = dict(zip(ENVOYS, SERVICES))[other]
        before = counters(lab)
        send(lab, other, "/", fresh("up"))
        answered_up = moved(before, counters(lab))[other]
        with lab.stopped(service, restart=service != SERVICES[-1]):
            sent, delta, reached = through_both(lab)
        expected = (f"{envoy}: {FAILS[envoy]}; {other}: 3 x 200, answered by {own} (ratelimit.ok +3), as if "
                    f"nothing happened")
        failure_modes(lab, sent, delta, reached, service, envoys=(envoy,), expected=expected)
        if answered_up["ok"] + answered_up["over_limit"] and delta[other]["error"]:
            ports = service_ports(lab, other)
            fail(f"with {service} stopped, {other} was not answered either: it asks {service}, not {own}",
                 expected=expected,
                 received=(f"{other}: answered with both replicas up (ratelimit.ok +{answered_up['ok']}); with "
                           f"{service} stopped {statuses(sent[other])}; {show(delta)}; {other}'s rate-limit cluster "
                           f"leads to port {', '.join(map(str, ports)) or 'none'}"),
                 hint=f"each Envoy asks the replica next to it: {other}'s rate-limit cluster must lead to {own} "
                      f"(127.0.0.1:{lab.port(own, 'grpc')}), not to {service} (port {lab.port(service, 'grpc')}): "
                      f"a copy of {envoy}'s cluster still does")
