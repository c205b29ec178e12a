"""`meshlab mesh up | down | status`: the mesh of a lab whose lab.yaml declares one (lab 11).

`up` and `down` are `meshlab start` and `meshlab stop` of that lab (one path: the
manifest's workloads are injected as pods when the lab loads); `status` asks the
control plane's admin API, from inside the mesh's pod, what every sidecar runs.
"""

from __future__ import annotations

import json
import sys

import click

from meshlab import ui
from meshlab.cli.options import open_course
from meshlab.errors import EnvironmentProblem, MeshlabError


def _mesh_lab(ref: str | None):
    course = open_course()
    if ref is not None:
        spec = course.find(ref)
        if spec.mesh is None:
            raise MeshlabError(f"lab {spec.number:02d} has no mesh", fix="lab.yaml declares one with `mesh:` (lab 11)")
        return course, spec
    meshes = [lab for lab in course.labs if lab.mesh is not None]
    if not meshes:
        raise MeshlabError("no lab of this course declares a mesh")
    return course, meshes[0]


@click.group("mesh")
def mesh_group() -> None:
    """Run a lab's service mesh: injected sidecars, its control plane."""


@mesh_group.command("up")
@click.argument("lab", required=False)
@click.pass_context
def up_command(ctx: click.Context, lab: str | None) -> None:
    """Start the mesh of LAB (default: the course's lab with a mesh), like `meshlab start`."""
    from meshlab.cli.labs import start_command

    _, spec = _mesh_lab(lab)
    ctx.invoke(start_command, lab=str(spec.number), fresh=False, runtime="local")


@mesh_group.command("down")
@click.argument("lab", required=False)
@click.pass_context
def down_command(ctx: click.Context, lab: str | None) -> None:
    """Stop the mesh: every process, pod, rule and the CA's key go."""
    from meshlab.cli.labs import stop_command

    _, spec = _mesh_lab(lab)
    ctx.invoke(stop_command, lab=str(spec.number), service=None)


@mesh_group.command("status")
@click.argument("lab", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the control plane's /status as it is.")
def status_command(lab: str | None, as_json: bool) -> None:
    """Per workload: its pod, how its traffic is captured, whether its sidecar runs the
    latest configuration, its certificate.

    Exit 0 when every sidecar acknowledged its node's snapshot, 1 when one did not,
    2 when the mesh is not running."""
    import httpx

    from meshlab.mesh import inject, manifest
    from meshlab.runtime import LocalRuntime
    from meshlab.session import run_dir_for

    course, spec = _mesh_lab(lab)
    runtime = LocalRuntime.attach(spec, run_dir_for(course, spec, spec.workspace))
    if runtime is None or runtime.pods is None:
        raise EnvironmentProblem(f"the mesh of lab {spec.number:02d} is not running", fix="meshlab mesh up")
    mesh = manifest.load(spec.mesh)
    try:
        with runtime.pods.client(inject.CONTROL_POD, timeout=5.0) as http:
            document = http.get(f"http://127.0.0.1:{mesh.admin_port}/status").json()
    except (httpx.HTTPError, ValueError) as error:
        raise EnvironmentProblem(f"the control plane does not answer on its admin port {mesh.admin_port}: {error}",
                                 fix=f"see {ui.relative(runtime.run_dir)}/control-plane.log") from None
    nodes = document.get("nodes", {})
    in_sync = bool(nodes) and all(n.get("acked") and n.get("acked") == n.get("target") and not n.get("build_error")
                                  for n in nodes.values())
    if as_json:
        print(json.dumps(document, indent=2))
        sys.exit(0 if in_sync else 1)
    where = inject.addresses(mesh)
    from rich.table import Table

    table = Table(title=f"Mesh of lab {spec.number:02d} · version {document.get('version')}")
    for column in ("workload", "pod", "sidecar", "identity", "certificate"):
        table.add_column(column, overflow="fold")      # a rejection's field path is one long word
    broken = False
    for workload in mesh.workloads:
        node = nodes.get(workload.name, {})
        if node.get("build_error"):
            # the control plane could not build this node: it runs its previous snapshot, if any
            state = f"[red]not built[/] {node['build_error'][:120]}"
            broken = True
        elif not node.get("connected"):
            state = "[red]not connected[/]"
        elif node.get("nack"):
            state = f"[red]rejected[/] {node['nack'][:160]}"
        elif node.get("acked") and node.get("acked") == node.get("target"):
            state = f"[green]in sync[/] {node['acked'][:8]}"
        else:
            state = f"[yellow]applying[/] {(node.get('target') or '-')[:8]}"
        certificate = node.get("certificate") or {}
        identity = certificate.get("spiffe_id", "-").replace(f"spiffe://{mesh.trust_domain}", "")
        expiry = f"{certificate.get('serial', '-')[:8]} until {certificate.get('not_after', '-')[11:19]}"
        table.add_row(workload.name, f"{runtime.pods.record.namespaces.get(workload.name, '?')} "
                      f"{where.workloads[workload.name]}", state, identity, expiry)
    ui.console.print(table)
    if broken or any(n.get("nack") for n in nodes.values()):
        ui.console.print(f"[red]A sidecar's configuration was not built or was rejected[/]: see "
                         f"{ui.relative(runtime.run_dir)}/control-plane.log")
    ui.console.print("Capture: iptables in every workload's pod (outbound to 15001, inbound to 15006; "
                     "Envoy's uid 1337 and loopback exempt).")
    ui.console.print("Services (virtual addresses): " + ", ".join(
        f"{name} {where.services[name]}:{service.port}" for name, service in mesh.services.items()))
    sys.exit(0 if in_sync else 1)


def _add_subcommands() -> None:
    # `mesh render` and `mesh dashboard` live in modules of their own (one idea each).
    from meshlab.cli.dashboard import dashboard_command
    from meshlab.cli.k8s import render_command

    mesh_group.add_command(render_command)
    mesh_group.add_command(dashboard_command)


_add_subcommands()
