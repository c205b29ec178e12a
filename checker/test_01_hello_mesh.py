"""Lab 01 — Hello Mesh: a static Envoy sidecar in front of one Python app.

Every check sends real requests through Envoy and decides from what the app received
(its journal, read directly on :8080) and what Envoy reports (admin API), never from the
learner's YAML. A request marked with a unique probe proves it reached the app, so a
`direct_response` that only imitates the app cannot pass.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from meshlab.apps.hello import GREETING
from meshlab.envoy import Admin
from meshlab.grading import (
    check,
    describe,
    fail,
    lacks_header,
    responds_with_body,
    responds_with_header,
    responds_with_status,
)
from meshlab.grading.http import request
from meshlab.grading.upstreams import clusters_reaching
from meshlab.runtime.interface import selected

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


# -- the Docker part (steps 7 and 8): the learner's own compose files ---------------
#
# These checks run the compose files as written, with the real Compose, and ask Docker
# and Envoy what came of it. They come first: they publish the lab's ports on the
# host's 127.0.0.1, which the lab's own sandbox takes once the checks below start it.

on_docker = pytest.mark.skipif(selected() != "docker", reason="the Docker part (steps 7-8) is graded on the Docker "
                               "runtime: meshlab check 1 --runtime docker")
ENVOY_PORT, ADMIN_PORT, APP_PORT = 10000, 9901, 8080
NETWORK_HINT = ("step 7: from Envoy's container 127.0.0.1 is Envoy's own loopback; a STRICT_DNS cluster "
                "whose endpoint is the app's service name (app:8080) finds the app's container")
SIDECAR_HINT = ("step 8: `network_mode: service:app` puts Envoy in the app's network namespace, where the app "
                "is on 127.0.0.1:8080 again")
PORTS_HINT = ("step 8: publish 10000 and 9901 on the app's service (it owns the namespace) and drop the app's "
              "own 8080")


@contextlib.contextmanager
def compose_up(folder: Path, part: str) -> Iterator[object]:
    """The learner's docker/PART/compose.yaml, up while the block lasts; fails the check
    when Compose refuses it or Envoy does not come up."""
    from meshlab.container.project import ComposeProject

    project = ComposeProject(folder / "docker" / part / "compose.yaml", f"01-{part}")
    try:
        started = project.up()
        if started.returncode != 0:
            fail(f"docker compose could not start docker/{part}/compose.yaml",
                 expected="every service of the file running", received=started.stderr.strip()[-1500:],
                 hint=f"run it yourself: docker compose -f docker/{part}/compose.yaml up; its ports must be free "
                      f"(stop whatever publishes {ENVOY_PORT} or {ADMIN_PORT}: meshlab stop 1, or docker compose "
                      f"... down for a sandbox)")
        wait_for_envoy(project, part)
        yield project
    finally:
        project.down()


def wait_for_envoy(project, part: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        envoy = project.containers().get("envoy")
        if envoy is None or envoy.status in ("exited", "dead"):
            fail(f"Envoy's container of docker/{part} is not running",
                 expected=f"Envoy running with docker/{part}/envoy.yaml",
                 received=project.log("envoy") if envoy is not None else "no container for the service envoy",
                 hint=f"Envoy's own words are above; docker compose -f docker/{part}/compose.yaml logs envoy")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"http://127.0.0.1:{ADMIN_PORT}/ready", timeout=1, trust_env=False).text.strip() == "LIVE":
                return
        time.sleep(0.2)
    fail(f"Envoy of docker/{part} never answered on its published admin port {ADMIN_PORT}",
         expected=f"http://127.0.0.1:{ADMIN_PORT}/ready says LIVE", received=project.log("envoy"),
         hint=f"Envoy's admin must listen on 0.0.0.0:{ADMIN_PORT} in its container, published as "
              f"127.0.0.1:{ADMIN_PORT}:{ADMIN_PORT}")


def app_hosts(admin: Admin) -> list[str]:
    """Envoy's own view: the upstream hosts on the app's port, as `/clusters` lists them
    (for a DNS cluster, the addresses it resolved)."""
    return sorted({f"{h.address}:{h.port}" for h in admin.hosts() if h.port == APP_PORT})


def through_the_container(hint: str) -> httpx.Response:
    with httpx.Client(timeout=10, trust_env=False) as client:
        response = request(client, "GET", f"http://127.0.0.1:{ENVOY_PORT}/", hint=hint)
    responds_with_status(response, 200)
    responds_with_body(response, GREETING)
    responds_with_header(response, "x-my-injected-header", "envoy-was-here")
    return response


@on_docker
@check("Step 7: in a container of its own, Envoy reaches the app by its Compose service name", hint=NETWORK_HINT)
def test_docker_network(lab_folder):
    with compose_up(lab_folder, "network") as project, contextlib.closing(Admin(f"http://127.0.0.1:{ADMIN_PORT}")) as admin:
        app = project.addresses("app")
        hosts = app_hosts(admin)
        if not hosts:
            fail(f"Envoy of docker/network has no cluster with a host on port {APP_PORT}",
                 expected=f"a cluster whose host is the app's container ({', '.join(app)}:{APP_PORT})",
                 received="clusters: " + (", ".join(admin.cluster_hosts()) or "none"))
        if not any(host.rsplit(":", 1)[0] in app for host in hosts):
            loopback = any(host.startswith(("127.", "localhost")) for host in hosts)
            fail("Envoy's cluster points at its own container's loopback" if loopback else
                 "Envoy's cluster does not reach the app's container",
                 expected=f"Envoy resolved the app to its container's address {', '.join(app)}:{APP_PORT}",
                 received="Envoy's hosts (admin /clusters): " + ", ".join(hosts))
        through_the_container(NETWORK_HINT)


@on_docker
@check("Step 8: as the app's sidecar, Envoy shares its network namespace and reaches it on 127.0.0.1",
       hint=SIDECAR_HINT)
def test_docker_sidecar(lab_folder):
    with compose_up(lab_folder, "sidecar") as project, contextlib.closing(Admin(f"http://127.0.0.1:{ADMIN_PORT}")) as admin:
        containers = project.containers()
        mode = containers["envoy"].attrs["HostConfig"]["NetworkMode"]
        app = containers.get("app")
        if app is None or mode != f"container:{app.id}":
            fail("Envoy's container does not share the app's network namespace",
                 expected="Envoy's network mode: the app's container (network_mode: service:app)",
                 received=f"network mode {mode!r}")
        hosts = app_hosts(admin)
        if f"127.0.0.1:{APP_PORT}" not in hosts:
            fail(f"Envoy of docker/sidecar does not send to the app at 127.0.0.1:{APP_PORT}",
                 expected=f"a cluster with the host 127.0.0.1:{APP_PORT}, the app in the same namespace",
                 received="Envoy's hosts (admin /clusters): " + (", ".join(hosts) or "none"))
        through_the_container(SIDECAR_HINT)


@on_docker
@check("Step 8: only Envoy's ports are published; the app's 8080 is out of the host's reach", hint=PORTS_HINT)
def test_docker_sidecar_ports(lab_folder):
    with compose_up(lab_folder, "sidecar") as project:
        published = project.published_ports()
    shown = ", ".join(f"{port} by {service}" for port, service in sorted(published.items())) or "none"
    expected = f"{ENVOY_PORT} and {ADMIN_PORT} (Envoy's listener and admin), not {APP_PORT}"
    if APP_PORT in published:
        fail(f"the app's port {APP_PORT} is published: the host reaches the app around its sidecar",
             expected=expected, received=f"published on the host: {shown}")
    if ENVOY_PORT not in published:
        fail(f"Envoy's listener port {ENVOY_PORT} is not published", expected=expected,
             received=f"published on the host: {shown}")


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
