"""`meshlab xds`: look into a control plane built on meshlab.xds (lab 06 and later).

    meshlab xds status                 # the control plane of the course's lab that has one
    meshlab xds status 6               # the one of that lab (or: --lab 6)
    meshlab xds status --admin URL     # any other one

A lab's control plane is the service that declares both an `xds` and an `admin` port in
its manifest; its admin view answers on that admin port, asked from inside the lab's pod
when the service runs in one (lab 11's, in the pod `mesh`). A mesh's control plane
(meshlab.mesh.control) keeps /status for its own summary (`meshlab mesh status`) and
serves the same xDS view at /xds: the view is taken from the first of VIEW_PATHS that
answers one.
"""

from __future__ import annotations

import json
import sys
import time

import click
import httpx
from rich.markup import escape
from rich.table import Table

from meshlab.errors import EnvironmentProblem
from meshlab.ui import console
from meshlab.xds.bookkeeping import summarize

VIEW_PATHS = ("/status", "/xds")


@click.group("xds")
def xds_group() -> None:
    """Inspect an xDS control plane built on meshlab.xds."""


@xds_group.command("status")
@click.argument("lab", required=False)
@click.option("--admin", "url", metavar="URL", help="The control plane's admin view [default: the lab's].")
@click.option("--lab", "lab_option", metavar="LAB", help="The same as the LAB argument.")
@click.option("--json", "as_json", is_flag=True, help="Print the admin view's JSON as it is.")
def status_command(lab: str | None, url: str | None, lab_option: str | None, as_json: bool) -> None:
    """Connected proxies, the version each acknowledged per resource type, the last NACK,
    as LAB's control plane sees them (default: the running lab that has one).

    Exit 0 when every connected proxy runs its node's snapshot, 1 when one does not
    (still applying it, or it rejected it), 2 when no control plane answers.
    """
    from meshlab.cli.options import lab_service, open_course, service_client

    if lab and lab_option and lab != lab_option:
        raise click.UsageError(f"LAB {lab} and --lab {lab_option} name different labs: give one")
    if url is not None:
        if lab or lab_option:
            raise click.UsageError("--admin names the control plane already: give it or a LAB, not both")
        base, where, fix = url.rstrip("/"), url, "give your control plane's admin URL with --admin"
        client = httpx.Client(timeout=5.0, trust_env=False)
    else:
        course = open_course()
        spec, service = lab_service(course, lab or lab_option, roles={"xds", "admin"}, what="control plane")
        port = service.ports["admin"]
        base = f"http://127.0.0.1:{port}"
        where = f"port {port} of lab {spec.number:02d}'s pod {service.pod!r}" if service.pod else base
        fix = f"start the lab (`meshlab start {spec.number}`), or give your control plane's admin URL with --admin"
        client = service_client(course, spec, service, timeout=5.0)
    with client as http:
        document = fetch_view(http, base, where, fix)
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        render(document)
    streams = [s for node in document.get("nodes", {}).values() for s in node.get("streams", [])]
    sys.exit(0 if all(s.get("in_sync") for s in streams) else 1)


def fetch_view(http: httpx.Client, base: str, where: str, fix: str) -> dict:
    """The control plane's xDS view: the first of VIEW_PATHS that answers one."""
    for path in VIEW_PATHS:
        try:
            response = http.get(base + path)
        except httpx.HTTPError as error:
            raise EnvironmentProblem(f"no control plane admin view answers at {where}",
                                     details=f"  {type(error).__name__}: {error}", fix=fix) from None
        try:
            document = response.json()
        except ValueError:
            continue
        if is_view(document):
            return document
    raise EnvironmentProblem(f"the server at {where} answers, but not with a meshlab.xds admin view "
                             f"(tried {' and '.join(VIEW_PATHS)})",
                             fix="give the admin port of a control plane built on meshlab.xds; for a mesh "
                                 "lab's own summary, `meshlab mesh status`")


def is_view(document: object) -> bool:
    """Whether DOCUMENT is meshlab.xds's admin view (xds.status.StatusBoard.to_json)."""
    if not isinstance(document, dict) or "streams_without_node" not in document:
        return False
    nodes = document.get("nodes")
    return isinstance(nodes, dict) and all(isinstance(n, dict) and isinstance(n.get("streams"), list)
                                           for n in nodes.values())


def render(document: dict) -> None:
    nodes = document.get("nodes", {})
    if not nodes:
        console.print("No snapshot and no proxy yet: the control plane has set no snapshot, and nobody connected.")
    for key, node in nodes.items():
        snapshot = node.get("snapshot")
        if snapshot:
            counts = ", ".join(f"{t} {len(names)}" for t, names in snapshot["resources"].items()) or "empty"
            console.print(f"[bold]{escape(key)}[/]  snapshot [cyan]{escape(snapshot['version'])}[/] ({counts})")
            for problem in snapshot.get("problems", []):
                console.print(f"  [red]inconsistent:[/] {escape(problem)}")
        else:
            console.print(f"[bold]{escape(key)}[/]  [yellow]no snapshot for this node[/]")
        streams = node.get("streams", [])
        if not streams:
            console.print("  no proxy connected")
        for stream in streams:
            state = "[green]in sync[/]" if stream["in_sync"] else "[yellow]applying[/]"
            console.print(f"  stream #{stream['id']} ({stream['protocol']}, {escape(stream['peer'])}): {state}, "
                          f"runs {escape(stream['synced_version'] or 'nothing yet')}")
            table = Table(box=None, padding=(0, 2), show_edge=False)
            for column in ("type", "acknowledged", "in flight", "subscribed", "ACKs", "NACKs"):
                table.add_column(column)
            for short, entry in stream["types"].items():
                subscribed = ", ".join(entry["subscribed"]) or "-"
                table.add_row(short, escape(str(entry["acked_version"] or "-")),
                              escape(entry["sent_version"]) if entry["pending_nonce"] else "-",
                              escape(subscribed if len(subscribed) < 40 else subscribed[:37] + "..."),
                              str(entry["acks"]), str(entry["nacks"]))
            console.print(table)
        nack = node.get("last_nack")
        if nack:
            when = time.strftime("%H:%M:%S", time.localtime(nack["at"]))
            kept = f", kept {escape(nack['kept_version'])}" if nack.get("kept_version") else ""
            console.print(f"  [red]last NACK[/] ({node.get('nacks', 1)} in all) at {when}: {nack['type']} version "
                          f"{escape(nack['rejected_version'])} rejected{kept}:")
            console.print(f"    {escape(nack.get('summary') or summarize(nack['message']))}")
