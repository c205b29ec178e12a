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
