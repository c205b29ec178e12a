"""The mesh manifest: the lab's mesh.yaml reads into the names the contract fixes, and a
mistake is an InputError at its line (no traceback)."""

from pathlib import Path

import pytest

from meshlab.errors import InputError
from meshlab.mesh import manifest

ROOT = Path(__file__).resolve().parents[1]
MESH = ROOT / "labs" / "11-mini-mesh" / "mesh.yaml"


def test_the_labs_mesh_reads_into_workloads_identities_and_rules():
    mesh = manifest.load(MESH)
    assert [w.name for w in mesh.workloads] == ["web-v1", "api-v1", "api-v2", "db-v1"]
    assert mesh.spiffe_id("api") == "spiffe://meshlab.test/ns/default/sa/api"
    assert mesh.outbound_cluster("api", "v2") == "outbound|8080|v2|api"
    assert mesh.inbound_cluster(6379) == "inbound|6379||"
    assert mesh.service("db").protocol == "tcp"
    first, default = mesh.rules("api")
    assert first.headers == {"x-canary": "true"} and first.weights == {"v2": 100}
    assert default.weights == {"v1": 80, "v2": 20}
    assert mesh.callers("api") == ("web",) and mesh.callers("db") == ("api",) and mesh.callers("web") == ()
    assert mesh.certificate_ttl_seconds == 600 and (mesh.xds_port, mesh.admin_port) == (18000, 18001)
    # A service without rules is split evenly over its versions.
    assert mesh.rules("db")[0].weights == {"v1": 100}


@pytest.mark.parametrize("old, new, words", [
    ("to: {v1: 80, v2: 20}", "to: {v1: 80, v2: 30}", "add up to 110"),
    ("to: {v1: 80, v2: 20}", "to: {v1: 80, v3: 20}", "no version 'v3'"),
    ("  db: [api]", "  db: [apii]", "unknown caller 'apii'"),
    ("    protocol: tcp", "    protocol: udp", "http or tcp"),
    ("certificates: {ttl: 10m}", "certificates: {ttl: ten}", "duration"),
    ("    port: 6379", "    prot: 6379", "unknown key 'prot'"),
])
def test_a_mistake_names_its_line(tmp_path, old, new, words):
    text = MESH.read_text()
    assert old in text
    line = text[:text.index(old)].count("\n") + 1
    bad = tmp_path / "mesh.yaml"
    bad.write_text(text.replace(old, new, 1))
    with pytest.raises(InputError) as caught:
        manifest.load(bad)
    assert words in caught.value.message
    assert caught.value.where.line == line, caught.value.where


def test_mesh_commands_explain_what_is_missing(cli):
    down = cli("mesh", "status")
    assert down.code == 2 and "is not running" in down.output and "meshlab mesh up" in down.output
    no_mesh = cli("mesh", "up", "3")
    assert no_mesh.code == 2 and "lab 03 has no mesh" in no_mesh.output
    assert cli("mesh", "--help").code == 0 and "up" in cli("mesh", "--help").output


def test_the_lab_injects_a_pod_and_a_sidecar_per_workload():
    from meshlab.course import load_course
    from meshlab.mesh import inject

    lab = load_course(ROOT).find(11)
    assert [p.name for p in lab.pods] == ["mesh", "web-v1", "api-v1", "api-v2", "db-v1"]
    assert all(p.iptables == str(inject.CAPTURE_RULES) for p in lab.pods[1:]) and lab.pods[0].iptables is None
    envoy = lab.service("api-v2-envoy")
    assert envoy.user == 1337 and envoy.pod == "api-v2" and envoy.target == str(inject.BOOTSTRAP)
    assert envoy.args == ("--service-node", "api-v2", "--service-cluster", "api")
    assert envoy.after == ("control-plane", "api-v2")
    web = lab.service("web-v1")
    assert "http://10.77.11.201:8080" in web.args and web.env["API_SERVICE_HOST"] == "10.77.11.201"
    assert lab.service("db-v1").target[0] == "redis-server"


def test_the_control_plane_starts_without_the_chaos_client():
    """Every start of the control plane (also the outage check's restart) imports the
    scaffolding, meshlab.chaos's fault type included (2 ms); its HTTP client, httpx (a
    tenth of the start), comes only when a fault is sent."""
    import subprocess
    import sys

    code = ("import sys; import meshlab.mesh.control; "
            "print(sorted(m for m in ('httpx',) if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    from meshlab.mesh import faults

    fault, problem = faults.parse({"service": "api", "abort_percent": 10.0}, None)
    assert problem is None and fault.abort_percent == 10.0 and fault.abort_status == 503


def test_the_mesh_ca_key_is_0600_and_survives_a_restart(tmp_path):
    import datetime as dt

    from cryptography import x509

    from meshlab.mesh.control import Authority

    first = Authority.load_or_create("meshlab.test", tmp_path / "ca")
    assert (tmp_path / "ca" / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "ca").stat().st_mode & 0o777 == 0o700
    again = Authority.load_or_create("meshlab.test", tmp_path / "ca")
    assert again.root_pem == first.root_pem            # a restarted control plane signs with the same CA
    svid = again.issue("spiffe://meshlab.test/ns/default/sa/api", dt.timedelta(minutes=10))
    leaf = x509.load_pem_x509_certificate(svid.chain_pem.encode())
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier)
    assert uris == ["spiffe://meshlab.test/ns/default/sa/api"] and leaf.issuer == first.cert.subject
    assert "PRIVATE KEY" in svid.key_pem and not list(tmp_path.glob("ca/*api*"))  # workload keys: memory only


def test_a_failing_build_is_named_with_its_line_in_the_status(tmp_path):
    """A learner's exception in build(node) shows in GET /status (and so in `meshlab mesh
    status`) at the line of the learner's file, not only in the control plane's log."""
    import importlib.util

    from meshlab.mesh.control import ControlPlane

    learner = tmp_path / "lab" / "control_plane.py"
    learner.parent.mkdir()
    learner.write_text("from envoy.extensions.filters.network.http_connection_manager.v3 import "
                       "http_connection_manager_pb2 as hcm\n\n"
                       "def build(node):\n"
                       "    return [hcm.Rds(route_config_nme='api')]\n")
    spec = importlib.util.spec_from_file_location("learner_control_plane", learner)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    plane = ControlPlane(module.build, MESH, state_dir=tmp_path / "state")
    plane.apply(manifest.load(MESH))
    assert set(plane.build_errors) == {w.name for w in plane.mesh.workloads}
    assert plane.build_errors["web-v1"].startswith('control_plane.py:4: ValueError: Protocol message Rds has no '
                                                  '"route_config_nme" field')
    plane.build = lambda node: []           # fixed: the error goes away with the next push
    plane.push()
    assert plane.build_errors == {}


def test_a_route_or_tcp_proxy_to_a_cluster_the_snapshot_lacks_is_named():
    """Envoy takes a route to an unknown cluster and answers 503 with an empty body; the
    mesh's control plane names it instead (a sidecar has no cluster but the snapshot's)."""
    from envoy.config.cluster.v3 import cluster_pb2
    from envoy.config.core.v3 import address_pb2
    from envoy.config.listener.v3 import listener_components_pb2, listener_pb2
    from envoy.config.route.v3 import route_components_pb2, route_pb2
    from envoy.extensions.filters.network.tcp_proxy.v3 import tcp_proxy_pb2

    from meshlab.mesh.control import missing_clusters
    from meshlab.xds import Snapshot

    weighted = route_components_pb2.WeightedCluster(clusters=[
        route_components_pb2.WeightedCluster.ClusterWeight(name="outbound|8080|v1|api", weight={"value": 80}),
        route_components_pb2.WeightedCluster.ClusterWeight(name="outbound|v2|api", weight={"value": 20})])
    routes = route_pb2.RouteConfiguration(name="api", virtual_hosts=[route_components_pb2.VirtualHost(
        name="api", domains=["*"], routes=[route_components_pb2.Route(
            match={"prefix": "/"}, route=route_components_pb2.RouteAction(weighted_clusters=weighted))])])
    proxy = listener_components_pb2.Filter(name="envoy.filters.network.tcp_proxy")
    proxy.typed_config.Pack(tcp_proxy_pb2.TcpProxy(stat_prefix="db", cluster="outbound|db"))
    listener = listener_pb2.Listener(name="outbound", address=address_pb2.Address(
        socket_address={"address": "0.0.0.0", "port_value": 15001}),
        filter_chains=[listener_components_pb2.FilterChain(filters=[proxy])])
    cluster = cluster_pb2.Cluster(name="outbound|8080|v1|api")
    problems = missing_clusters(Snapshot([listener, routes, cluster]))
    assert [p.split(",")[0] for p in problems] == [
        "listener 'outbound' sends to cluster 'outbound|db'",
        "route configuration 'api' sends to cluster 'outbound|v2|api'"]
    assert all("which the snapshot lacks (it has: outbound|8080|v1|api)" in p for p in problems)
    assert missing_clusters(Snapshot([cluster, cluster_pb2.Cluster(name="outbound|v2|api"),
                                      cluster_pb2.Cluster(name="outbound|db"), routes, listener])) == []
