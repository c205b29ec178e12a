"""`meshlab xds`: look into a control plane built on meshlab.xds (lab 06 and later).

    meshlab xds status                 # the control plane of the course's lab that has one
    meshlab xds status --lab 6         # the one of that lab
    meshlab xds status --admin URL     # any other one

A lab's control plane is the service that declares both an `xds` and an `admin` port in
its manifest; its admin view answers on that admin port.
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


@click.group("xds")
def xds_group() -> None:
    """Inspect an xDS control plane built on meshlab.xds."""


@xds_group.command("status")
@click.option("--admin", "url", metavar="URL", help="The control plane's admin view [default: the lab's].")
@click.option("--lab", "lab_ref", metavar="LAB", help="The lab whose control plane to ask [default: the running one].")
@click.option("--json", "as_json", is_flag=True, help="Print the admin view's JSON as it is.")
def status_command(url: str | None, lab_ref: str | None, as_json: bool) -> None:
    """Connected proxies, the version each acknowledged per resource type, the last NACK.

    Exit 0 when every connected proxy runs its node's snapshot, 1 when one does not
    (still applying it, or it rejected it), 2 when no control plane answers.
    """
    from meshlab.cli.options import lab_service_url, open_course

    if url is None:
        url = lab_service_url(open_course(), lab_ref, roles={"xds", "admin"}, port="admin", what="control plane")
    try:
        document = httpx.get(url.rstrip("/") + "/status", timeout=5.0, trust_env=False).json()
    except (httpx.HTTPError, ValueError) as error:
        raise EnvironmentProblem(f"no control plane admin view answers at {url}",
                                 details=f"  {type(error).__name__}: {error}",
                                 fix="start the lab (`meshlab start LAB`), or give your control plane's "
                                     "admin URL with --admin") from None
    if as_json:
        click.echo(json.dumps(document, indent=2))
    else:
        render(document)
    streams = [s for node in document.get("nodes", {}).values() for s in node.get("streams", [])]
    sys.exit(0 if all(s.get("in_sync") for s in streams) else 1)


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
