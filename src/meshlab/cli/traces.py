"""`meshlab traces`: the latest traces of a trace store (meshlab.apps.traces, lab 08),
each as a waterfall: one row per span, indented under its parent, with its service,
name, duration, status and a bar showing when it ran within the trace.

    meshlab traces                 # the 5 latest traces of the lab's store
    meshlab traces -n 1 --json     # the spans of the latest trace, as the store has them
    meshlab traces --store URL     # any other store

A lab's trace store is the service that declares both an `otlp` and an `http` port in
its manifest; its HTTP API answers on the `http` port.
"""

from __future__ import annotations

import json

import click
import httpx
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from meshlab.errors import EnvironmentProblem
from meshlab.ui import console

BAR_WIDTH = 40


@click.command("traces")
@click.option("-n", "--limit", default=5, show_default=True, type=click.IntRange(1, 1000),
              help="How many traces, the latest last.")
@click.option("--store", "url", metavar="URL", help="The trace store's HTTP API [default: the lab's].")
@click.option("--lab", "lab_ref", metavar="LAB", help="The lab whose trace store to ask [default: the running one].")
@click.option("--json", "as_json", is_flag=True, help="Print the spans of each trace as JSON.")
def traces_command(limit: int, url: str | None, lab_ref: str | None, as_json: bool) -> None:
    """The latest traces as waterfalls: service, span, duration, status.

    Exit 0 when the store answers (with traces or none yet), 2 when no store answers.
    """
    from meshlab.cli.options import lab_service_url, open_course

    if url is None:
        url = lab_service_url(open_course(), lab_ref, roles={"otlp", "http"}, port="http", what="trace store")
    try:
        found = httpx.get(url.rstrip("/") + "/api/traces", params={"limit": limit}, timeout=5.0,
                          trust_env=False).json()
    except (httpx.HTTPError, ValueError) as error:
        raise EnvironmentProblem(f"no trace store answers at {url}",
                                 details=f"  {type(error).__name__}: {error}",
                                 fix="start the lab (`meshlab start LAB`), or give the store's URL with --store") from None
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    if not found:
        console.print("No trace yet: send a request through a traced sidecar "
                      "(lab 8: curl -s http://127.0.0.1:10001/).")
    for trace in found:
        render(trace)


def ordered(spans: list[dict]) -> list[tuple[int, dict]]:
    """(depth, span) with every span under its parent, siblings by start time; spans
    whose parent is not in the trace (yet) are roots."""
    ids = {s["span_id"] for s in spans}
    children: dict[str, list[dict]] = {}
    roots = []
    for span in sorted(spans, key=lambda s: s["start_ns"]):
        parent = span["parent_span_id"]
        (children.setdefault(parent, []) if parent and parent in ids else roots).append(span)
    rows: list[tuple[int, dict]] = []

    def visit(span: dict, depth: int) -> None:
        rows.append((depth, span))
        for child in children.get(span["span_id"], []):
            visit(child, depth + 1)

    for root in roots:
        visit(root, 0)
    return rows


def bar(span: dict, start: int, total: int) -> Text:
    """Where SPAN ran within the trace, as a bar of BAR_WIDTH cells."""
    scale = BAR_WIDTH / total if total else 0
    offset = min(BAR_WIDTH - 1, int((span["start_ns"] - start) * scale))
    length = max(1, round((span["end_ns"] - span["start_ns"]) * scale))
    length = min(length, BAR_WIDTH - offset)
    colour = "red" if span["status"] == "error" else "cyan"
    return Text(" " * offset) + Text("█" * length, style=colour) + Text(" " * (BAR_WIDTH - offset - length))


def render(trace: dict) -> None:
    spans = trace["spans"]
    start = min(s["start_ns"] for s in spans)
    total = max(s["end_ns"] for s in spans) - start
    services = sorted({s["service"] for s in spans})
    console.print(f"[bold]trace {trace['trace_id']}[/]  {len(spans)} span{'s' * (len(spans) != 1)}, "
                  f"{total / 1e6:.1f} ms, {', '.join(escape(s) for s in services)}")
    table = Table(box=None, padding=(0, 1), show_edge=False, pad_edge=False)
    for column, justify in (("service", "left"), ("span", "left"), ("duration", "right"), ("status", "left"),
                            ("", "left")):
        table.add_column(column, justify=justify, no_wrap=True)
    for depth, span in ordered(spans):
        code = span["attributes"].get("http.status_code", "")
        status = span["status"] + (f" {code}" if code else "")
        table.add_row("  " * depth + escape(span["service"] or "?"), escape(span["name"]),
                      f"{span['duration_ms']:.1f} ms", Text(status, style="red" if span["status"] == "error" else ""),
                      bar(span, start, total))
    console.print(table)
    console.print()
