"""Lab 01 — Hello Mesh: a static Envoy sidecar in front of one Python app.

Every check sends real requests through Envoy and decides from what the app received
(its journal, read directly on :8080) and what Envoy reports (admin API), never from the
learner's YAML. A request marked with a unique probe proves it reached the app, so a
`direct_response` that only imitates the app cannot pass.
"""

from __future__ import annotations

import uuid

import pytest

from meshlab.apps.hello import GREETING
from meshlab.grading import (
    check,
    describe,
    fail,
    lacks_header,
    responds_with_body,
    responds_with_header,
    responds_with_status,
)
from meshlab.grading.upstreams import clusters_reaching

pytestmark = pytest.mark.lab("01-hello-mesh")

LISTENER_HINT = "define a listener on 127.0.0.1:10000 whose HTTP connection manager routes every path to the app's cluster"


def through_envoy(lab, *, require_app: bool = True):
    """GET / through Envoy with a unique probe; (response, the app's record of it or None)."""
    probe = uuid.uuid4().hex
    app = f"127.0.0.1:{lab.port('app')}"
    before = lab.journal_position("app")
    response = lab.get(lab.url("sidecar", "listener", "/"), params={"probe": probe}, hint=LISTENER_HINT)
    seen = next((e for e in lab.journal("app", since=before) if e["query"].get("probe") == [probe]), None)
    if require_app and seen is None:
        if response.status_code == 200 and response.text.strip() == GREETING:
            fail("Envoy answered with the app's words, but the request never reached the app",
                 expected=f"the request forwarded to the app at {app}",
                 received=f"{describe(response)}; the app's journal has no such request",
                 hint="route to a cluster (`route: { cluster: NAME }`) instead of answering with a direct_response")
        fail(f"the request sent to :{lab.port('sidecar', 'listener')} never reached the app",
             expected=f"Envoy forwards GET / to the app at {app}",
             received=describe(response),
             hint=f"the route must name a cluster whose endpoint is {app}")
    return response, seen


def app_clusters(lab) -> list[str]:
    """The clusters (whatever their names) that have the app as an endpoint."""
    return clusters_reaching(lab.envoy(), lab.port("app"), what="the app")


@check("The app's greeting arrives through Envoy on :10000", hint=LISTENER_HINT)
def test_greeting_through_envoy(lab):
    response, _ = through_envoy(lab)
    responds_with_status(response, 200)
    responds_with_body(response, GREETING)


@check("Envoy listens on 127.0.0.1:10000, loopback only",
       hint="set the listener's socket_address to address 127.0.0.1, port_value 10000")
def test_listener_on_loopback(lab):
    port = lab.port("sidecar", "listener")
    addresses = lab.envoy().listener_addresses()
    if ("127.0.0.1", port) in addresses:
        return
    shown = ", ".join(f"{a}:{p}" for a, p in addresses) or "no listeners at all"
    if any(bound == port for _, bound in addresses):
        fail(f"the listener on port {port} accepts connections from every network, not only this machine",
             expected=f"a listener bound to 127.0.0.1:{port}",
             received=f"Envoy's listeners: {shown}",
             hint="a sidecar listens on loopback: the app's clients are on this host; use address 127.0.0.1")
    fail(f"Envoy has no listener on 127.0.0.1:{port}",
         expected=f"a listener bound to 127.0.0.1:{port}", received=f"Envoy's listeners: {shown}")


@check("Envoy adds x-my-injected-header: envoy-was-here to the app's response",
       hint="add `response_headers_to_add` with key x-my-injected-header, value envoy-was-here "
            "to the virtual host (or route)")
def test_injected_header(lab):
    direct = lab.get(lab.url("app", path="/"))
    lacks_header(direct, "x-my-injected-header")  # so whoever adds it is between client and app
    response, seen = through_envoy(lab)
    if "x-my-injected-header" not in response.headers and "x-my-injected-header" in seen["headers"]:
        fail("the header went to the app with the request, not back to the client with the response",
             expected="x-my-injected-header: envoy-was-here on the response",
             received="the app received it as a request header; the client did not get it",
             hint="use `response_headers_to_add`; `request_headers_to_add` changes what the app receives")
    responds_with_header(response, "x-my-injected-header", "envoy-was-here")


@check("The client talks to Envoy: `server: envoy` replaces the app's own server header",
       hint="the response must come from the app through Envoy; Envoy rewrites `server` by default")
def test_server_is_envoy(lab):
    direct = lab.get(lab.url("app", path="/"))
    app_server = direct.headers.get("server", "")
    response, _ = through_envoy(lab)
    responds_with_header(response, "server", "envoy",
                         hint=f"the app calls itself {app_server!r}; through Envoy the client should see 'envoy' "
                              "(do not set server_name or server_header_transformation in this lab)")


@check("Envoy measured the app's time: x-envoy-upstream-service-time",
       hint="this header comes from the router filter when it forwards to a cluster; keep the router last "
            "in http_filters")
def test_upstream_service_time(lab):
    response, _ = through_envoy(lab)
    value = responds_with_header(response, "x-envoy-upstream-service-time")
    if not value.isdigit():
        fail("x-envoy-upstream-service-time is not a number of milliseconds",
             expected="an integer like 1", received=value)


@check("Envoy's counters show the requests went upstream to the app's cluster",
       hint="the cluster must have the app (127.0.0.1:8080) as its endpoint")
def test_cluster_counters(lab):
    admin = lab.envoy()
    clusters = app_clusters(lab)
    sent = 5
    with admin.delta(r"^cluster\.") as delta:
        for _ in range(sent):
            responds_with_status(through_envoy(lab)[0], 200)
    upstream = sum(delta[f"cluster.{name}.upstream_rq_total"] for name in clusters)
    if upstream != sent:
        fail(f"Envoy counted {upstream} upstream requests for {sent} sent",
             expected=f"cluster.{clusters[0]}.upstream_rq_total to grow by exactly {sent}",
             received=f"it grew by {upstream} (changes: {delta.changed()})")


@check("With the app down, Envoy itself answers 503, and recovers when the app is back",
       hint="this works once the route sends to a cluster; Envoy answers 503 when it cannot connect to it")
def test_503_when_app_down(lab):
    admin = lab.envoy()
    clusters = app_clusters(lab)
    with lab.stopped("app"):
        with admin.delta(r"^cluster\.") as delta:
            response = lab.get(lab.url("sidecar", "listener", "/"))
        responds_with_status(response, 503,
                             hint="with the app stopped, nothing but Envoy can answer; a 200 means Envoy "
                                  "is not forwarding to the app")
        # Who answered? Not the app (it is down): Envoy's counters show it tried and failed.
        failures = sum(delta[f"cluster.{name}.upstream_cx_connect_fail"] +
                       delta[f"cluster.{name}.upstream_cx_destroy_remote_with_active_rq"] for name in clusters)
        if failures < 1:
            fail("Envoy's counters do not show a failed upstream connection",
                 expected=f"cluster.{clusters[0]}.upstream_cx_connect_fail to grow",
                 received=f"changes: {delta.changed()}")
    response, _ = through_envoy(lab)
    responds_with_status(response, 200, hint="after the app restarts, Envoy must reach it again")
