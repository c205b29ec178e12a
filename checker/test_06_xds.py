"""Lab 06 — xDS: the learner's control plane feeds Envoy over ADS.

Envoy starts with nothing but the way to the control plane; everything a check finds
in it (listener, routes, clusters, endpoints) came from the learner's code. Checks
decide from Envoy's admin API (config_dump, /clusters, counters and the `update_time`
gauges Envoy sets when it applies an update), from what reached the backends (their
journals), and from the control plane's own admin view.

The checker changes the intent the way an operator would: it rewrites intent.yaml,
and the learner's control plane follows the file. It borrows the learner's file for
that (meshlab.grading.borrowed): the learner's bytes, mode and modification time go
back when the checks end, even after a crash (the next run puts them back first). The
alternative, a second intent path under the checker's control, would need a different
control plane command line while checking than while learning; this way the checker
tests exactly the program the learner runs.
"""

from __future__ import annotations

import time
import uuid
from datetime import datetime

import httpx
import pytest
import yaml

from meshlab.envoy import ConfigDump
from meshlab.grading import CheckFailed, check, describe, eventually, fail
from meshlab.grading.borrowed import BorrowedFile

pytestmark = pytest.mark.lab("06-xds")

NODE_ID = "lab06-envoy"
BACKENDS = ("blue", "green")
# How long a correct control plane may take to notice the file and Envoy to apply it.
APPLY_WITHIN_S = 1.0
# How long we watch for something that should take milliseconds before calling it absent.
PATIENCE_S = 5.0
# How long a control plane that has read a save may take to make a snapshot of it: parsing
# and building take milliseconds; the rest is margin for a loaded machine.
BUILD_WITHIN_S = 0.5

# Requests sent down each route of the intent to see which cluster Envoy counts them in.
ROUTE_REQUESTS = 4

STEPS_HINT = "finish steps 1-4 of control_plane.py; its log (and `meshlab xds status`) says what Envoy got"
VERSION_HINT = ("step 5: the snapshot's version must change when the resources change; with the same version "
                "the cache considers Envoy up to date and pushes nothing")

UNCHANGED_HINT = ("step 5: derive the version from the resources (a digest), not from the time or a counter of "
                  "saves: equal resources must give an equal version")


# -- the lab's ports (from its manifest) and the intents the checks use ------------------

def listener_url(lab, path: str) -> str:
    return lab.url("envoy", "listener", path)


def intents(lab) -> tuple[dict, dict, dict]:
    """As shipped (start), "/" moved to green (moved), and the same with a typo Envoy
    must reject (typo: green's port with a digit too many, which does not exist: ports
    end at 65535)."""
    blue, green = (lab.port(name) for name in BACKENDS)
    shop = {"endpoints": [{"address": "127.0.0.1", "port": blue, "weight": 3},
                          {"address": "127.0.0.1", "port": green, "weight": 1}]}
    start = {
        "listener": {"port": lab.port("envoy", "listener")},
        "routes": [{"prefix": "/shop", "service": "shop"}, {"prefix": "/", "service": "blue"}],
        "services": {"blue": {"endpoints": [{"address": "127.0.0.1", "port": blue}]}, "shop": shop},
    }
    moved = {
        "listener": {"port": lab.port("envoy", "listener")},
        "routes": [{"prefix": "/shop", "service": "shop"}, {"prefix": "/", "service": "green"}],
        "services": {"green": {"endpoints": [{"address": "127.0.0.1", "port": green}]}, "shop": shop},
    }
    typo = {**moved, "services": {**moved["services"],
                                  "green": {"endpoints": [{"address": "127.0.0.1", "port": typo_port(lab)}]}}}
    return start, moved, typo


def typo_port(lab) -> int:
    return lab.port("green") * 10


# -- what reached the backends ----------------------------------------------------------

def served_by(lab, path: str = "/") -> tuple[httpx.Response | None, str | None]:
    """GET PATH through Envoy with a unique probe: (response, the backend whose journal
    has the probe). (None, None) when nothing listens on Envoy's listener."""
    probe = uuid.uuid4().hex
    positions = {name: lab.journal_position(name) for name in BACKENDS}
    try:
        response = lab.get(listener_url(lab, path), params={"probe": probe})
    except CheckFailed:
        return None, None
    for name in BACKENDS:
        if any(e["query"].get("probe") == [probe] for e in lab.journal(name, since=positions[name])):
            return response, name
    return response, None


def quick_backend(lab) -> str | None:
    """Which backend answers / (by its x-served-by header; for tight polling loops)."""
    try:
        response = lab.http.get(listener_url(lab, "/"), timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.headers.get("x-served-by") if response.status_code == 200 else None


def only_backend(lab, backend: str, answers: int = 6) -> bool:
    """ANSWERS requests in a row to / all answered by BACKEND (a weighted mix of
    backends, as round robin serves it, cannot do that)."""
    return all(quick_backend(lab) == backend for _ in range(answers))


# -- what the control plane reports -------------------------------------------------------

def control_plane(lab) -> dict | None:
    """The control plane's admin view for our Envoy's node (None if it has none)."""
    try:
        status = lab.http.get(lab.url("control-plane", "admin", "/status"), timeout=2.0).json()
    except (httpx.HTTPError, ValueError):
        return None
    return status.get("nodes", {}).get(NODE_ID) or {}


def snapshot_version(lab) -> str | None:
    return ((control_plane(lab) or {}).get("snapshot") or {}).get("version")


def control_plane_summary(lab) -> str:
    node = control_plane(lab)
    if node is None:
        admin = f"127.0.0.1:{lab.port('control-plane', 'admin')}"
        return f"the control plane's admin view ({admin}/status) does not answer"
    snapshot = node.get("snapshot")
    if not snapshot:
        return f"the control plane has no snapshot for {NODE_ID}"
    counts = ", ".join(f"{t} {len(names)}" for t, names in snapshot["resources"].items()) or "no resources"
    problems = f"; problems: {'; '.join(snapshot['problems'])}" if snapshot.get("problems") else ""
    return f"the control plane's snapshot for {NODE_ID}: version {snapshot['version']!r}, {counts}{problems}"


def in_sync(lab) -> bool:
    node = control_plane(lab)
    streams = (node or {}).get("streams") or []
    return bool(streams) and all(s["in_sync"] for s in streams)


# -- what Envoy reports ---------------------------------------------------------------------

def clusters_with_hosts(admin) -> dict[str, dict[int, int]]:
    """Cluster -> {port: weight} of its hosts on 127.0.0.1, from /clusters."""
    return {name: {h.port: h.weight for h in hosts if h.address == "127.0.0.1"}
            for name, hosts in admin.cluster_hosts().items()}


def connection_manager(listener: dict) -> dict | None:
    for chain in listener.get("filter_chains", []):
        for network_filter in chain.get("filters", []):
            config = network_filter.get("typed_config", {})
            if config.get("@type", "").endswith("HttpConnectionManager"):
                return config
    return None


def versions(dump: ConfigDump) -> dict[str, str | None]:
    """The version of each type as Envoy last accepted it (routes: of the listener's)."""
    routes = sorted({entry.get("version_info") for entry in dump.route_configs.values()})
    return {"LDS": dump.version("Listeners"), "CDS": dump.version("Clusters"),
            "RDS": routes[0] if len(routes) == 1 else None}


def subscription_versions(admin) -> dict[str, str]:
    """The version each xDS subscription of Envoy accepted last (its `version_text`)."""
    versions = {}
    for line in admin.get("/stats", filter=r"\.version_text$").text.splitlines():
        name, sep, value = line.partition(": ")
        if sep:
            versions[name] = value.strip().strip('"')
    return versions


def dumped_since(dump: ConfigDump, since: float) -> dict[str, str]:
    """config_dump entries (listeners, routes, clusters) updated after SINCE: name -> version."""
    entries = {f"listener {n}": a for n, a in dump.listeners.items()}
    entries.update({f"routes {n}": e for n, e in dump.route_configs.items()})
    entries.update({f"cluster {n}": e for n, e in dump.clusters.items()})
    return {name: entry.get("version_info") for name, entry in entries.items()
            if _timestamp(entry.get("last_updated")) >= since}


def _timestamp(text: str | None) -> float:
    if not text:
        return 0.0
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def read_since_written(path) -> bool:
    """True once some process has read PATH since it was last written: its access time
    has moved past its modification time. Linux's default (relatime) updates the access
    time at the first read after a write; with noatime it never moves, and this stays
    False."""
    try:
        info = path.stat()
    except OSError:
        return False
    return info.st_atime_ns > info.st_mtime_ns


def rejections(admin) -> int:
    return sum(v for name, v in admin.stats(r"update_rejected$").items() if name.endswith("update_rejected"))


# -- the intent, borrowed -------------------------------------------------------------------

class Intent:
    """intent.yaml, under the checker's control for the run, and the intents the checks
    write into it (`start`, `moved`, `typo`: see `intents`)."""

    def __init__(self, lab, borrowed: BorrowedFile):
        self.lab = lab
        self.file = borrowed
        self.start, self.moved, self.typo = intents(lab)

    def write(self, intent: dict) -> float:
        text = "# Written by `meshlab check 6`; your own intent.yaml comes back when the checks end.\n"
        return self.file.write(text + yaml.safe_dump(intent, sort_keys=False))

    def use(self, intent: dict, backend: str) -> bool:
        """Make INTENT current and wait until / reaches only BACKEND (True), or until the
        control plane has settled on something else (False)."""
        current = yaml.safe_load(self.file.read()) if self.file.path.exists() else None
        before = snapshot_version(self.lab)
        written = self.write(intent) if current != intent else 0.0
        elsewhere_since: list[float] = []

        def settled() -> bool:
            # The learner's intent may have sent / to a mix that includes BACKEND: wait
            # until the control plane has a new snapshot (or had time to make one) ...
            if written and snapshot_version(self.lab) == before and time.time() - written < 2.0:
                return False
            # ... and then several answers in a row must come from BACKEND alone.
            if only_backend(self.lab, backend):
                return True
            # Given up only when, well after the write, Envoy has acknowledged everything
            # the control plane sent, and that has stayed so for a while.
            if time.time() - written > 0.5 and in_sync(self.lab):
                elsewhere_since.append(time.monotonic())
                return time.monotonic() - elsewhere_since[0] > 0.5
            elsewhere_since.clear()
            return False

        eventually(settled, PATIENCE_S)
        return only_backend(self.lab, backend)


@pytest.fixture(scope="module")
def intent(lab):
    with BorrowedFile(lab.dir / "intent.yaml", keep=lab.runtime.run_dir) as borrowed:
        yield Intent(lab, borrowed)


def require_start(lab, intent: Intent) -> None:
    """The precondition of the later checks: the shipped intent is served (blue on /)."""
    if not intent.use(intent.start, "blue"):
        fail("Envoy does not send / to blue with the lab's intent, so this check cannot start",
             expected="GET / through Envoy answered by blue (the first check)",
             received=control_plane_summary(lab), hint=STEPS_HINT)


# -- the checks -----------------------------------------------------------------------------

@check("Envoy gets a listener on 127.0.0.1:10000 from your control plane, and it sends / to blue",
       hint=STEPS_HINT)
def test_listener_arrives_over_xds(lab, intent):
    intent.use(intent.start, "blue")
    admin = lab.envoy()
    port, xds_port = lab.port("envoy", "listener"), lab.port("control-plane", "xds")
    if admin.stat("control_plane.connected_state") != 1:
        fail("Envoy is not connected to your control plane",
             expected=f"control_plane.connected_state = 1 (an open ADS stream to 127.0.0.1:{xds_port})",
             received=f"control_plane.connected_state = {admin.stat('control_plane.connected_state')}; "
                      + control_plane_summary(lab),
             hint=f"the control plane must serve on --xds-port ({xds_port}); read its log: meshlab check shows "
                  "its tail")
    dump = admin.configuration()
    if dump.static_listeners or set(dump.static_clusters) - {"xds"}:
        fail("Envoy's bootstrap defines listeners or clusters itself",
             expected="static resources: only the cluster `xds` (the way to the control plane)",
             received=f"static listeners {dump.static_listeners}, static clusters {dump.static_clusters}",
             hint="restore envoy.yaml (meshlab reset 6 keeps a backup); everything else must come over xDS")
    found = dump.listener_at(port, "127.0.0.1")
    elsewhere = dump.listener_at(port)
    if found is None and elsewhere is not None:
        address = elsewhere[1]["listener"]["address"]["socket_address"].get("address")
        fail(f"the listener on port {port} listens on {address}, not only on this machine",
             expected=f"a listener bound to 127.0.0.1:{port}",
             received=f"listener {elsewhere[0]!r} on {address}:{port}",
             hint="step 1: the socket address is 127.0.0.1 (a sidecar's clients are on the same host)")
    if found is None:
        warming = f"; warming (waiting for routes or clusters): {dump.warming_listeners}" \
            if dump.warming_listeners else ""
        fail(f"Envoy has no active listener on 127.0.0.1:{port}",
             expected=f"a listener on 127.0.0.1:{port} received over LDS",
             received=f"dynamic listeners: {sorted(dump.listeners) or 'none'}{warming}; "
                      + control_plane_summary(lab),
             hint="step 1 builds it; a listener stays warming until its route configuration (RDS) arrives")
    response, backend = served_by(lab, "/")
    if backend != "blue":
        fail("GET / through Envoy did not reach blue",
             expected=f"the route for / sends to the cluster of service blue (127.0.0.1:{lab.port('blue')})",
             received=(describe(response) if response is not None else "no answer")
                      + (f", served by {backend}" if backend else ", and no backend saw the request"),
             hint="steps 2-4: the route names the cluster, the cluster gets the endpoints over EDS")


@check("Routes arrive over RDS and endpoints over EDS, on the one ADS stream",
       hint="step 1: the connection manager uses `rds` (not an inline route_config); step 3: clusters of type EDS")
def test_routes_and_endpoints_over_rds_and_eds(lab, intent):
    require_start(lab, intent)
    admin = lab.envoy()
    dump = admin.configuration()
    name, active = dump.listener_at(lab.port("envoy", "listener")) or ("?", {"listener": {}})
    manager = connection_manager(active["listener"]) or {}
    if "rds" not in manager:
        fail("the listener carries its routes inside itself, not over RDS",
             expected="the HTTP connection manager's `rds` naming a route configuration sent separately",
             received=f"listener {name!r}: " + ("an inline route_config" if "route_config" in manager
                                                else f"connection manager fields {sorted(manager)}"))
    route_name = manager["rds"].get("route_config_name")
    if route_name not in dump.route_configs:
        fail(f"Envoy has no route configuration {route_name!r}, which the listener asks for",
             expected=f"a RouteConfiguration named {route_name!r} received over RDS",
             received=f"route configurations: {sorted(dump.route_configs) or 'none'}")
    blue_port = lab.port("blue")
    blue = [c for c, hosts in clusters_with_hosts(admin).items() if set(hosts) == {blue_port}]
    eds = [c for c in blue if dump.clusters.get(c, {}).get("cluster", {}).get("type") == "EDS"]
    if not eds:
        kinds = {c: dump.clusters.get(c, {}).get("cluster", {}).get("type", "STATIC") for c in blue}
        fail("the cluster of service blue does not get its endpoints over EDS",
             expected=f"a dynamic cluster of type EDS whose endpoint 127.0.0.1:{blue_port} came in a "
                      "ClusterLoadAssignment",
             received=f"clusters with the endpoint 127.0.0.1:{blue_port}: {kinds or 'none'}",
             hint="step 3: type EDS with eds_cluster_config.eds_config = ads(); step 4 sends the endpoints")
    for route in intent.start["routes"]:
        route_reaches_its_service(lab, intent.start, route)


def route_reaches_its_service(lab, wanted: dict, route: dict) -> None:
    """Requests under ROUTE's prefix are counted by the cluster of ROUTE's service (known
    by its endpoints in WANTED), and by no other. Envoy takes the first route that
    matches, so routes sent in another order than the intent's (the catch-all "/" first)
    fail here: "/" then takes the requests of "/shop"."""
    admin = lab.envoy()
    service = route["service"]
    endpoints = {e["port"] for e in wanted["services"][service]["endpoints"]}
    hosts = clusters_with_hosts(admin)
    clusters = [c for c, ports in hosts.items() if set(ports) == endpoints]
    path = route["prefix"].rstrip("/") + "/meshlab-route-probe"
    shown = ", ".join(f"127.0.0.1:{p}" for p in sorted(endpoints))
    expected = (f"the {ROUTE_REQUESTS} requests to {path} counted by the cluster of service {service} "
                f"(endpoints {shown}): upstream_rq_total +{ROUTE_REQUESTS}")
    with admin.delta(r"^cluster\.") as delta:
        responses = [lab.get(listener_url(lab, path)) for _ in range(ROUTE_REQUESTS)]
    failed = [r for r in responses if r.status_code != 200]
    if failed:
        fail(f"requests to {path} (route {route['prefix']} of the intent) were not answered",
             expected=expected, received=describe(failed[0]),
             hint="every route of the intent becomes a route to its service's cluster, in the intent's order")
    counted = {c: delta[f"cluster.{c}.upstream_rq_total"] for c in hosts}
    if sum(counted.get(c, 0) for c in clusters) != ROUTE_REQUESTS:
        elsewhere = ", ".join(f"{c} +{n}" for c, n in sorted(counted.items()) if n) or "no cluster"
        fail(f"requests to {path} did not go to service {service}, as the intent's route {route['prefix']} says",
             expected=expected, received=f"upstream_rq_total moved for: {elsewhere}",
             hint="Envoy tries the routes in order and takes the first that matches: send them in the intent's "
                  "order (a prefix \"/\" before \"/shop\" takes every request)")


@check("Endpoint weights follow the intent: shop sends 3 of 4 requests to :8081, 1 to :8082",
       hint="step 4: set each LbEndpoint's load_balancing_weight from the intent's weight")
def test_endpoint_weights(lab, intent):
    require_start(lab, intent)
    clusters = clusters_with_hosts(lab.envoy())
    blue, green = (lab.port(name) for name in BACKENDS)
    shop = {c: hosts for c, hosts in clusters.items() if set(hosts) == {blue, green}}
    if not shop:
        fail("no cluster of Envoy has both endpoints of service shop",
             expected=f"a cluster with endpoints 127.0.0.1:{blue} and 127.0.0.1:{green}",
             received="clusters and their ports: " + "; ".join(f"{c}: {sorted(h)}" for c, h in clusters.items()))
    expected = {blue: 3, green: 1}
    for name, hosts in shop.items():
        if hosts != expected:
            fail(f"the weights of cluster {name!r} are not the intent's",
                 expected=f"127.0.0.1:{blue} weight 3, 127.0.0.1:{green} weight 1",
                 received=", ".join(f"127.0.0.1:{port} weight {weight}" for port, weight in sorted(hosts.items())))


@check("A changed intent reaches Envoy within 1 s: same process, no hot restart, new version, traffic moves",
       hint=VERSION_HINT)
def test_change_applied_without_restart(lab, intent):
    require_start(lab, intent)
    admin = lab.envoy()
    envoy = lab.runtime.state.services["envoy"]
    epoch_before = admin.stat("server.hot_restart_epoch")
    before = versions(admin.configuration())
    accepted_before = subscription_versions(admin)
    applied_before = admin.stats(r"update_time$")

    written = intent.write(intent.moved)
    statuses: list[int] = []

    def moved() -> bool:
        try:
            response = lab.http.get(listener_url(lab, "/"), timeout=2.0)
        except httpx.HTTPError as error:
            statuses.append(0)
            raise CheckFailed("Envoy stopped answering while the change was applied",
                              expected="every request answered, by blue then by green",
                              received=f"{type(error).__name__}: {error}") from None
        statuses.append(response.status_code)
        return response.headers.get("x-served-by") == "green"

    arrived = eventually(moved, PATIENCE_S)
    if not (lab.runtime.is_running("envoy") and lab.runtime.state.services["envoy"].pid == envoy.pid
            and admin.stat("server.hot_restart_epoch") == epoch_before):
        fail("Envoy was restarted to apply the change",
             expected=f"the same Envoy process (PID {envoy.pid}, hot-restart epoch {epoch_before})",
             received=f"PID {lab.runtime.state.services['envoy'].pid}, epoch {admin.stat('server.hot_restart_epoch')}",
             hint="only the control plane changes: it pushes the new snapshot over the open stream")
    if not arrived:
        after = versions(admin.configuration())
        same = snapshot_version(lab) in before.values()
        fail(f"traffic to / still does not reach green {PATIENCE_S:.0f} s after intent.yaml sent it there",
             expected="Envoy applies the new snapshot (version changes) and / reaches green",
             received=f"Envoy's versions before {before}, now {after}; " + control_plane_summary(lab),
             hint=VERSION_HINT if same else STEPS_HINT)
    failed = [s for s in statuses if s != 200]
    if failed:
        fail("while the change was applied, some requests failed",
             expected="every request answered 200 (make-before-break: new clusters before the routes that use them)",
             received=f"{len(failed)} of {len(statuses)} requests answered {sorted(set(failed))}",
             hint="the toolkit pushes clusters and endpoints before routes; do not remove a route's cluster "
                  "and change the route in a way that leaves it pointing nowhere")
    _, backend = served_by(lab, "/")
    if backend != "green":
        fail("Envoy says green, but green's journal has no such request",
             expected=f"the request reaches green (127.0.0.1:{lab.port('green')})",
             received=f"reached: {backend or 'nobody'}")
    applied = {name: value for name, value in admin.stats(r"update_time$").items()
               if name.endswith("update_time") and value != applied_before.get(name)}
    took = max(applied.values()) / 1000 - written if applied else None
    if took is None or took > APPLY_WITHIN_S:
        fail("Envoy applied the change too late",
             expected=f"the updates applied within {APPLY_WITHIN_S:.0f} s of the file's change",
             received=f"{took:.2f} s (Envoy's update_time gauges: {sorted(applied)})" if took is not None
                      else "Envoy's update_time gauges did not move",
             hint="the control plane should follow the file (watch_file) and push at once")

    # Envoy's own report of what it accepted: the version of each subscription that
    # changed, and the config_dump entries it updated (state of the world: the snapshot's
    # version; delta: each resource's own version).
    def one_version() -> str | None:
        changed = {v for name, v in subscription_versions(admin).items() if accepted_before.get(name) != v}
        return changed.pop() if len(changed) == 1 else None

    new_version = eventually(one_version, 2.0)
    snapshot = (control_plane(lab) or {}).get("snapshot") or {}
    current = snapshot.get("version")
    resource_versions = {v for named in snapshot.get("resources", {}).values() for v in named.values()}
    shown = dumped_since(admin.configuration(), written - 0.05)
    stale = {name: v for name, v in shown.items() if v not in {new_version, *resource_versions}}
    if not new_version or (current and new_version != current) or stale:
        fail("Envoy does not report the control plane's new version for what it updated",
             expected=f"every updated subscription (and its config_dump entries) at version {current or 'a new one'}",
             received=f"versions Envoy accepted: {subscription_versions(admin)}; config_dump entries updated: {shown}")


def updates(admin) -> dict[str, int]:
    """Envoy's counters of the xDS updates it received (one per push, per subscription)."""
    return {name: value for name, value in admin.stats(r"\.update_(attempt|success|rejected)$").items()
            if name.rsplit(".", 1)[-1] in ("update_attempt", "update_success", "update_rejected")}


@check("An unchanged intent (a save that changed only a comment) keeps its version: nothing to push",
       hint=UNCHANGED_HINT)
def test_unchanged_intent_pushes_nothing(lab, intent):
    require_start(lab, intent)
    admin = lab.envoy()
    accepted_before, updates_before = subscription_versions(admin), updates(admin)
    version_before = snapshot_version(lab)
    intent.file.write("# Saved again by `meshlab check 6`: only this comment changed.\n" + intent.file.read())

    def pushed() -> dict[str, int]:
        return {name: value - updates_before.get(name, 0) for name, value in updates(admin).items()
                if value != updates_before.get(name, 0)}

    def changed() -> bool:
        return bool(pushed()) or snapshot_version(lab) != version_before

    # A control plane that passed the previous check acts on a save within 1 s: a new
    # snapshot version in its admin view, and updates counted by Envoy if it sends any.
    # Watched for twice that long, or, once the file shows it was read (nothing but the
    # control plane reads it now), for the time it takes to build a snapshot from it.
    if eventually(lambda: changed() or read_since_written(intent.file.path), 2 * APPLY_WITHIN_S) and not changed():
        eventually(changed, BUILD_WITHIN_S)
    moved, version_after = pushed(), snapshot_version(lab)
    if moved or version_after != version_before:
        fail("a save that changed only a comment of intent.yaml made a new snapshot version"
             + (" and pushed it to Envoy" if moved else ""),
             expected="the same resources, so the same version: nothing new to push, Envoy's update counters "
                      "and versions stay",
             received=f"the control plane's snapshot version {version_before!r} -> {version_after!r}; Envoy's "
                      "updates: " + (", ".join(f"{name} +{n}" for name, n in sorted(moved.items())) or "none")
                      + f"; versions it accepted: {accepted_before} -> {subscription_versions(admin)}")


@check("An intent Envoy rejects is a NACK your control plane reports, while traffic flows on the last good version",
       hint="let the translation pass values through; Envoy validates them and NACKs; the toolkit records the NACK")
def test_nack_reported_while_traffic_flows(lab, intent):
    if not intent.use(intent.moved, "green"):
        fail("Envoy does not send / to green with a valid changed intent, so this check cannot start",
             expected="GET / answered by green (the previous check)", received=control_plane_summary(lab),
             hint=VERSION_HINT)
    admin = lab.envoy()
    rejected_before = rejections(admin)
    before = versions(admin.configuration())
    written = intent.write(intent.typo)
    if not eventually(lambda: rejections(admin) > rejected_before, PATIENCE_S):
        fail(f"Envoy rejected nothing after intent.yaml gave green the port {typo_port(lab)}",
             expected=f"a NACK: Envoy refuses an endpoint on port {typo_port(lab)} (ports end at 65535), counter "
                      "*.update_rejected grows",
             received=f"update_rejected unchanged; Envoy's versions {versions(admin.configuration())}; "
                      + control_plane_summary(lab),
             hint="pass the intent's values through to the resources: this check wants to see Envoy's own "
                  "validation at work (and " + VERSION_HINT.split(": ", 1)[1] + ")")
    for _ in range(5):
        response, backend = served_by(lab, "/")
        if backend != "green":
            fail("after the rejected update, traffic to / no longer reaches green",
                 expected="Envoy keeps serving the last version it accepted: / answered by green",
                 received=(describe(response) if response is not None else "no answer")
                          + f"; reached: {backend or 'nobody'}")
    after = versions(admin.configuration())
    if after["LDS"] != before["LDS"] or after["RDS"] != before["RDS"]:
        fail("the listener or routes changed although the update was rejected",
             expected=f"listeners and routes stay at {before['LDS']}", received=f"now {after}",
             hint="the toolkit sends listeners and routes only after clusters and endpoints are accepted")
    def reported() -> dict | None:
        nack = (control_plane(lab) or {}).get("last_nack")
        return nack if nack and nack.get("at", 0) >= written - 1 else None

    nack = eventually(reported, 2.0)
    if nack is None:
        log = lab.logs(200).get("control-plane", "")
        if "NACK" in log and "65535" in log:
            return  # reported in the log instead
        fail("Envoy rejected the update, but your control plane does not report it",
             expected=f"the control plane's admin view (/status) shows the last NACK of {NODE_ID}, "
                      "with Envoy's message",
             received=f"last_nack: {(control_plane(lab) or {}).get('last_nack')}",
             hint="serve with the toolkit's XdsServer (with --admin-port), which records every NACK")
    if not nack.get("message"):
        fail("the reported NACK carries no message", expected="Envoy's explanation", received=str(nack))
