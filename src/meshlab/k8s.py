"""The Mini-Mesh as Kubernetes manifests (`meshlab mesh render --k8s DIR`).

What `meshlab mesh up` does with processes and network namespaces on one machine, written
the way a cluster would run it, and the way Istio's sidecar injector rewrites a pod:

    per mesh service      a ServiceAccount (its SPIFFE identity: .../sa/<service>) and a Service
    per service version   a Deployment `<service>-<version>`: the app container, the sidecar
                          `mesh-proxy` (Envoy as uid 1337), the init container `mesh-init`
                          (the capture rules of lab 07), and the sidecar's bootstrap ConfigMap
    the control plane     a ServiceAccount, the manifest as a ConfigMap, a Deployment, a Service

The bootstrap holds only what `mesh up` gives a sidecar: its node identity and the
control plane's address (everything else arrives over ADS), plus two static listeners a
cluster needs and Istio has too: 15021 (readiness) and 15090 (Prometheus), both proxied to
the admin interface, which stays on 127.0.0.1. docs/mini-mesh-on-kubernetes.md says what
else would change.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from meshlab import __version__
from meshlab.mesh.manifest import Mesh

# Istio's numbers, so that what a learner reads about Istio holds here.
PROXY_UID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000
READINESS_PORT = 15021
PROMETHEUS_PORT = 15090
CONTROL_PLANE = "mini-mesh-control-plane"
DEFAULT_IMAGE = f"meshlab:{__version__}"
PART_OF = {"app.kubernetes.io/part-of": "mini-mesh"}


@dataclass(frozen=True)
class Rendered:
    """One file of the output: its name and its documents, in apply order."""

    name: str
    documents: list[dict]

    def text(self) -> str:
        return yaml.dump_all(self.documents, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line text (a bootstrap, a script, the manifest) as a readable `|` block."""


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    if "\n" in value:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
    return dumper.represent_scalar("tag:yaml.org,2002:str", value)


_Dumper.add_representer(str, _text)


def render(manifest: Mesh, *, manifest_text: str, control_plane_sources: dict[str, str],
           image: str = DEFAULT_IMAGE) -> list[Rendered]:
    """Every file of the rendering, the kustomization last (it lists the others).
    CONTROL_PLANE_SOURCES: the control plane's Python files by name (control_plane.py
    and what it imports from its folder), shipped in its ConfigMap."""
    files: list[Rendered] = []
    if manifest.namespace != "default":
        files.append(Rendered("namespace.yaml", [_namespace(manifest.namespace)]))
    files.append(Rendered("control-plane.yaml",
                          _control_plane(manifest, manifest_text, control_plane_sources, image)))
    for name, service in manifest.services.items():
        documents = [_service_account(name, manifest.namespace), _service(manifest, name)]
        for version in service.versions:
            documents.append(_bootstrap_config_map(manifest, name, version))
            documents.append(_deployment(manifest, name, version, image))
        files.append(Rendered(f"{name}.yaml", documents))
    files.append(Rendered("kustomization.yaml", [{
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [f.name for f in files],
    }]))
    return files


def write(files: list[Rendered], folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for rendered in files:
        path = folder / rendered.name
        path.write_text(f"# Rendered by `meshlab mesh render --k8s` from the mesh manifest; "
                        f"edit mesh.yaml, not this file.\n{rendered.text()}", encoding="utf-8")
        written.append(path)
    return written


def workload(service: str, version: str) -> str:
    return f"{service}-{version}"


def control_plane_host(manifest: Mesh) -> str:
    return f"{CONTROL_PLANE}.{manifest.namespace}.svc.cluster.local"


# -- documents --------------------------------------------------------------------------

def _meta(name: str, namespace: str, labels: dict | None = None, annotations: dict | None = None) -> dict:
    meta: dict = {"name": name, "namespace": namespace, "labels": {**(labels or {}), **PART_OF}}
    if annotations:
        meta["annotations"] = annotations
    return meta


def _namespace(name: str) -> dict:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": dict(PART_OF)}}


def _service_account(name: str, namespace: str) -> dict:
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(name, namespace, {"app": name})}


def _service(manifest: Mesh, name: str) -> dict:
    service = manifest.services[name]
    # Istio selects the protocol from appProtocol (or a port name prefix `http-`/`tcp-`).
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, manifest.namespace, {"app": name}),
            "spec": {"selector": {"app": name},
                     "ports": [{"name": f"{service.protocol}-{name}", "port": service.port,
                                "targetPort": service.port, "protocol": "TCP",
                                "appProtocol": service.protocol}]}}


def _deployment(manifest: Mesh, name: str, version: str, image: str) -> dict:
    service = manifest.services[name]
    run = service.versions[version]
    node = workload(name, version)
    labels = {"app": name, "version": version}
    app = {"name": name, "image": image, "command": run.argv(),
           "ports": [{"name": service.protocol, "containerPort": service.port}]}
    pod_spec = {
        "serviceAccountName": name,
        # The app's arguments name other services as $(API_SERVICE_HOST): the kubelet expands
        # them from these variables, set for every Service that exists when the pod starts.
        "enableServiceLinks": True,
        "initContainers": [_init_container(service.port, image)],
        "containers": [app, _proxy_container(node, image)],
        "volumes": [{"name": "mesh-bootstrap", "configMap": {"name": f"{node}-bootstrap"}}],
    }
    annotations = {"prometheus.io/scrape": "true", "prometheus.io/port": str(PROMETHEUS_PORT),
                   "prometheus.io/path": "/stats/prometheus", "mesh.meshlab.dev/injected": "true"}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(node, manifest.namespace, labels),
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": {**labels, **PART_OF}, "annotations": annotations},
                                  "spec": pod_spec}}}


def capture_script(app_port: int) -> str:
    """The pod's capture rules, as lab 07 taught them (Istio's istio-iptables does the same)."""
    return "\n".join([
        "set -e",
        "iptables -t nat -N MESH_INBOUND",
        "iptables -t nat -A PREROUTING -p tcp -j MESH_INBOUND",
        f"iptables -t nat -A MESH_INBOUND -p tcp --syn --dport {app_port} -j REDIRECT --to-ports {INBOUND_PORT}",
        "iptables -t nat -N MESH_OUTPUT",
        "iptables -t nat -A OUTPUT -p tcp -j MESH_OUTPUT",
        f"iptables -t nat -A MESH_OUTPUT -m owner --uid-owner {PROXY_UID} -j RETURN",
        "iptables -t nat -A MESH_OUTPUT -d 127.0.0.0/8 -j RETURN",
        f"iptables -t nat -A MESH_OUTPUT -p tcp --syn -j REDIRECT --to-ports {OUTBOUND_PORT}",
        "",
    ])


def _init_container(app_port: int, image: str) -> dict:
    return {"name": "mesh-init", "image": image, "command": ["sh", "-c", capture_script(app_port)],
            "securityContext": {"runAsUser": 0, "runAsNonRoot": False,
                                "capabilities": {"add": ["NET_ADMIN", "NET_RAW"], "drop": ["ALL"]}}}


def _proxy_container(node: str, image: str) -> dict:
    return {"name": "mesh-proxy", "image": image,
            "command": ["envoy", "-c", "/etc/mesh/bootstrap.yaml", "--concurrency", "2"],
            "ports": [{"name": "http-envoy-prom", "containerPort": PROMETHEUS_PORT},
                      {"name": "health", "containerPort": READINESS_PORT}],
            "readinessProbe": {"httpGet": {"path": "/healthz/ready", "port": READINESS_PORT},
                               "periodSeconds": 2},
            "securityContext": {"runAsUser": PROXY_UID, "runAsGroup": PROXY_UID, "runAsNonRoot": True,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [{"name": "mesh-bootstrap", "mountPath": "/etc/mesh", "readOnly": True}]}


def _bootstrap_config_map(manifest: Mesh, name: str, version: str) -> dict:
    node = workload(name, version)
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(f"{node}-bootstrap", manifest.namespace, {"app": name, "version": version}),
            "data": {"bootstrap.yaml": yaml.safe_dump(bootstrap(manifest, name, version), sort_keys=False)}}


def bootstrap(manifest: Mesh, name: str, version: str) -> dict:
    """A sidecar's whole static configuration: who it is and where its control plane is."""
    return {
        "node": {"id": workload(name, version), "cluster": name},
        "admin": {"address": _address("127.0.0.1", ADMIN_PORT)},
        "dynamic_resources": {
            "ads_config": {"api_type": "GRPC", "transport_api_version": "V3",
                           "grpc_services": [{"envoy_grpc": {"cluster_name": "xds-grpc"}}]},
            "lds_config": {"ads": {}, "resource_api_version": "V3"},
            "cds_config": {"ads": {}, "resource_api_version": "V3"},
        },
        "static_resources": {
            "listeners": [_admin_proxy("readiness", READINESS_PORT, "/healthz/ready", "/ready"),
                          _admin_proxy("prometheus", PROMETHEUS_PORT, "/stats/prometheus", "/stats/prometheus")],
            "clusters": [
                {"name": "xds-grpc", "type": "STRICT_DNS", "connect_timeout": "1s",
                 "typed_extension_protocol_options": {
                     "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                         "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                         "explicit_http_config": {"http2_protocol_options": {}}}},
                 "load_assignment": _endpoints("xds-grpc", control_plane_host(manifest), manifest.xds_port)},
                {"name": "admin", "type": "STATIC", "connect_timeout": "1s",
                 "load_assignment": _endpoints("admin", "127.0.0.1", ADMIN_PORT)},
            ],
        },
    }


def _address(host: str, port: int) -> dict:
    return {"socket_address": {"address": host, "port_value": port}}


def _endpoints(cluster: str, host: str, port: int) -> dict:
    return {"cluster_name": cluster,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": _address(host, port)}}]}]}


def _admin_proxy(name: str, port: int, path: str, admin_path: str) -> dict:
    """A listener on the pod's address that exposes one admin path, as Istio's 15021 and 15090 do."""
    route = {"match": {"path": path}, "route": {"cluster": "admin"}}
    if admin_path != path:
        route["route"]["prefix_rewrite"] = admin_path
    return {
        "name": name, "address": _address("0.0.0.0", port),
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
                         ".HttpConnectionManager",
                "stat_prefix": name,
                "route_config": {"virtual_hosts": [{"name": name, "domains": ["*"], "routes": [route]}]},
                "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
            }}]}],
    }


def _control_plane(manifest: Mesh, manifest_text: str, sources: dict[str, str], image: str) -> list[dict]:
    namespace = manifest.namespace
    labels = {"app": CONTROL_PLANE}
    data = {"mesh.yaml": manifest_text, **sources}
    xds, admin = manifest.xds_port, manifest.admin_port
    deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": _meta(CONTROL_PLANE, namespace, labels),
        "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": {**labels, **PART_OF}}, "spec": {
                     "serviceAccountName": CONTROL_PLANE,
                     "containers": [{
                         "name": "control-plane", "image": image, "workingDir": "/etc/mini-mesh",
                         "command": ["python", "control_plane.py", "--mesh", "mesh.yaml"],
                         # The CA's key (0600) lives as long as the pod: a restarted container signs
                         # with the same CA, so no sidecar distrusts another.
                         "env": [{"name": "MESHLAB_SERVICE_STATE", "value": "/var/lib/mini-mesh"}],
                         "ports": [{"name": "grpc-xds", "containerPort": xds},
                                   {"name": "http-admin", "containerPort": admin}],
                         "readinessProbe": {"tcpSocket": {"port": xds}, "periodSeconds": 2},
                         "volumeMounts": [{"name": "mini-mesh", "mountPath": "/etc/mini-mesh", "readOnly": True},
                                          {"name": "state", "mountPath": "/var/lib/mini-mesh"}],
                     }],
                     "volumes": [{"name": "mini-mesh", "configMap": {"name": CONTROL_PLANE}},
                                 {"name": "state", "emptyDir": {}}],
                 }}}}
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(CONTROL_PLANE, namespace, labels)},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(CONTROL_PLANE, namespace, labels), "data": data},
        deployment,
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta(CONTROL_PLANE, namespace, labels),
         "spec": {"selector": labels, "ports": [
             {"name": "grpc-xds", "port": xds, "targetPort": xds, "appProtocol": "grpc"},
             {"name": "http-admin", "port": admin, "targetPort": admin, "appProtocol": "http"}]}},
    ]
