"""Lab 07 — Interception: the app's traffic is captured into Envoy by the kernel.

The app runs in a pod (a network namespace the lab creates) and calls other services
by their own addresses; nothing tells it about Envoy. Each check makes the app (or a
process in the remote pod) send real traffic and decides from what reached the
services (their journals), what Envoy reports (listener counters, its access log with
the original destination) and a header only Envoy's router adds. The learner's rules
and YAML are never read.
"""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from meshlab.apps.server import JOURNAL_PATH
from meshlab.grading import check, fail
from meshlab.grading.accesslog import AccessLog

pytestmark = pytest.mark.lab("07-interception")

# Every port and address comes from lab.yaml: `lab.port`, `lab.url` (the app seen from
# inside its pod) and `lab.address` (a service seen from the other pods).

# Envoy's router adds this to every response it forwards; no app of the lab sets it.
ENVOY_HEADER = "x-envoy-upstream-service-time"
CAPTURE_HINT = ("capture.rules must REDIRECT the pod's outbound TCP to port 15001 (nat OUTPUT), and Envoy's "
                "outbound listener must forward it to where the app meant to go")
LOOP_HINT = ("Envoy's connections pass through nat OUTPUT too: exempt its uid (-m owner --uid-owner 1337 -j RETURN) "
             "before the REDIRECT, or each of its upstream connections comes back to it")


def probe() -> str:
    return uuid.uuid4().hex


def control(lab, app: str = "app") -> httpx.Client:
    """A client to APP over the abstract Unix socket of its pod it also listens on
    (`--unix` in lab.yaml): the checker asks it to make calls and reads its journal
    there, where no capture rule can interfere."""
    spec = lab.lab.service(app)
    return lab.pod(spec.pod, unix=spec.args[spec.args.index("--unix") + 1])


def call(lab, url: str) -> dict:
    """Make the app call URL (a plain GET from inside the pod); what the app received."""
    response = control(lab).get("http://app/call", params={"url": url}, timeout=15.0)
    response.raise_for_status()
    return response.json()


def outbound(lab, sidecar: str = "sidecar") -> int:
    return lab.port(sidecar, "outbound")


def no_loop_behind(result: dict, accepted: int, port: int, loop_hint: str) -> None:
    """A call that got no answer while Envoy's outbound listener took more connections
    than the one call opened went into a capture loop: say so, not "not captured"."""
    if "error" in result and accepted > 1:
        fail("the app's call went into Envoy and never came back: Envoy's own upstream connection was captured "
             "into Envoy again, and again",
             expected=f"1 connection on the :{port} listener for the call",
             received=f"{accepted} connections while the app waited; {shown(result)}", hint=loop_hint)


def captured_call(lab, url: str) -> dict:
    """call(), failing with the loop explained if the call ran into one."""
    port = outbound(lab)
    before = counted_connections(lab, port)
    result = call(lab, url)
    after = counted_connections(lab, port)
    if before is not None and after is not None:
        no_loop_behind(result, after - before, port, LOOP_HINT)
    elif not through_envoy(result):   # Envoy's counters cannot tell why: say what stands in the way
        admin_unreachable(lab, port)
    return result


def answered_by_envoy_itself(result: dict) -> None:
    """Captured, but Envoy's router did not forward it (a 503 of its own, say): the
    capture works, what Envoy does with the connection does not yet."""
    if "error" not in result and result["headers"].get("server") == "envoy":
        fail("the app's call reached Envoy, which answered it itself instead of forwarding it",
             expected=f"a response of the remote service forwarded by Envoy's router ({ENVOY_HEADER})",
             received=shown(result),
             hint="the capture works; Envoy's access log says why it answered (response_flags UH: no upstream "
                  "host). Its outbound side must read where the app meant to go and send the request there: "
                  "steps 2 and 3 of the README")


def shown(result: dict) -> str:
    if "error" in result:
        return f"the app's call failed: {result['error']}"
    headers = result["headers"]
    return (f"HTTP {result['status']}, server: {headers.get('server', '-')}, {ENVOY_HEADER}: "
            f"{headers.get(ENVOY_HEADER, '(absent)')}, body {result['body'].strip()[:80]!r}")


def through_envoy(result: dict) -> bool:
    return "error" not in result and ENVOY_HEADER in result["headers"]


def listener_connections(lab, port: int) -> int:
    """Connections Envoy accepted on its listener on PORT (whatever address it binds)."""
    accepted = counted_connections(lab, port)
    if accepted is None:
        admin_unreachable(lab, port)
    return accepted


def admin_unreachable(lab, port: int) -> None:
    fail(f"the checker's request to Envoy's admin API (127.0.0.1:{lab.port('sidecar', 'admin')} inside the pod) was "
         "captured into Envoy's outbound listener, and Envoy's counters never came back",
         expected="Envoy's own counters", received=f"no answer from Envoy's admin API (asking for the :{port} listener)",
         hint="exempt loopback before the outbound REDIRECT (-d 127.0.0.0/8 -j RETURN, step 5), and Envoy's uid "
              "(-m owner --uid-owner 1337 -j RETURN, step 1): the checker reads Envoy's counters over loopback")


def counted_connections(lab, port: int) -> int | None:
    """listener_connections(), or None when what answered was not Envoy's admin API.

    The admin API is read from inside the pod over one kept-alive connection: where
    loopback is captured too, that connection passes :15001 once, before any count.
    Envoy always reports server.live: an answer without it came from somewhere else."""
    try:
        stats = lab.envoy("sidecar").stats(rf"^(listener\..*_{port}\.downstream_cx_total|server\.live)$")
    except httpx.TimeoutException:  # captured, and Envoy's forwarding of it captured again
        return None
    if "server.live" not in stats:
        return None
    return sum(value for name, value in stats.items() if name != "server.live" and ".worker_" not in name)


def journal(lab, service: str, since: int = 0) -> list[dict]:
    """What SERVICE received (the app's journal is read over its Unix socket)."""
    if service != "app":
        return lab.journal(service, since=since)
    response = control(lab).get(f"http://app{JOURNAL_PATH}", params={"since": since})
    response.raise_for_status()
    return response.json()


def position(lab, service: str) -> int:
    entries = journal(lab, service)
    return entries[-1]["seq"] if entries else 0


def reached(lab, service: str, since: int, mark: str) -> dict | None:
    return next((e for e in journal(lab, service, since=since) if e["query"].get("probe") == [mark]), None)


def require_capture(lab) -> None:
    """A bypass only means something once capture works: one call must go through Envoy."""
    result = captured_call(lab, f"http://{lab.address('remote')}/?probe={probe()}")
    if not through_envoy(result):
        fail("the app's calls are not captured yet, so there is nothing to bypass",
             expected="a call to the remote service answered through Envoy",
             received=shown(result), hint=CAPTURE_HINT)


@check("The app's call to 10.77.7.3:8080 goes through Envoy, which logs the original destination",
       hint=CAPTURE_HINT)
def test_outbound_captured(lab):
    mark, since = probe(), lab.journal_position("remote")
    log = AccessLog(lab.runtime.access_log_path("sidecar"))
    position = log.position()
    remote = lab.address("remote")
    result = captured_call(lab, f"http://{remote}/hello?probe={mark}")
    if not through_envoy(result):
        answered_by_envoy_itself(result)
        went = "it reached the remote service directly" if reached(lab, "remote", since, mark) else \
            "it reached nothing"
        fail(f"the app's call did not pass through Envoy: {went}",
             expected=f"a response carrying {ENVOY_HEADER} (only Envoy's router adds it)",
             received=shown(result))
    if result["status"] != 200 or reached(lab, "remote", since, mark) is None:
        fail("the call went into Envoy but did not reach the remote service",
             expected=f"HTTP 200 from the remote service at {remote}, which records the request",
             received=shown(result) + "; the remote service has no record of it",
             hint="the outbound route must go to a cluster of type ORIGINAL_DST (lb_policy CLUSTER_PROVIDED), "
                  "and the listener needs the envoy.filters.listener.original_dst listener filter")
    entries = log.wait(position, 1, where=lambda e: mark in str(e.get("path", "")))
    destination = entries[0].get("original_destination")
    if destination != remote:
        fail("Envoy's access log does not show where the app meant to go",
             expected=f"original_destination {remote} in the log entry of the call",
             received=f"the entry: {json.dumps(entries[0])[:240]}",
             hint=f"without the original_dst listener filter Envoy sees the REDIRECTed address "
                  f"(127.0.0.1:{outbound(lab)}) "
                  "as the destination; add the filter to the outbound listener")


@check("Calls to two remote services each reach the service the app called",
       hint="a STATIC cluster sends every call to one fixed address; ORIGINAL_DST forwards each connection to "
            "its own original destination")
def test_each_call_reaches_its_destination(lab):
    for service in ("remote", "other"):
        mark, since, target = probe(), lab.journal_position(service), lab.address(service)
        result = captured_call(lab, f"http://{target}/?probe={mark}")
        if not through_envoy(result):
            answered_by_envoy_itself(result)
            fail(f"the app's call to {target} did not pass through Envoy",
                 expected=f"a response carrying {ENVOY_HEADER}", received=shown(result), hint=CAPTURE_HINT)
        if reached(lab, service, since, mark) is None:
            answered = result["body"].strip() or "nothing"
            fail(f"the call to {target} reached another service",
                 expected=f"the {service} service at {target} receives it",
                 received=f"{service} has no record of it; the answer came from {answered!r}")


@check("Inbound: a request from the remote pod to the app's port is served through Envoy's inbound listener",
       hint="capture.rules must REDIRECT TCP arriving for port 8080 to port 15006 (nat PREROUTING), and Envoy needs "
            "a listener on 0.0.0.0:15006 that routes to the app at 127.0.0.1:8080")
def test_inbound_through_envoy(lab):
    mark, since = probe(), position(lab, "app")
    app, inbound = lab.address("app"), lab.port("sidecar", "inbound")
    before = listener_connections(lab, inbound)
    try:
        response = lab.pod("remote").get(f"http://{app}/inbound", params={"probe": mark})
    except httpx.ConnectError as error:
        fail(f"the connection from the remote pod to {app} was refused",
             expected=f"HTTP 200 from the app for GET http://{app}/inbound",
             received=f"{error}: when PREROUTING sends it to port {inbound}, a listener of Envoy must be there "
                      f"(bound to 0.0.0.0, since the REDIRECT goes to the pod's address {app.split(':')[0]})")
    after = listener_connections(lab, inbound)
    seen = reached(lab, "app", since, mark)
    if response.status_code != 200 or seen is None:
        fail("the request from the remote pod did not reach the app",
             expected=f"HTTP 200 from the app for GET http://{app}/inbound",
             received=f"HTTP {response.status_code} {response.text.strip()[:120]!r}; the app has "
                      f"{'a' if seen else 'no'} record of it")
    if after - before < 1 or ENVOY_HEADER not in response.headers:
        fail("the request reached the app without passing through Envoy",
             expected=f"Envoy's listener on port {inbound} accepts the connection ({ENVOY_HEADER} in the answer)",
             received=f"downstream_cx_total of the :{inbound} listener {before} -> {after}; "
                      f"{ENVOY_HEADER}: {response.headers.get(ENVOY_HEADER, '(absent)')}")


@check("No loop: Envoy's own upstream connections are not captured", hint=LOOP_HINT)
def test_no_loop(lab):
    calls, port, remote = 5, outbound(lab), lab.address("remote")
    before = listener_connections(lab, port)
    results = []
    for _ in range(calls):
        results.append(call(lab, f"http://{remote}/?probe={probe()}"))
        accepted = listener_connections(lab, port) - before
        if accepted > len(results):  # one call, one connection: more is a loop (no need to wait for more)
            fail("Envoy accepted more connections than the app opened: its own connections came back to it",
                 expected=f"{len(results)} connections on the :{port} listener for {len(results)} calls",
                 received=f"{accepted} connections; the call: {shown(results[-1])}")
    captured = sum(1 for r in results if through_envoy(r))
    if captured < calls or accepted < calls:
        fail("the app's calls did not all pass through Envoy, so there is no loop to rule out",
             expected=f"{calls} calls answered through Envoy, {calls} connections on :{port}",
             received=f"{captured} answered through Envoy, {accepted} connections; last: {shown(results[-1])}",
             hint=CAPTURE_HINT)


@check("Loopback traffic inside the pod bypasses Envoy",
       hint="exempt loopback before the outbound REDIRECT (-d 127.0.0.0/8 -j RETURN): processes of one pod talk "
            "to each other over 127.0.0.1, and Envoy reaches the app that way")
def test_loopback_bypasses(lab):
    require_capture(lab)
    mark, since, port = probe(), position(lab, "app"), outbound(lab)
    before = listener_connections(lab, port)
    response = lab.pod("pod").get(lab.url("app", path="/local"), params={"probe": mark})
    accepted = listener_connections(lab, port) - before
    if reached(lab, "app", since, mark) is None:
        fail(f"a request to 127.0.0.1:{lab.port('app')} inside the pod did not reach the app",
             expected="the app answers on loopback",
             received=f"HTTP {response.status_code}, server: {response.headers.get('server', '-')}, "
                      f"{ENVOY_HEADER}: {response.headers.get(ENVOY_HEADER, '(absent)')}, "
                      f"body {response.text.strip()[:80]!r}")
    if accepted or ENVOY_HEADER in response.headers:
        fail("a connection to 127.0.0.1 inside the pod was captured into Envoy",
             expected=f"no new connection on the :{port} listener, no {ENVOY_HEADER}",
             received=f"{accepted} new connections; {ENVOY_HEADER}: {response.headers.get(ENVOY_HEADER, '(absent)')}")


@check("Port 5432 is excluded: the app's call to the database bypasses Envoy",
       hint="add -p tcp --dport 5432 -j RETURN to the outbound chain before the REDIRECT (Istio's "
            "excludeOutboundPorts does the same)")
def test_excluded_port_bypasses(lab):
    require_capture(lab)
    mark, since, port, db = probe(), lab.journal_position("db"), outbound(lab), lab.address("db")
    before = listener_connections(lab, port)
    result = call(lab, f"http://{db}/?probe={mark}")
    accepted = listener_connections(lab, port) - before
    if reached(lab, "db", since, mark) is None:
        fail("the app's call to the database never arrived", expected=f"the db service at {db} receives it",
             received=shown(result))
    if accepted or through_envoy(result):
        fail(f"the call to port {lab.port('db')} was captured into Envoy",
             expected=f"no new connection on the :{port} listener, no {ENVOY_HEADER}",
             received=f"{accepted} new connections; {shown(result)}")


# -- part B: eBPF, in podb, where no iptables rule exists ------------------------------

BPF_HINT = ("connect4.c must save the destination in mesh_by_cookie under the socket's cookie and rewrite "
            "ctx->user_ip4 / ctx->user_port to 127.0.0.1:15001 (network byte order: bpf_htonl, bpf_htons)")
BPF_LOOP_HINT = ("Envoy is in the same cgroup as the app: connect4 must return early for its uid "
                 "(bpf_get_current_uid_gid() & 0xffffffff == ENVOY_UID), or Envoy connects to itself")


def call_b(lab, url: str) -> dict:
    """Make podb's app call URL."""
    response = control(lab, "app-b").get("http://app/call", params={"url": url}, timeout=15.0)
    response.raise_for_status()
    return response.json()


def outbound_b(lab) -> int:
    stats = lab.envoy("sidecar-b").stats(rf"^listener\..*_{outbound(lab, 'sidecar-b')}\.downstream_cx_total$")
    return sum(value for name, value in stats.items() if ".worker_" not in name)


def captured_call_b(lab, url: str) -> dict:
    """call_b(), failing with the loop explained if the call ran into one."""
    before = outbound_b(lab)
    result = call_b(lab, url)
    no_loop_behind(result, outbound_b(lab) - before, outbound(lab, "sidecar-b"), BPF_LOOP_HINT)
    return result


def nat_rules(lab, pod: str) -> list[str]:
    dump = lab.runtime.pods.run(pod, ["iptables-save"]).stdout
    return [line for line in dump.splitlines() if line.startswith("-A ")]


def require_capture_b(lab) -> None:
    result = captured_call_b(lab, f"http://{lab.address('remote')}/?probe={probe()}")
    if not through_envoy(result):
        fail("the app's calls in podb are not redirected yet, so there is nothing to compare with",
             expected="a call of podb's app answered through Envoy", received=shown(result), hint=BPF_HINT)


@check("eBPF: with no iptables rule in podb, the app's calls reach Envoy and then where they were going",
       hint=BPF_HINT)
def test_bpf_outbound_captured(lab):
    rules = nat_rules(lab, "podb")
    if rules:
        fail("podb has iptables rules: this part must work without them",
             expected="iptables-save in podb lists no rule", received="; ".join(rules[:3]))
    log = AccessLog(lab.runtime.access_log_path("sidecar-b"))
    for service in ("remote", "other"):
        mark, since, start, target = probe(), lab.journal_position(service), log.position(), lab.address(service)
        result = captured_call_b(lab, f"http://{target}/?probe={mark}")
        if not through_envoy(result):
            fail(f"podb's app called {target} and Envoy was not in the path",
                 expected=f"a response carrying {ENVOY_HEADER}", received=shown(result))
        if reached(lab, service, since, mark) is None:
            fail(f"the call went into Envoy but did not reach {target}",
                 expected=f"the {service} service receives it", received=shown(result),
                 hint="Envoy reads the original destination with SO_ORIGINAL_DST, which the given getsockopt "
                      "program answers from mesh_by_port: connect4 must fill mesh_by_cookie (ip and port as "
                      "connect() saw them, network byte order); and podb runs the same envoy.yaml, whose "
                      "outbound cluster must be ORIGINAL_DST")
        entry = log.wait(start, 1, where=lambda e, m=mark: m in str(e.get("path", "")))[0]
        if entry.get("original_destination") != target:
            fail("Envoy's access log does not show where the app meant to go",
                 expected=f"original_destination {target}", received=json.dumps(entry)[:240])


@check("eBPF: a process of podb outside the app's cgroup is not redirected",
       hint="the programs act on the cgroup they are attached to, and nothing else: nothing to do in connect4.c "
            "but to leave other cgroups alone")
def test_bpf_only_the_cgroup(lab):
    require_capture_b(lab)
    mark, since = probe(), lab.journal_position("remote")
    before = outbound_b(lab)
    response = lab.pod("podb").get(f"http://{lab.address('remote')}/", params={"probe": mark})
    accepted, port = outbound_b(lab) - before, outbound(lab, "sidecar-b")
    if reached(lab, "remote", since, mark) is None or accepted or ENVOY_HEADER in response.headers:
        fail("a connection from outside the cgroup went through Envoy (or nowhere)",
             expected=f"it reaches the remote service directly: no new connection on Envoy's :{port}",
             received=f"HTTP {response.status_code}; {accepted} new connections on :{port}; "
                      f"{ENVOY_HEADER}: {response.headers.get(ENVOY_HEADER, '(absent)')}")


@check("eBPF: Envoy's own connects are not redirected (no loop)", hint=BPF_LOOP_HINT)
def test_bpf_no_loop(lab):
    calls, port, remote = 5, outbound(lab, "sidecar-b"), lab.address("remote")
    before = outbound_b(lab)
    results = []
    for _ in range(calls):
        results.append(call_b(lab, f"http://{remote}/?probe={probe()}"))
        accepted = outbound_b(lab) - before
        if accepted > len(results):
            fail("Envoy accepted more connections than the app opened: its own connects were redirected to it",
                 expected=f"{len(results)} connections on :{port} for {len(results)} calls",
                 received=f"{accepted} connections; the call: {shown(results[-1])}")
    captured = sum(1 for r in results if through_envoy(r))
    if captured < calls:
        fail("the app's calls in podb did not all pass through Envoy, so there is no loop to rule out",
             expected=f"{calls} calls answered through Envoy", received=f"{captured}; last: {shown(results[-1])}",
             hint=BPF_HINT)
