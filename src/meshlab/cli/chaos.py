"""`meshlab chaos`: fault experiments on the Mini-Mesh, through its control plane.

    meshlab chaos inject api --abort 10%                  # 10 % of calls to api answered 503
    meshlab chaos inject api --abort 50% --status 500 --for 60s
    meshlab chaos inject api --delay 2s --delay-percent 25 --route /orders
    meshlab chaos list [--json]
    meshlab chaos clear [api]

They talk to the control plane of the running mesh (`meshlab mesh up`) on its admin
port, from inside its pod; --admin URL names another control plane, reached from here.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from rich.markup import escape
from rich.table import Table

from meshlab.ui import console

DEFAULT_MANIFEST = Path("labs/11-mini-mesh/mesh.yaml")

_manifest_option = click.option("--manifest", "manifest_path", type=click.Path(dir_okay=False, path_type=Path),
                                help="The mesh manifest [default: the running mesh's].")
_admin_option = click.option("--admin", "admin_url", metavar="URL",
                             help="The admin URL of a control plane reached from here [default: the running "
                                  "mesh's, from inside its pod].")


@contextmanager
def _connected(manifest_path: Path | None, admin_url: str | None) -> Iterator[tuple]:
    """(the mesh, its control plane's admin API); exit 2 when no mesh runs."""
    import httpx

    from meshlab.chaos import ControlPlane
    from meshlab.mesh import manifest

    if admin_url is not None:
        mesh = manifest.load(manifest_path or _course_manifest())
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            yield mesh, ControlPlane(client, admin_url)
        return
    from meshlab.cli.options import open_course
    from meshlab.errors import EnvironmentProblem
    from meshlab.mesh import inject
    from meshlab.runtime import LocalRuntime
    from meshlab.session import run_dir_for

    course = open_course()
    lab = next((lab for lab in course.labs if lab.mesh is not None), None)
    if lab is None:
        raise EnvironmentProblem("no lab of this course declares a mesh", fix="give a control plane with --admin URL")
    mesh = manifest.load(manifest_path or lab.mesh)
    runtime = LocalRuntime.attach(lab, run_dir_for(course, lab, lab.workspace))
    if runtime is None or runtime.pods is None:
        raise EnvironmentProblem(f"no control plane is running: the mesh of lab {lab.number:02d} is not up",
                                 fix="start it with `meshlab mesh up`, or give a control plane with --admin URL")
    with runtime.pods.client(inject.CONTROL_POD, timeout=5.0) as client:
        yield mesh, ControlPlane(client, f"http://127.0.0.1:{mesh.admin_port}",
                                 where=f"port {mesh.admin_port} of the mesh's pod {inject.CONTROL_POD!r}")


def _course_manifest() -> Path:
    from meshlab.course import find_root

    return find_root() / DEFAULT_MANIFEST


@click.group("chaos")
def chaos_group() -> None:
    """Inject, list and clear faults (aborts, delays) on calls to a mesh service."""


@chaos_group.command("inject")
@click.argument("service")
@click.option("--abort", metavar="PERCENT", help="Answer this share of requests with --status (10%).")
@click.option("--status", default=503, show_default=True, type=int, help="The status of aborted requests.")
@click.option("--delay", metavar="DURATION", help="Hold requests this long before they leave (2s, 500ms).")
@click.option("--delay-percent", metavar="PERCENT", help="The share of requests delayed [default: 100%].")
@click.option("--for", "duration", metavar="DURATION", help="End the experiment by itself after this long (60s).")
@click.option("--route", metavar="PREFIX", help="Only requests whose path starts with PREFIX [default: all].")
@_manifest_option
@_admin_option
@click.option("--json", "as_json", is_flag=True, help="Print the experiment as JSON, with its id.")
def inject_command(service: str, abort: str | None, status: int, delay: str | None, delay_percent: str | None,
                   duration: str | None, route: str | None, manifest_path: Path | None, admin_url: str | None,
                   as_json: bool) -> None:
    """Start a fault experiment on every call to SERVICE.

    The control plane configures Envoy's fault filter on the sidecars that call SERVICE and
    pushes it over xDS: no restart, no file edited. Exit 2 when the experiment is not valid
    (unknown service, a share above 100 %, a negative delay) or no control plane answers.
    """
    from dataclasses import asdict, replace

    from meshlab.chaos import parse_fault

    with _connected(manifest_path, admin_url) as (mesh, plane):
        fault = parse_fault(mesh, service, abort=abort, status=status, delay=delay, delay_percent=delay_percent,
                            duration=duration, route=route)
        fault = replace(fault, id=plane.inject(fault))
    if as_json:
        click.echo(json.dumps(asdict(fault)))
    else:
        console.print(f"injected [bold]{escape(fault.id)}[/]: {escape(_describe(fault))}")


@chaos_group.command("list")
@_manifest_option
@_admin_option
@click.option("--json", "as_json", is_flag=True, help="Print the control plane's list as JSON.")
def list_command(manifest_path: Path | None, admin_url: str | None, as_json: bool) -> None:
    """The experiments running now, with the time each has left."""
    from dataclasses import asdict

    from meshlab.chaos import expires_in

    with _connected(manifest_path, admin_url) as (_, plane):
        faults = plane.faults()
    if as_json:
        click.echo(json.dumps([asdict(f) for f in faults], indent=2))
        return
    if not faults:
        console.print("No fault experiment runs.")
        return
    table = Table(box=None, pad_edge=False)
    for column in ("id", "service", "fault", "ends"):
        table.add_column(column)
    for fault in faults:
        left = expires_in(fault)
        ends = "when cleared" if left is None else f"in {max(left, 0):.0f}s"
        table.add_row(escape(fault.id or ""), escape(fault.service), escape(_describe(fault)), ends)
    console.print(table)


@chaos_group.command("clear")
@click.argument("service", required=False)
@_manifest_option
@_admin_option
def clear_command(service: str | None, manifest_path: Path | None, admin_url: str | None) -> None:
    """End every experiment, or those on SERVICE; the sidecars get back their configuration."""
    with _connected(manifest_path, admin_url) as (mesh, plane):
        if service is not None and service not in mesh.services:
            from meshlab.chaos import BadExperiment

            raise BadExperiment(f"the mesh has no service {service!r}",
                                fix=f"its services: {', '.join(mesh.services)}")
        cleared = plane.clear(service)
    console.print(f"cleared {cleared} experiment{'s' if cleared != 1 else ''}"
                  + (f" on {service}" if service else ""))


def _describe(fault) -> str:
    parts = []
    if fault.abort_percent is not None:
        parts.append(f"abort {fault.abort_percent:g}% with {fault.abort_status}")
    if fault.delay_ms is not None:
        parts.append(f"delay {fault.delay_ms} ms on {fault.delay_percent:g}%")
    text = " and ".join(parts) + f" of calls to {fault.service}"
    return text + (f" under {fault.route}" if fault.route else "")


