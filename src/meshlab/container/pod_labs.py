"""Labs with pods of their own, on Docker: in the toolbox container, not as a sandbox.

The Docker runtime and the Compose sandboxes put a whole lab into ONE network namespace
(the `pod` container). A lab that declares pods (`pods:`, or a mesh that meshlab injects
into pods) needs several namespaces, each with its address, its iptables rules and its
cgroup, and its services reuse ports across pods (several apps on 8080): flattened into
one namespace they collide, and the capture rules have no place to live. Such a lab runs
on the local runtime *inside* the toolbox container, which then needs the capabilities to
make namespaces, load iptables rules and attach BPF programs: compose/compose.yaml's
`meshlab-kernel` service grants them. The docker runtime refuses the lab with that advice,
and `meshlab compose` writes a README in place of its sandbox.
"""

from __future__ import annotations

from meshlab.course import Lab
from meshlab.errors import EnvironmentProblem

# compose/compose.yaml's toolbox service with the capabilities these labs need.
KERNEL_SERVICE = "meshlab-kernel"


def has_pods(lab: Lab) -> bool:
    return bool(lab.pods)


def toolbox_command(lab: Lab, verb: str = "check") -> str:
    return f"docker compose -f compose/compose.yaml run --rm {KERNEL_SERVICE} {verb} {lab.number}"


def refuse_on_docker(lab: Lab) -> None:
    """Raise (exit 2) when LAB has pods: the docker runtime cannot give it them."""
    if not has_pods(lab):
        return
    raise EnvironmentProblem(
        f"lab {lab.number:02d} ({lab.slug}) has pods of its own ({', '.join(p.name for p in lab.pods)}), "
        "which the docker runtime cannot give it: it runs a lab's services in one network namespace, "
        "where the pods' services collide on their ports and the capture has no place",
        fix=f"with Docker, take it in the toolbox container, which has the capabilities it needs: "
            f"`{toolbox_command(lab)}` (on Linux, drop --runtime docker / MESHLAB_RUNTIME and run it as root)")


def readme(lab: Lab) -> str:
    """compose/NN-slug/README.md: why the lab has no Compose sandbox, and how to take it."""
    pods = "".join(f"- `{p.name}`: {p.address}\n" for p in lab.pods)
    origin = "(from its mesh: meshlab injects each workload as a pod)" if lab.mesh is not None else "(its `pods:`)"
    return f"""\
# Lab {lab.number:02d} · {lab.title}: no Compose sandbox

<!-- Written by `meshlab compose` from labs/{lab.slug}/lab.yaml: do not edit. -->

The other labs' sandboxes run every service in one network namespace, like a single
Kubernetes pod. This lab has several pods {origin}:

{pods}
Each is a network namespace of its own with its address, and the lab's services reuse
ports across them, so in one namespace they would collide, and what captures a pod's
traffic (its iptables rules; in lab 07 also BPF programs on its cgroup) would have no
place to act. For the same reason `meshlab check {lab.number} --runtime docker` refuses
it (exit 2).

With Docker, take the lab in the toolbox container instead: meshlab makes the pods there
as it does on a Linux host, which needs the capabilities NET_ADMIN, SYS_ADMIN and
DAC_READ_SEARCH and a writable cgroup2 hierarchy; compose/compose.yaml's
`{KERNEL_SERVICE}` service has them.
From the checkout's root:

    {toolbox_command(lab)}
    {toolbox_command(lab, "hint")}
    docker compose -f compose/compose.yaml run --rm {KERNEL_SERVICE} bash   # then: meshlab start {lab.number}
"""
