"""Lab 11 — Mini-Mesh: the learner's control plane runs a whole mesh.

web -> api (v1, v2) -> db, each workload in a pod of its own with an injected Envoy
and lab 07's capture rules; the apps call each other's virtual addresses in plain HTTP
and Redis protocol. Every check sends real traffic from inside the pods and decides
from what the sidecars report (admin /certs, /config_dump, ssl, rbac and fault
counters, request-time histograms), what the apps received (their journals, the
caller's identity their sidecar vouched for) and the control plane's admin API. The
learner's code is never read.

The last checks are step 6, chaos: fault experiments asked of the control plane through
its admin API (POST/DELETE /faults, what `meshlab chaos` sends) must reach the sidecars
as Envoy's fault filter, over xDS, without a restart. Faults are counted on whichever
sidecar applied them (the contract puts them on the caller's side, as Istio does). They
run last, each ending every experiment before and after it, so no fault ever meets the
split, rotation or outage checks.
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import os
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from meshlab.grading import check, eventually, fail
from meshlab.grading.borrowed import BorrowedFile
from meshlab.grading.stats import expect_share, sample_size
from meshlab.mesh import inject, manifest
from meshlab.runtime.enter import enter_netns

pytestmark = pytest.mark.lab("11-mini-mesh")

WEB, DB = "web-v1", "db-v1"
APIS = ("api-v1", "api-v2")
APP_HOST, APP_PORT = "127.0.0.1", 8080
APP = f"http://{APP_HOST}:{APP_PORT}"        # web's app, from inside its pod
# 80/20 must be told apart from 50/50 (a 100/0 split sends v2 none at all); both error
# rates of the exact test stay below 1e-6.
SPLIT_REQUESTS = sample_size(0.20, (0.50,))
HEADER_REQUESTS = 20
OUTAGE_REQUESTS = 30                        # sent while the control plane is down
# 10 % must be told apart from a share read as per-cent-of-a-percent (0.1 %) or as 1 %,
# and from a quarter; both error rates stay below 1e-6.
ABORT_REQUESTS = sample_size(0.10, (0.01, 0.25))
DELAYED_REQUESTS = 3
# The delay experiment: long enough that no undelayed call comes near it (they take
# milliseconds), and the bucket of Envoy's request-time histogram that tells them apart:
# half the delay, a margin for Envoy's timers under load (a 0.5 s timeout was logged at
# 0.474 s on a busy machine).
DELAY_MS, SLOWER_THAN_MS = 500, 250
# The timed experiment's --for: the first long enough for the check to see it running
# (from the POST to every sidecar's configuration read: 0.1 s typically, up to 0.6 s on
# a busy 2-core machine); a longer one only if it had already ended by then.
EXPIRY_SECONDS = (0.5, 5.0, 15.0)
CLEARED_REQUESTS = 50
CALL_WORKERS = 8                            # connections at once for a fixed number of calls

XDS_HINT = ("build(node) must return, for every node, an outbound listener on 0.0.0.0:15001 with the original_dst "
            "listener filter and a filter chain per service (matched on its virtual address and port), routes, "
            "clusters and endpoints for every version, and an inbound listener on 0.0.0.0:15006 to the app")
MTLS_HINT = ("both sides need a tls transport socket whose certificate (`default`) and trust bundle (`ROOTCA`) "
             "come over SDS (sds_config: ads), and Secrets of those names in every node's snapshot")
SAN_HINT = ("the outbound cluster must demand the destination service's SPIFFE ID "
            "(match_typed_subject_alt_names, san_type URI) and the inbound side must require a client certificate")
RBAC_HINT = ("an RBAC filter on the inbound listener (envoy.filters.http.rbac for HTTP, envoy.filters.network.rbac for "
             "TCP) that ALLOWs exactly the manifest's callers by principal `authenticated.principal_name` "
             "(the SPIFFE ID of the verified peer certificate)")
SPLIT_HINT = ("the route of api must send to weighted_clusters outbound|8080|v1|api and outbound|8080|v2|api with the "
              "rule's weights, after a route that matches x-canary: true exactly")
ROTATE_HINT = ("the certificate must be a Secret served over SDS from node.certificate, rebuilt on every push: "
               "a certificate in a file, or one fixed at start, is never rotated")
FAULT_HINT = ("an experiment of /faults on service S becomes envoy.filters.http.fault on the sidecars that call S: "
              "abort.http_status and abort.percentage (a FractionalPercent: 10 % is 10 per HUNDRED, or 100000 per "
              "MILLION), delay.fixed_delay and delay.percentage; pushed with the next snapshot")
ROUTE_HINT = ("put the fault filter in the outbound chain with no fault of its own and the experiment in the routes "
              "(typed_per_filter_config): a route update reaches the connections the app keeps open, a changed "
              "listener does not")
CLEAR_HINT = ("when an experiment ends (DELETE /faults or its expires_at) the next snapshot must be exactly the one "
              "from before: no fault filter setting left in any route or listener")


# -- the mesh, as the checker reaches it ------------------------------------------------

def mesh_of(lab) -> manifest.Mesh:
    return manifest.load(lab.lab.mesh)


def web(lab, path: str = "/", **options) -> httpx.Response:
    """A request to web's app from inside its pod (loopback: not captured), which calls
    api, which calls db, each through the sidecars."""
    return lab.pod(WEB).get(APP + path, timeout=15.0, **options)


def control(lab, method: str, path: str, **options) -> httpx.Response:
    port = mesh_of(lab).admin_port
    return lab.pod(inject.CONTROL_POD).request(method, f"http://127.0.0.1:{port}{path}", timeout=20.0, **options)


def sidecar(lab, workload: str):
    return lab.envoy(f"{workload}-envoy")


def workloads(lab) -> list[str]:
    return [w.name for w in mesh_of(lab).workloads]


def served_certificate(lab, workload: str) -> dict | None:
    """The workload's own certificate as its Envoy reports it in /certs (None: none)."""
    for entry in sidecar(lab, workload).get("/certs").json().get("certificates", []):
        for cert in entry.get("cert_chain", []):
            if cert.get("subject_alt_names"):
                return cert
    return None


def serial_of(cert: dict | None) -> int | None:
    return int(cert["serial_number"], 16) if cert and cert.get("serial_number") else None


def in_sync(lab) -> tuple[bool, dict]:
    try:
        nodes = control(lab, "GET", "/status").json().get("nodes", {})
    except (httpx.HTTPError, ValueError):
        return False, {}
    ok = len(nodes) == len(workloads(lab)) and all(
        n.get("connected") and n.get("acked") and n.get("acked") == n.get("target") for n in nodes.values())
    return ok, nodes


# Set once no node ever acknowledged anything (an unfinished control plane): the checks
# after the first do not wait the whole timeout again for what will not come.
_NOTHING_ACKED: list[bool] = []


def wait_in_sync(lab, timeout: float = 20.0) -> dict:
    if _NOTHING_ACKED:
        timeout = min(timeout, 3.0)
    deadline = time.monotonic() + timeout
    nodes: dict = {}
    while time.monotonic() < deadline:
        ok, nodes = in_sync(lab)
        if ok:
            return nodes
        time.sleep(0.05)
    if not any(n.get("acked") for n in nodes.values()):
        _NOTHING_ACKED.append(True)
    fail("not every sidecar runs its node's configuration",
         expected="every node connected, its acknowledged version equal to the one pushed, no NACK",
         received=json.dumps({k: {f: v.get(f) for f in ("connected", "acked", "target", "nack")}
                              for k, v in nodes.items()})[:600] or "no answer from the control plane's /status",
         hint=XDS_HINT)


@dataclass(frozen=True)
class Answer:
    """What web answered one request: its status (0: no answer) and body, or why none came."""

    status: int
    text: str

    def upstream_status(self) -> int | None:
        """api's status as web saw it (web answers 502 for any but 200)."""
        return _json(self).get("upstream_status")


class Load:
    """Requests to web (so on the whole web -> api -> db path) from WORKERS threads, each
    on its own connection from inside web's pod: steady until the `with` block ends, or
    COUNT in all (`Load(lab, count=N).run()`). Every answer is kept.

    Each thread enters web's network namespace itself and speaks HTTP/1.1 with the
    standard library's client: through httpx, with every request handed to a thread in
    the namespace, the checker was the mesh's busiest process (1.7 ms of CPU per
    request, 0.3 ms now; web's app 1.2 ms), on a machine of two cores."""

    def __init__(self, lab, workers: int = 3, *, count: int | None = None, path: str = "/load",
                 headers: dict[str, str] | None = None):
        self.netns = str(lab.runtime.pods.netns_path(WEB))
        self.path, self.headers = path, headers or {}
        self.left = count                   # None: until stopped
        self.stop_event = threading.Event()
        self.answers: list[Answer] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(workers)]

    def _run(self) -> None:
        enter_netns(self.netns)             # this thread only: its sockets are the pod's
        connection = http.client.HTTPConnection(APP_HOST, APP_PORT, timeout=15.0)
        try:
            while not self.stop_event.is_set() and self._one_more():
                try:
                    connection.request("GET", self.path, headers=self.headers)
                    response = connection.getresponse()
                    answer = Answer(response.status, response.read().decode("utf-8", "replace"))
                except (OSError, http.client.HTTPException) as error:
                    connection.close()      # the next request opens a new connection
                    answer = Answer(0, f"{type(error).__name__}: {error}")
                with self.lock:
                    self.answers.append(answer)
                if self.left is None:
                    time.sleep(0.005)
        finally:
            connection.close()

    def _one_more(self) -> bool:
        with self.lock:
            if self.left is None:
                return True
            self.left -= 1
            return self.left >= 0

    def __enter__(self) -> "Load":
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for thread in self.threads:
            thread.join(timeout=15)

    def run(self) -> list[Answer]:
        """Send all COUNT requests; their answers."""
        with self:
            for thread in self.threads:
                thread.join(timeout=300)
        return list(self.answers)

    def requests_so_far(self) -> int:
        with self.lock:
            return len(self.answers)

    def expect_no_failure(self, what: str, hint: str) -> None:
        with self.lock:
            failures = [f"{a.status} {a.text[:160]}" for a in self.answers if a.status != 200]
            ok = len(self.answers) - len(failures)
        if ok == 0:
            fail(f"no request succeeded {what}", expected="the load answered 200 throughout",
                 received="; ".join(failures[:3]) or "no request was sent", hint=hint)
        if failures:
            fail(f"{len(failures)} of {len(self.answers)} requests failed {what}",
                 expected="0 failed requests",
                 received=f"{len(failures)} failed, for example: " + " | ".join(failures[:3]), hint=hint)


def calls(lab, count: int, path: str, headers: dict[str, str] | None = None) -> list[Answer]:
    """COUNT requests to web's PATH, CALL_WORKERS at a time: their answers."""
    return Load(lab, CALL_WORKERS, count=count, path=path, headers=headers).run()


def tcp_exchange(lab, pod: str, host: str, port: int, payload: bytes) -> bytes | str:
    """Send PAYLOAD over TCP from inside POD; the bytes answered, or why none came."""
    def attempt() -> bytes | str:
        try:
            with socket.create_connection((host, port), timeout=5) as conn:
                conn.settimeout(5)
                conn.sendall(payload)
                data = conn.recv(1024)
                return data if data else "the connection was closed without an answer"
        except OSError as error:
            return f"{type(error).__name__}: {error}"
    return lab.runtime.pods.namespace(pod).run(attempt)


REDIS_PING = b"*1\r\n$4\r\nPING\r\n"


def require_working_path(lab, why: str) -> None:
    """A refusal proves something only once the mesh carries web -> api -> db."""
    before = refusal_counters(lab)
    response = web(lab, "/precondition")
    if response.status_code != 200 or "hits" not in (_json(response).get("upstream") or {}):
        explain_refusal(lab, before, f"the mesh does not carry web -> api -> db yet, so {why} proves nothing: ")
        fail(f"the mesh does not carry web -> api -> db yet, so {why} proves nothing",
             expected="web -> api -> db answering 200 through the sidecars first",
             received=f"{response.status_code} {response.text[:200]}", hint=XDS_HINT)


# -- why a call between the mesh's own workloads was refused -----------------------------
# A SPIFFE ID written wrong breaks the whole path, and every check after the first would
# blame routes, TLS or the split. When calls that the manifest allows fail, these read
# which sidecar refused them (its counters) and what for (its config_dump, the peer's
# /certs), so the failure names the ID Envoy was given next to the one it needed.

IDENTITY_REFUSALS = r"rbac\.denied$|ssl\.fail_verify_san$"
SAN_REFUSALS = r"ssl\.fail_verify_san$"


def refusal_counters(lab, pattern: str = IDENTITY_REFUSALS) -> dict[tuple[str, str], int]:
    """Every sidecar's counters of calls refused for an identity (RBAC denials, peer
    certificates a SAN matcher rejected), keyed by (workload, stat)."""
    counters: dict[tuple[str, str], int] = {}
    for workload in workloads(lab):
        try:
            counters.update({(workload, stat): value for stat, value in sidecar(lab, workload).stats(pattern).items()})
        except (httpx.HTTPError, ValueError):
            pass                # a sidecar that does not answer: the check says so its own way
    return counters


def explain_refusal(lab, before: dict[tuple[str, str], int], context: str = "",
                    pattern: str = IDENTITY_REFUSALS) -> None:
    """Fail naming the SPIFFE IDs involved if, since BEFORE (refusal_counters), a sidecar
    refused a call for an identity; return when none did. Only for calls the manifest
    allows: a deliberate denial would be read as a mistake."""
    def moved() -> list[tuple[tuple[str, str], int]]:
        after = refusal_counters(lab, pattern)
        return [(key, value - before.get(key, 0)) for key, value in after.items() if value > before.get(key, 0)]
    # Envoy counts a closed Redis connection's denial, or a handshake's alert, just after.
    refused = eventually(moved, 1.0, interval=0.05)
    if not refused:
        return
    # The caller's side first: a certificate refused there never reached the callee's RBAC.
    (workload, stat), count = sorted(refused, key=lambda item: "fail_verify_san" not in item[0][1])[0]
    mesh = mesh_of(lab)
    if stat.startswith("cluster.") and stat.endswith(".ssl.fail_verify_san"):
        _refused_certificate(lab, mesh, workload, stat, count, context)
    elif stat.endswith(".ssl.fail_verify_san"):
        _refused_client_certificate(lab, mesh, workload, stat, count, context)
    else:
        _denied_caller(lab, mesh, workload, stat, count, context)


def _refused_certificate(lab, mesh: manifest.Mesh, workload: str, stat: str, count: int, context: str) -> None:
    """WORKLOAD's outbound cluster refused the certificate of the service it called."""
    cluster = stat[len("cluster."):-len(".ssl.fail_verify_san")]
    callee = next((w for w in mesh.workloads if mesh.outbound_cluster(w.service, w.version) == cluster), None)
    config = next((c.get("cluster", {}) for c in _config(lab, workload, "dynamic_active_clusters")
                   if c.get("cluster", {}).get("name") == cluster), {})
    asked = _matchers(_find(config, "match_typed_subject_alt_names"), mesh)
    if callee is None:
        fail(f"{context}{workload}'s sidecar refused the certificate behind its cluster {cluster}: it asks for {asked}",
             expected="each outbound cluster to ask for its destination service's SPIFFE ID",
             received=f"{stat} +{count} on {workload}", hint=SAN_HINT)
    presented = _presented(lab, callee.name)
    wanted = mesh.spiffe_id(callee.service)
    fail(f"{context}{workload}'s sidecar refused {callee.service}'s certificate: its cluster {cluster} asks for "
         f"{asked}{_difference(config, mesh, callee.service)}, {callee.service} presents {presented}",
         expected=f"cluster {cluster} to ask for the URI SAN {wanted}, {callee.service}'s SPIFFE ID "
                  "(match_typed_subject_alt_names, exact)",
         received=f"{stat} +{count} on {workload}; its SAN matchers: {asked}; the certificate {callee.name} "
                  f"presents: {presented}", hint=SAN_HINT)


def _refused_client_certificate(lab, mesh: manifest.Mesh, workload: str, stat: str, count: int,
                                context: str) -> None:
    """WORKLOAD's inbound listener refused the certificate of a caller."""
    callers = mesh.callers(_service_of(mesh, workload))
    config = _config(lab, workload, "dynamic_listeners")
    asked = _matchers(_find(config, "match_typed_subject_alt_names"), mesh)
    presented = "; ".join(f"{c} presents {_presented(lab, _workload_of(mesh, c))}" for c in callers)
    fail(f"{context}{workload}'s inbound listener refused a caller's certificate: it asks for {asked}; "
         f"{presented or 'mesh.yaml names no caller'}",
         expected=f"the inbound side to accept the certificates of {' and '.join(callers) or 'its callers'} and "
                  "leave who may call to the RBAC filter",
         received=f"{stat} +{count} on {workload}; its SAN matchers: {asked}", hint=SAN_HINT)


def _denied_caller(lab, mesh: manifest.Mesh, workload: str, stat: str, count: int, context: str) -> None:
    """WORKLOAD's RBAC filter denied a caller the manifest allows."""
    callers = mesh.callers(_service_of(mesh, workload))
    rules = _rbac_rules(lab, workload)
    allows = _principals(rules, mesh)
    wanted = " or ".join(mesh.spiffe_id(c) for c in callers) or "nobody"
    presented = "; ".join(f"{c} presents {_presented(lab, _workload_of(mesh, c))}" for c in callers)
    near_miss = _difference(rules, mesh, callers[0]) if len(callers) == 1 else ""
    fail(f"{context}{workload}'s RBAC filter denied {' and '.join(callers) or 'a caller'}, which mesh.yaml allows: "
         f"it allows {allows}{near_miss}; {presented}",
         expected=f"a principal matching {wanted} (authenticated.principal_name: the caller's SPIFFE ID, "
                  f"from node.mesh.spiffe_id)",
         received=f"{stat} +{count} on {workload}; its principals: {allows}", hint=RBAC_HINT)


def _config(lab, workload: str, resource: str) -> list[dict]:
    try:
        return sidecar(lab, workload).config_dump(resource).get("configs", [])
    except (httpx.HTTPError, ValueError):
        return []


def _dicts(value) -> Iterator[dict]:
    """Every JSON object anywhere in VALUE (a config_dump), the outer ones first."""
    if isinstance(value, dict):
        yield value
        value = list(value.values())
    if isinstance(value, list):
        for item in value:
            yield from _dicts(item)


def _find(value, key: str) -> list:
    """Every value of KEY anywhere in VALUE (lists' items one by one)."""
    found = [d[key] for d in _dicts(value) if key in d]
    return [item for v in found for item in (v if isinstance(v, list) else [v])]


def _matcher(matcher: dict, mesh: manifest.Mesh) -> str:
    """A StringMatcher of config_dump as a learner wrote it: `exact 'spiffe://...'`,
    with whose ID it is when it is one of the mesh's."""
    for kind in ("exact", "prefix", "suffix", "contains"):
        if kind in matcher:
            value = matcher[kind]
            owner = next((s for s in mesh.services if mesh.spiffe_id(s) == value), None)
            return f"{kind} {value!r}" + (f" ({owner}'s ID)" if owner else "")
    if "safe_regex" in matcher:
        return f"regex {matcher['safe_regex'].get('regex')!r}"
    return json.dumps(matcher)


def _matchers(entries: list, mesh: manifest.Mesh) -> str:
    described = [f"{e.get('san_type', 'SAN_TYPE_UNSPECIFIED')} {_matcher(e.get('matcher', {}), mesh)}"
                 for e in entries if isinstance(e, dict)]
    return ", ".join(described) or "no SAN matcher"


def _principals(rules: list[dict], mesh: manifest.Mesh) -> str:
    described = []
    for rule in rules:
        names = [_matcher(m, mesh) for m in _find(rule, "principal_name") if isinstance(m, dict)]
        action = rule.get("action", "ALLOW")
        described.append(("" if action == "ALLOW" else f"{action} of ") + (", ".join(names) or
                         f"no principal_name ({len(rule.get('policies', {}))} policies)"))
    return "; ".join(described) or "no RBAC rules"


def rbac_principals(lab, workload: str) -> str:
    """The principals WORKLOAD's RBAC filters match, from its config_dump."""
    rules = _rbac_rules(lab, workload)
    return _principals(rules, mesh_of(lab)) if rules else "everyone (no RBAC filter)"


def _rbac_rules(lab, workload: str) -> list[dict]:
    """The rules of every RBAC filter (HTTP or network) in WORKLOAD's listeners."""
    return [f.get("rules", {}) for f in _rbac_filters(_config(lab, workload, "dynamic_listeners"))]


def _difference(config, mesh: manifest.Mesh, service: str) -> str:
    """How the one exact ID in CONFIG misses SERVICE's, for a near miss (a typo, a part
    missing or too many): nothing when it is right or another service's whole ID."""
    exact = {m["exact"] for m in _find(config, "matcher") + _find(config, "principal_name")
             if isinstance(m, dict) and isinstance(m.get("exact"), str)}
    if len(exact) != 1:
        return ""
    got, want = exact.pop(), mesh.spiffe_id(service)
    if got == want or got in {mesh.spiffe_id(s) for s in mesh.services}:
        return ""
    if got.startswith(want):
        return f" ({service}'s ID with {got[len(want):]!r} after it)"
    if want.startswith(got):
        return f" ({service}'s ID without its end {want[len(got):]!r})"
    common = os.path.commonprefix([got, want])
    return f" (not {service}'s ID: they differ after {common!r})" if common else f" (not {service}'s ID)"


def _rbac_filters(value) -> list[dict]:
    """Every RBAC filter configuration (HTTP or network) anywhere in VALUE."""
    return [d for d in _dicts(value) if str(d.get("@type", "")).endswith(".rbac.v3.RBAC")]


def _service_of(mesh: manifest.Mesh, workload: str) -> str:
    return next(w.service for w in mesh.workloads if w.name == workload)


def _workload_of(mesh: manifest.Mesh, service: str) -> str:
    return next(w.name for w in mesh.workloads if w.service == service)


def _presented(lab, workload: str) -> str:
    """The URI SANs of WORKLOAD's certificate, as its sidecar's /certs reports them."""
    try:
        uris = [san.get("uri") for san in (served_certificate(lab, workload) or {}).get("subject_alt_names", [])]
    except (httpx.HTTPError, ValueError):
        uris = []
    return " ".join(str(u) for u in uris if u) or "no certificate"


# -- the checks ---------------------------------------------------------------------------

@check("Every sidecar connects to the control plane and runs its node's configuration", hint=XDS_HINT)
def test_sidecars_in_sync(lab):
    wait_in_sync(lab)
    for workload in workloads(lab):
        names = {listener.get("name") for listener in sidecar(lab, workload).listeners()}
        if not {"outbound", "inbound"} <= names and len(names) < 2:
            fail(f"the sidecar of {workload} has listeners {sorted(n for n in names if n)}",
                 expected="an outbound listener (port 15001) and an inbound listener (port 15006)",
                 received=", ".join(sorted(n for n in names if n)) or "no listener", hint=XDS_HINT)


@check("web -> api -> db answers through the mesh, the apps unchanged", hint=XDS_HINT)
def test_path_through_the_mesh(lab):
    wait_in_sync(lab)
    before = refusal_counters(lab)
    response = web(lab, "/path")
    body = _json(response)
    upstream = body.get("upstream") or {}
    if response.status_code != 200 or upstream.get("service") != "api" or "hits" not in upstream:
        explain_refusal(lab, before)
        fail("a request to web did not come back with api's answer and db's count",
             expected="200, api's answer inside web's, with a `hits` counted in Redis (db)",
             received=f"{response.status_code} {response.text[:300]}", hint=XDS_HINT)


@check("Every hop is mutual TLS with the expected SPIFFE IDs, certificates over SDS", hint=MTLS_HINT)
def test_mutual_tls_every_hop(lab):
    wait_in_sync(lab)
    mesh = mesh_of(lab)
    for workload in mesh.workloads:
        cert = served_certificate(lab, workload.name)
        uris = [san.get("uri") for san in (cert or {}).get("subject_alt_names", [])]
        if uris != [mesh.spiffe_id(workload.service)]:
            fail(f"the sidecar of {workload.name} does not hold its service's certificate",
                 expected=f"a certificate for {mesh.spiffe_id(workload.service)} in its /certs",
                 received=f"{uris or 'no certificate'}", hint=MTLS_HINT)
        secrets = sidecar(lab, workload.name).get("/config_dump", resource="dynamic_active_secrets").json()
        names = {c.get("name") for c in secrets.get("configs", [])}
        if len(names) < 2:
            fail(f"the sidecar of {workload.name} got its certificate and trust bundle some other way than SDS",
                 expected="two secrets (certificate, trust bundle) in config_dump's dynamic_active_secrets",
                 received=f"secrets over SDS: {sorted(n for n in names if n) or 'none'}", hint=MTLS_HINT)
    keys = [str(p.relative_to(lab.dir)) for p in Path(lab.dir).rglob("*")
            if p.is_file() and p.stat().st_size < 1_000_000 and b"PRIVATE KEY" in p.read_bytes()
            and p.suffix != ".py"]
    if keys:
        fail("private keys lie in the lab's folder",
             expected="every key in the control plane's memory, sent only over SDS",
             received=", ".join(keys[:5]), hint=ROTATE_HINT)

    handshakes = {w: sidecar(lab, w).stat("listener.0.0.0.0_15006.ssl.handshake") for w in (*APIS, DB)}
    before = refusal_counters(lab)
    probe = uuid.uuid4().hex
    for _ in range(6):
        web(lab, "/tls", headers={"x-probe": probe})
    after = {w: sidecar(lab, w).stat("listener.0.0.0.0_15006.ssl.handshake") for w in (*APIS, DB)}
    if after == handshakes and not any(after.values()):
        explain_refusal(lab, before)
        fail("no TLS handshake on any inbound listener",
             expected="listener.0.0.0.0_15006.ssl.handshake > 0 on api and db",
             received=json.dumps(after), hint=MTLS_HINT)
    if not after[DB]:
        explain_refusal(lab, before)
        fail("db's sidecar never completed a TLS handshake: api reaches Redis in plaintext",
             expected="listener.0.0.0.0_15006.ssl.handshake > 0 on db-v1", received=json.dumps(after),
             hint=MTLS_HINT)
    seen = [e for w in APIS for e in lab.journal(w) if e["headers"].get("x-probe") == probe]
    callers = {_caller(e["headers"]) for e in seen}
    if not seen or callers != {mesh.spiffe_id("web")}:
        explain_refusal(lab, before)
        fail("api did not learn from its sidecar that web called",
             expected=f"x-forwarded-client-cert with URI={mesh.spiffe_id('web')} on every request api received",
             received=f"{len(seen)} requests, callers {sorted(str(c) for c in callers)}",
             hint="the inbound HTTP connection manager: forward_client_cert_details SANITIZE_SET and "
                  "set_current_client_cert_details {uri: true}")


@check("A plaintext client inside the mesh is refused", hint=SAN_HINT)
def test_plaintext_refused(lab):
    wait_in_sync(lab)
    require_working_path(lab, "a refused plaintext client")
    where = inject.addresses(mesh_of(lab))
    probe = uuid.uuid4().hex
    api = where.workloads["api-v1"]
    try:
        response = lab.pod(inject.CONTROL_POD).get(f"http://{api}:8080/plain", headers={"x-probe": probe}, timeout=5)
        answer = f"{response.status_code} {response.text[:120]}"
    except httpx.HTTPError:
        answer = None           # refused: what a plaintext client must get
    if answer is not None or any(e["headers"].get("x-probe") == probe for e in lab.journal("api-v1")):
        fail("a plaintext HTTP request from the mesh's pod reached api", expected="the connection refused by TLS",
             received=answer or "the app journaled it", hint=SAN_HINT)
    db = where.workloads[DB]
    answer = tcp_exchange(lab, inject.CONTROL_POD, db, 6379, REDIS_PING)
    if isinstance(answer, bytes) and answer.startswith(b"+PONG"):
        fail("a plaintext Redis client from the mesh's pod got db's answer", expected="the connection closed",
             received=repr(answer), hint=SAN_HINT)


@check("Authorization by identity: web -> api and api -> db allowed; web -> db and db -> api denied", hint=RBAC_HINT)
def test_authorization(lab):
    wait_in_sync(lab)
    where = inject.addresses(mesh_of(lab))
    denied_db = sidecar(lab, DB).stat("inbound_6379.rbac.denied")
    refused_certificates = refusal_counters(lab, SAN_REFUSALS)
    answer = tcp_exchange(lab, WEB, where.services["db"], 6379, REDIS_PING)
    if isinstance(answer, bytes) and answer.startswith(b"+PONG"):
        fail("web reached db (Redis answered PONG)", expected="web -> db denied: the connection closed",
             received=f"{answer!r}; db's RBAC filter allows {rbac_principals(lab, DB)}", hint=RBAC_HINT)
    # Envoy counts the denial as it closes the connection: read it after a short wait.
    moved = eventually(lambda: sidecar(lab, DB).stat("inbound_6379.rbac.denied") > denied_db, 3.0)
    if not moved:
        # web's own sidecar may have refused db's certificate before db's RBAC saw the call.
        explain_refusal(lab, refused_certificates, "web -> db was not refused by db's RBAC filter: ", SAN_REFUSALS)
        fail("web -> db was not refused by db's RBAC filter",
             expected="inbound_6379.rbac.denied +1 on db's sidecar", received=f"{answer!r}; the counter did not move",
             hint=RBAC_HINT)
    denied_api = sum(sidecar(lab, w).stat("http.inbound_8080.rbac.denied") for w in APIS)
    try:
        response = lab.pod(DB).get(f"http://{where.services['api']}:8080/from-db", timeout=10)
    except httpx.HTTPError as error:
        fail("db's pod could not reach api's sidecar at all", expected="403 from api's sidecar (RBAC)",
             received=f"{type(error).__name__}: {error}", hint=RBAC_HINT)
    if response.status_code != 403:
        fail("db's pod called api and was not denied", expected="403 from api's sidecar (RBAC)",
             received=f"{response.status_code} {response.text[:120]}; api's RBAC filter allows "
                      f"{rbac_principals(lab, APIS[0])}", hint=RBAC_HINT)
    after = sum(sidecar(lab, w).stat("http.inbound_8080.rbac.denied") for w in APIS)
    if after <= denied_api:
        fail("the 403 did not come from api's RBAC filter", expected="http.inbound_8080.rbac.denied +1 on api",
             received=f"{denied_api} -> {after}", hint=RBAC_HINT)
    before = refusal_counters(lab)
    response = web(lab, "/allowed")
    if response.status_code != 200 or "hits" not in (_json(response).get("upstream") or {}):
        explain_refusal(lab, before)
        fail("web -> api -> db did not get through", expected="200 with db's count",
             received=f"{response.status_code} {response.text[:200]}", hint=RBAC_HINT)


@check("A forged identity header does not let a caller through", hint=RBAC_HINT)
def test_forged_identity(lab):
    wait_in_sync(lab)
    mesh = mesh_of(lab)
    where = inject.addresses(mesh)
    forged = {"x-forwarded-client-cert": f"By={mesh.spiffe_id('api')};URI={mesh.spiffe_id('web')}",
              "x-caller": "web", "x-spiffe-id": mesh.spiffe_id("web"), "x-client-identity": mesh.spiffe_id("web")}
    require_working_path(lab, "a refused impostor")
    try:
        response = lab.pod(DB).get(f"http://{where.services['api']}:8080/forged", headers=forged, timeout=10)
    except httpx.HTTPError as error:
        fail("db's pod could not reach api's sidecar at all", expected="403 from api's sidecar (RBAC)",
             received=f"{type(error).__name__}: {error}", hint=RBAC_HINT)
    if response.status_code != 403:
        fail("db's pod got through to api by claiming web's identity in headers",
             expected="403: identity is the verified certificate's, not a header",
             received=f"{response.status_code} {response.text[:120]}; api's RBAC filter allows "
                      f"{rbac_principals(lab, APIS[0])}", hint=RBAC_HINT)


@check("api's traffic splits 80/20 between v1 and v2 (exact binomial test); x-canary: true goes to v2",
       hint=SPLIT_HINT)
def test_split(lab):
    wait_in_sync(lab)
    probe = uuid.uuid4().hex
    before = refusal_counters(lab)
    versions = Counter((_json(a).get("upstream") or {}).get("version", f"status {a.status}")
                       for a in calls(lab, SPLIT_REQUESTS, "/split", {"x-probe": probe}))
    received = {w: sum(1 for e in lab.journal(w) if e["headers"].get("x-probe") == probe) for w in APIS}
    if sum(received.values()) != SPLIT_REQUESTS:
        explain_refusal(lab, before, f"api received {sum(received.values())} of {SPLIT_REQUESTS} requests: ")
        fail(f"api received {sum(received.values())} of {SPLIT_REQUESTS} requests",
             expected=f"all {SPLIT_REQUESTS}", received=f"{received}; answers {dict(versions)}", hint=SPLIT_HINT)
    if received["api-v2"] == 0:
        fail(f"all {SPLIT_REQUESTS} requests went to api v1", expected="about 20 % to v2",
             received=json.dumps(received), hint=SPLIT_HINT)
    expect_share(received["api-v2"], SPLIT_REQUESTS, 0.2, what="went to api v2", hint=SPLIT_HINT)
    canary = uuid.uuid4().hex
    calls(lab, HEADER_REQUESTS, "/canary", {"x-probe": canary, "x-canary": "true"})
    got = {w: sum(1 for e in lab.journal(w) if e["headers"].get("x-probe") == canary) for w in APIS}
    if got["api-v2"] != HEADER_REQUESTS:
        fail(f"{got['api-v1']} of {HEADER_REQUESTS} requests with x-canary: true went to v1",
             expected=f"all {HEADER_REQUESTS} to api v2", received=json.dumps(got),
             hint=SPLIT_HINT + "; routes are tried in order")


@check("A manifest change (a new allowed caller) reaches every sidecar without a restart",
       hint="build(node) runs again for every node when mesh.yaml changes: read the callers from node.mesh each "
            "time, never from a copy made at start")
def test_manifest_change_without_restart(lab):
    wait_in_sync(lab)
    require_working_path(lab, "a change of who may call whom")
    where = inject.addresses(mesh_of(lab))
    lab.runtime.refresh()
    pids = {w: lab.runtime.state.services[f"{w}-envoy"].pid for w in workloads(lab)}
    text = (lab.dir / "mesh.yaml").read_text()
    if "  db: [api]" not in text:
        pytest.skip("mesh.yaml's authorization of db is not the lab's (db: [api]): nothing to change")
    with BorrowedFile(lab.dir / "mesh.yaml", keep=lab.runtime.run_dir) as manifest_file:
        manifest_file.write(text.replace("  db: [api]", "  db: [api, web]"))
        answer = eventually(lambda: _pong(tcp_exchange(lab, WEB, where.services["db"], 6379, REDIS_PING)), 10.0)
    if not answer:
        fail("after mesh.yaml allowed web to call db, web still could not",
             expected="Redis's +PONG to web within 10 s of the change",
             received=repr(tcp_exchange(lab, WEB, where.services["db"], 6379, REDIS_PING)),
             hint="the control plane follows mesh.yaml: your build must use node.mesh's callers")
    wait_in_sync(lab)
    denied = eventually(lambda: not _pong(tcp_exchange(lab, WEB, where.services["db"], 6379, REDIS_PING)), 10.0)
    if not denied:
        fail("web could still reach db after the change was undone", expected="web -> db denied again",
             received=f"Redis answered +PONG; db's RBAC filter allows {rbac_principals(lab, DB)}", hint=RBAC_HINT)
    lab.runtime.refresh()
    restarted = [w for w in pids if lab.runtime.state.services[f"{w}-envoy"].pid != pids[w]]
    if restarted:
        fail(f"the sidecars of {', '.join(restarted)} restarted", expected="the same Envoy processes",
             received="new process ids", hint="a change travels over xDS, never by restarting a proxy")


@check("Rotation under load: every sidecar gets a new certificate and 0 requests fail", hint=ROTATE_HINT)
def test_rotation_under_load(lab):
    wait_in_sync(lab)
    require_working_path(lab, "a rotation without failures")
    before = {w: serial_of(served_certificate(lab, w)) for w in workloads(lab)}
    with Load(lab) as load:
        eventually(lambda: load.requests_so_far() > 30 or None, 10.0)
        answer = control(lab, "POST", "/rotate", json={"ttl_seconds": 120})
        if answer.status_code != 200:
            fail("the control plane's POST /rotate failed", expected="200 with the new serials",
                 received=f"{answer.status_code} {answer.text[:200]}", hint=ROTATE_HINT)
        deadline = time.monotonic() + 10
        after = dict(before)
        while time.monotonic() < deadline:
            after = {w: serial_of(served_certificate(lab, w)) for w in workloads(lab)}
            if all(after[w] is not None and after[w] != before[w] for w in after):
                break
            time.sleep(0.05)
        mark = load.requests_so_far()
        eventually(lambda: load.requests_so_far() > mark + 30 or None, 10.0)
    stale = [w for w in after if after[w] is None or after[w] == before[w]]
    if stale:
        fail(f"{', '.join(stale)} still serve the certificate from before the rotation",
             expected="a new serial in every sidecar's /certs within 10 s of POST /rotate",
             received=", ".join(f"{w}: {format(before[w] or 0, 'x')[:12]}" for w in stale), hint=ROTATE_HINT)
    load.expect_no_failure("while every certificate was rotated", ROTATE_HINT)


@check("Control plane down under load: traffic flows on, 0 requests fail, then every sidecar resyncs",
       hint="the sidecars keep their last configuration; after the restart the control plane must give every "
            "node a complete snapshot again (the same CA: a certificate from another CA breaks every peer)")
def test_control_plane_outage(lab):
    wait_in_sync(lab)
    require_working_path(lab, "an outage without failures")
    with Load(lab) as load:
        eventually(lambda: load.requests_so_far() > 30 or None, 10.0)
        lab.runtime.stop("control-plane")
        try:
            mark = load.requests_so_far()
            eventually(lambda: load.requests_so_far() >= mark + OUTAGE_REQUESTS or None, 10.0)
            during = load.requests_so_far() - mark
        finally:
            # Also on Ctrl-C: the learner's running mesh keeps its control plane.
            lab.runtime.start("control-plane")
        wait_in_sync(lab, timeout=30)
        mark = load.requests_so_far()
        eventually(lambda: load.requests_so_far() > mark + 30 or None, 10.0)
    if during < OUTAGE_REQUESTS:
        fail("traffic stopped while the control plane was down",
             expected=f"{OUTAGE_REQUESTS} requests answered during the outage",
             received=f"{during} in 10 s", hint="the sidecars keep serving their last configuration")
    load.expect_no_failure("during the outage and the resync",
                           "the sidecars keep their last configuration; a restarted control plane signs with the "
                           "same CA (the course keeps it), so peers keep trusting each other")
    after = {w: serial_of(served_certificate(lab, w)) for w in workloads(lab)}
    if any(after[w] is None for w in after):
        fail("a sidecar lost its certificate after the restart", expected="a certificate in every /certs",
             received=json.dumps({w: bool(s) for w, s in after.items()}), hint=MTLS_HINT)


# -- step 6, chaos: experiments as the checker asks for them and reads them back -------

def start_experiment(lab, **fields) -> str:
    response = control(lab, "POST", "/faults", json={"service": "api", **fields})
    document = _json(response)
    if response.status_code != 200 or "id" not in document:
        fail("the control plane did not accept a fault experiment",
             expected='POST /faults {"service": "api", ...} answered 200 {"id": ...} (the mesh contract)',
             received=f"{response.status_code} {response.text[:300]}", hint=FAULT_HINT)
    return document["id"]


def end_experiments(lab) -> None:
    try:
        control(lab, "DELETE", "/faults")
    except httpx.HTTPError:
        pass                    # a control plane that does not answer: the check says so


@pytest.fixture
def no_experiment_left(lab):
    end_experiments(lab)
    yield
    end_experiments(lab)


def fault_counters(lab, name: str) -> dict[str, int]:
    """Every sidecar's `<prefix>.fault.NAME` counters, keyed by workload and stat."""
    return {f"{workload} {stat}": value for workload in workloads(lab)
            for stat, value in sidecar(lab, workload).stats(rf"\.fault\.{name}$").items()}


def moved(before: dict[str, int], after: dict[str, int]) -> int:
    return sum(after.get(key, 0) - before.get(key, 0) for key in set(before) | set(after))


def requests_slower_than(lab, milliseconds: int) -> int:
    """Requests every sidecar's connection managers timed over MILLISECONDS (from the
    Prometheus histograms of downstream_rq_time, in ms)."""
    total = 0
    for workload in workloads(lab):
        text = sidecar(lab, workload).get("/stats/prometheus", filter="downstream_rq_time").text
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


def configuration(lab) -> str:
    """What every sidecar runs, without versions and times: listeners and routes."""
    parts = []
    for workload in workloads(lab):
        for resource in ("dynamic_listeners", "dynamic_route_configs"):
            dump = sidecar(lab, workload).config_dump(resource).get("configs", [])
            parts.append(json.dumps([_without_stamps(c) for c in dump], sort_keys=True))
    return "\n".join(parts)


# -- step 6, chaos: the checks, each starting from no experiment and leaving none ------

@check("--abort 10%: the share of aborted calls to api passes the exact binomial test and equals "
       "Envoy's fault.aborts_injected", hint=FAULT_HINT)
@pytest.mark.usefixtures("no_experiment_left")
def test_abort_share(lab):
    wait_in_sync(lab)
    start_experiment(lab, abort_percent=10.0, abort_status=503)
    wait_in_sync(lab)
    before = fault_counters(lab, "aborts_injected")
    refusals = refusal_counters(lab)
    answers = calls(lab, ABORT_REQUESTS, "/chaos")
    injected = moved(before, fault_counters(lab, "aborts_injected"))
    aborted = sum(1 for a in answers if a.upstream_status() == 503)
    other = [f"{a.status} {a.text[:160]}" for a in answers if a.status != 200 and a.upstream_status() != 503]
    if other or injected != aborted:
        # Calls refused for an identity (a 403, or a 503 after a refused certificate) are
        # the experiment's no more than any other failure: this check fails anyway.
        explain_refusal(lab, refusals, "calls to api failed, and not by the experiment: ")
    if other:
        fail(f"{len(other)} calls failed otherwise than by the experiment's 503",
             expected="every call answered: 200, or api's 503 from the fault filter",
             received=" | ".join(other[:3]), hint=FAULT_HINT)
    expect_share(aborted, len(answers), 0.10, what="to api were aborted with 503", noun="calls", hint=FAULT_HINT)
    if injected != aborted:
        fail("the aborted calls are not the ones Envoy's fault filter counted",
             expected=f"fault.aborts_injected to grow by {aborted}, the calls web saw aborted",
             received=f"it grew by {injected}", hint=ROUTE_HINT if injected == 0 else FAULT_HINT)


@check("--delay 0.5s: every delayed call shows in Envoy's delays_injected and in its request times",
       hint=FAULT_HINT)
@pytest.mark.usefixtures("no_experiment_left")
def test_delay(lab):
    wait_in_sync(lab)
    start_experiment(lab, delay_ms=DELAY_MS, delay_percent=100.0)
    wait_in_sync(lab)
    before = fault_counters(lab, "delays_injected")
    slow_before = requests_slower_than(lab, SLOWER_THAN_MS)
    refusals = refusal_counters(lab)
    answers = calls(lab, DELAYED_REQUESTS, "/chaos")
    injected = moved(before, fault_counters(lab, "delays_injected"))
    if injected != DELAYED_REQUESTS or any(a.status != 200 for a in answers):
        explain_refusal(lab, refusals, "calls to api failed, and not by the experiment: ")
        fail(f"{DELAYED_REQUESTS} calls to api under a {DELAY_MS / 1000:g} s delay for all of them",
             expected=f"fault.delays_injected to grow by {DELAYED_REQUESTS}, every call still answered 200",
             received=f"it grew by {injected}; statuses {[a.status for a in answers]}",
             hint=ROUTE_HINT if injected == 0 else FAULT_HINT)
    # Envoy merges its histograms when the admin API is asked (the sidecars' bootstrap says
    # stats_flush_on_admin), so the first reading may still lack the newest requests.
    slow = eventually(lambda: (n := requests_slower_than(lab, SLOWER_THAN_MS) - slow_before) >= DELAYED_REQUESTS
                      and n, timeout=15.0, interval=0.05)
    if not slow:
        fail("Envoy's request times do not show the delay",
             expected=f"{DELAYED_REQUESTS} more requests over {SLOWER_THAN_MS} ms in a connection manager's "
                      "downstream_rq_time histogram",
             received=f"{requests_slower_than(lab, SLOWER_THAN_MS) - slow_before} more", hint=FAULT_HINT)


@check("A timed experiment (--for) ends by itself, clear ends one at once: 0 faults, the configuration "
       "from before", hint=CLEAR_HINT)
@pytest.mark.usefixtures("no_experiment_left")
def test_expiry_and_clear(lab):
    wait_in_sync(lab)
    original = configuration(lab)
    for seconds in EXPIRY_SECONDS:
        ends = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=seconds)
        start_experiment(lab, abort_percent=100.0, expires_at=ends.isoformat())
        wait_in_sync(lab)
        changed = configuration(lab) != original
        if changed or dt.datetime.now(dt.timezone.utc) < ends:
            break               # seen while it ran: changed, or it changed nothing
        # Read only after its end (a slow machine): end it, wait for the configuration
        # from before, and try a longer one.
        end_experiments(lab)
        eventually(lambda: in_sync(lab)[0] and configuration(lab) == original, timeout=15.0, interval=0.05)
    if not changed:
        fail("an experiment changed nothing in the sidecars' listeners and routes",
             expected="the fault filter's setting for api in the configuration", received="the same configuration",
             hint=FAULT_HINT)
    time.sleep(max(0.0, (ends - dt.datetime.now(dt.timezone.utc)).total_seconds()))
    for how in ("after its --for", "after clear"):
        back = eventually(lambda: in_sync(lab)[0] and configuration(lab) == original, timeout=15.0, interval=0.05)
        if not back:
            fail(f"the sidecars did not get their configuration back {how}",
                 expected="the listeners and routes from before the experiment, exactly",
                 received="a different configuration (the experiment's, or another)", hint=CLEAR_HINT)
        before = fault_counters(lab, "aborts_injected")
        refusals = refusal_counters(lab)
        answers = calls(lab, CLEARED_REQUESTS, "/chaos")
        injected = moved(before, fault_counters(lab, "aborts_injected"))
        failed = [a.status for a in answers if a.status != 200]
        if injected or failed:
            explain_refusal(lab, refusals, f"calls failed {how}: ")
            fail(f"faults still injected {how}",
                 expected=f"0 aborts_injected and {CLEARED_REQUESTS} answers 200",
                 received=f"{injected} injected, {len(failed)} failed", hint=CLEAR_HINT)
        if how == "after its --for":
            listed = control(lab, "GET", "/faults").json()
            if listed:
                fail("an expired experiment is still listed", expected="GET /faults: []",
                     received=json.dumps(listed)[:300], hint=CLEAR_HINT)
            start_experiment(lab, abort_percent=100.0)
            wait_in_sync(lab)
            cleared = _json(control(lab, "DELETE", "/faults", params={"service": "api"}))
            if cleared.get("cleared") != 1:
                fail("DELETE /faults?service=api did not clear the one experiment",
                     expected='{"cleared": 1}', received=json.dumps(cleared), hint=CLEAR_HINT)


# -- reading answers -------------------------------------------------------------------

def _json(answer: httpx.Response | Answer) -> dict:
    """The JSON object ANSWER's body holds ({} for anything else)."""
    try:
        data = json.loads(answer.text)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _pong(answer: bytes | str) -> bool:
    return isinstance(answer, bytes) and answer.startswith(b"+PONG")


def _caller(headers: dict) -> str | None:
    value = headers.get("x-forwarded-client-cert") or ""
    for part in value.replace(",", ";").split(";"):
        if part.startswith("URI="):
            return part[4:]
    return None


def _without_stamps(value):
    if isinstance(value, dict):
        return {k: _without_stamps(v) for k, v in value.items() if k not in ("version_info", "last_updated")}
    if isinstance(value, list):
        return [_without_stamps(v) for v in value]
    return value
