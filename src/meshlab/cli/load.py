"""`meshlab load`: send load to a URL and show what came back (fortio's numbers).

Argument handling and rendering only; the work is in `meshlab.load`.
"""

from __future__ import annotations

import json
import re
import sys

import click

from meshlab import load, ui
from meshlab.errors import InputError

_PROGRESS_AFTER_S = 2.0  # short runs finish before a bar would help


def _duration(text: str | None) -> float | None:
    """`5s`, `500ms`, `1m` or a plain number of seconds."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*([\d.]+)\s*(ms|s|m)?\s*", text)
    if not match:
        raise InputError(f"--duration {text!r} is not a duration", fix="write it like 5s, 500ms or 1m")
    value = float(match.group(1))
    return value / 1000 if match.group(2) == "ms" else value * 60 if match.group(2) == "m" else value


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    headers = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise InputError(f"-H {value!r} is not a header", fix="write it as -H 'name: value'")
        headers[name.strip()] = content.strip()
    return headers


class _LazyBar:
    """A progress bar that appears only once a run has lasted a while."""

    def __init__(self) -> None:
        self._bar: ui.Progress | None = None
        self._task = None

    def __call__(self, done: int, total: int | None, elapsed: float) -> None:
        if self._bar is None:
            if elapsed < _PROGRESS_AFTER_S or not ui.errors.is_terminal:
                return
            self._bar = ui.Progress(ui.SpinnerColumn(), ui.TextColumn("load"), ui.BarColumn(),
                                    ui.MofNCompleteColumn(), ui.TimeElapsedColumn(), console=ui.errors,
                                    transient=True)
            self._bar.start()
            self._task = self._bar.add_task("load", total=total)
        self._bar.update(self._task, completed=done, total=total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


@click.command("load")
@click.argument("url")
@click.option("-n", "--requests", type=int, help="Send exactly this many requests [default: 100 unless -t].")
@click.option("-t", "--duration", help="Send for this long instead (5s, 500ms, 1m).")
@click.option("-c", "--concurrency", type=int, default=8, show_default=True, help="Connections in parallel.")
@click.option("--qps", type=float, default=0.0, show_default=True,
              help="Requests per second in total; 0 sends as fast as the connections allow.")
@click.option("-H", "--header", "header_values", multiple=True, metavar="'NAME: VALUE'",
              help="Add a request header (repeatable).")
@click.option("-X", "--method", default="GET", show_default=True, help="HTTP method.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds before a request gives up.")
@click.option("-k", "--insecure", is_flag=True, help="Do not verify the server's TLS certificate.")
@click.option("--count-header", metavar="NAME",
              help="Count responses by the value of this header (like x-served-by: who answered).")
@click.option("--engine", type=click.Choice(load.ENGINES), default="auto", show_default=True,
              help="fortio (if installed), or the built-in engine.")
@click.option("--json", "as_json", is_flag=True, help="Print fortio's JSON result instead of text.")
def load_command(url: str, requests: int | None, duration: str | None, concurrency: int, qps: float,
                 header_values: tuple[str, ...], method: str, timeout: float, insecure: bool,
                 count_header: str | None, engine: str, as_json: bool) -> None:
    """Send load to URL, fortio-style, and show status codes and latency percentiles.

    \b
    Examples:
      meshlab load http://127.0.0.1:10000/ -n 1000 -c 10
      meshlab load http://127.0.0.1:10000/ -t 5s --qps 200 --json
      meshlab load http://127.0.0.1:10000/ -n 200 -H 'x-canary: true'
      meshlab load http://127.0.0.1:10000/ -n 1000 --count-header x-served-by

    Uses fortio when it is installed (or MESHLAB_FORTIO names it), else the built-in
    engine. Exits 0 when the run completed, 1 when no request got any HTTP response,
    2 for a broken command line.
    """
    seconds = _duration(duration)
    if requests is None and seconds is None:
        requests = 100
    bar = _LazyBar()
    try:
        result = load.run(url, engine=engine, on_progress=None if as_json else bar, requests=requests,
                          duration=seconds, concurrency=concurrency, qps=qps, method=method,
                          headers=_headers(header_values), timeout=timeout, insecure=insecure,
                          count_header=count_header)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(result.to_fortio(), indent=2))
    else:
        show(result)
    if result.total and result.count(load.NO_RESPONSE) == result.total:
        if not as_json:
            ui.errors.print("No request got an HTTP response: is anything listening there? "
                            "(a lab's Envoy runs after `meshlab start N`)")
        sys.exit(1)


def show(result: load.LoadResult) -> None:
    console = ui.console
    qps = "max" if not result.requested_qps else f"{result.requested_qps:g}"
    console.print(f"[bold]{ui.escape(result.url)}[/]  [dim]{result.engine} engine, {result.num_threads} connections, "
                  f"qps {qps}, {result.requested}[/]")
    console.print(f"{result.total} requests in {result.actual_duration:.2f} s: {result.actual_qps:.1f} req/s")
    console.print(f"Status codes: {ui.escape(result.codes_text())}")
    hist = result.durations
    if hist.count:
        marks = "  ".join(f"p{p:g} {v * 1000:.2f}" for p, v in hist.percentiles.items())
        console.print(f"Latency (ms): min {hist.min * 1000:.2f}  avg {hist.avg * 1000:.2f}  {marks}  "
                      f"max {hist.max * 1000:.2f}")
    for value, count in result.header_counts.items():
        share = 100.0 * count / result.total if result.total else 0.0
        console.print(f"  {ui.escape(value or '(no such header)'):<32} {count:>7}  {share:5.1f} %")
    for kind, count in sorted(result.error_kinds.items()):
        console.print(f"  no response ({ui.escape(kind)}): {count}")
    for code, headers in sorted(result.sample_headers.items()):
        if 200 <= code < 300:
            continue
        shown = ", ".join(f"{k}: {v}" for k, v in headers.items() if k.startswith("x-envoy") or k == "server")
        console.print(f"  a {code} response: {ui.escape(shown) or 'no x-envoy-* headers'}")
