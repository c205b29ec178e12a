"""Sidecar injection: a mesh manifest turned into the pods and services the local
runtime already knows how to run, the way a mesh's injector rewrites a pod spec.

For every workload (one version of one service) the lab gets:

- a pod `<service>-<version>` (a network namespace on the lab's bridge) whose iptables
  rules are the capture rules of lab 07 (`capture.rules` next to this module);
- the app, with Kubernetes' service variables in its environment
  (`API_SERVICE_HOST`, `API_SERVICE_PORT`) and `$(VAR)` in its arguments expanded
  from them, as a kubelet does;
- an Envoy, as uid 1337, started from one bootstrap for all (`sidecar.yaml`: the
  control plane's address, nothing else) with `--service-node <workload>
  --service-cluster <service>`: everything it runs comes over xDS.

The control plane runs in the pod `mesh` (10.77.11.2), which has no capture rules.
A service's address is a virtual one (like a ClusterIP): no interface has it, so only
a sidecar's outbound listener, matching the original destination, knows where it goes.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from meshlab.mesh.manifest import Mesh

HERE = Path(__file__).resolve().parent
BOOTSTRAP = HERE / "sidecar.yaml"
CAPTURE_RULES = HERE / "capture.rules"

SUBNET = ipaddress.IPv4Network("10.77.11.0/24")
CONTROL_POD = "mesh"
CONTROL_ADDRESS = "10.77.11.2"          # sidecar.yaml names it
_FIRST_WORKLOAD = 10                    # workloads: 10.77.11.10, .11, ...
_FIRST_SERVICE = 200                    # services' virtual addresses: 10.77.11.200, .201, ...

ENVOY_UID = 1337
OUTBOUND_PORT = 15001
INBOUND_PORT = 15006
ADMIN_PORT = 15000


@dataclass(frozen=True)
class Addresses:
    """Where everything of a mesh lives on the lab's network."""

    workloads: dict[str, str]          # workload name -> pod address
    services: dict[str, str]           # service name -> virtual address

    def endpoints(self, mesh: Mesh, service: str, version: str) -> list[tuple[str, int]]:
        """(address, port) of each instance of SERVICE's VERSION (one pod each here)."""
        return [(self.workloads[f"{service}-{version}"], mesh.service(service).port)]


def addresses(mesh: Mesh) -> Addresses:
    """The addresses injection gives MESH's workloads and services (the same every run,
    so a control plane can compute them: it is the mesh's service registry)."""
    base = int(SUBNET.network_address)
    workloads = {w.name: str(ipaddress.IPv4Address(base + _FIRST_WORKLOAD + i))
                 for i, w in enumerate(mesh.workloads)}
    services = {name: str(ipaddress.IPv4Address(base + _FIRST_SERVICE + i))
                for i, name in enumerate(mesh.services)}
    return Addresses(workloads, services)


def service_variables(mesh: Mesh) -> dict[str, str]:
    """Kubernetes' environment variables for every service of MESH."""
    where = addresses(mesh)
    variables = {}
    for name, service in mesh.services.items():
        prefix = name.upper().replace("-", "_")
        variables[f"{prefix}_SERVICE_HOST"] = where.services[name]
        variables[f"{prefix}_SERVICE_PORT"] = str(service.port)
    return variables


def expand_variables(text: str, variables: dict[str, str]) -> str:
    """`$(NAME)` replaced from VARIABLES (unknown names are left as they are, as Kubernetes does)."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: variables.get(m.group(1), m.group(0)), text)


@dataclass(frozen=True)
class Injected:
    """What a mesh adds to a lab: pods as (name, address with prefix, rules file or
    None), and services as keyword arguments of meshlab.course.ServiceSpec."""

    pods: list[tuple[str, str, str | None]]
    services: list[dict]


def inject(mesh: Mesh, *, control_plane: str) -> Injected:
    """MESH's pods and services; every sidecar starts after CONTROL_PLANE (a service
    of the lab, which runs in the pod `mesh`)."""
    where = addresses(mesh)
    variables = service_variables(mesh)
    pods: list[tuple[str, str, str | None]] = [(CONTROL_POD, f"{CONTROL_ADDRESS}/{SUBNET.prefixlen}", None)]
    services: list[dict] = []
    for workload in mesh.workloads:
        name = workload.name
        service = mesh.service(workload.service)
        version = service.versions[workload.version]
        pods.append((name, f"{where.workloads[name]}/{SUBNET.prefixlen}", str(CAPTURE_RULES)))
        argv = [expand_variables(arg, variables) for arg in version.argv()]
        app = {"name": name, "pod": name, "ports": {"app": service.port},
               "env": {**variables, "MESH_WORKLOAD": name, "MESH_SERVICE": workload.service}}
        if version.python:
            app.update(kind="python", target=version.python, args=tuple(argv[3:]))
        else:
            app.update(kind="command", target=argv, args=())
        services.append(app)
        services.append({
            "name": f"{name}-envoy", "kind": "envoy", "target": str(BOOTSTRAP), "pod": name, "user": ENVOY_UID,
            "args": ("--service-node", name, "--service-cluster", workload.service),
            "ports": {"outbound": OUTBOUND_PORT, "inbound": INBOUND_PORT, "admin": ADMIN_PORT},
            "after": (control_plane, name),
            # Its listeners wait for the control plane's answer (and their certificates):
            # an unfinished control plane must not stop the mesh from starting.
            "ready": "admin", "inputs": (str(BOOTSTRAP),),
        })
    return Injected(pods, services)
