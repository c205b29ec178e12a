"""meshlab report: a class gradebook from collected `meshlab check --json` results."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.markup import escape

from meshlab import ui
from meshlab.cli.options import JSON
from meshlab.errors import InputError


@click.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", type=click.Path(path_type=Path), default=Path("gradebook"),
              show_default=True, help="Folder for gradebook.html and gradebook.csv.")
@JSON
def report_command(results: tuple[Path, ...], output: Path, as_json: bool) -> None:
    """A class gradebook from RESULTS: `meshlab check --json` files, or folders of them.

    \b
    One cell per learner and lab: the latest run's status, the checks failing in it,
    the number of attempts and when the last one finished. Writes OUTPUT/gradebook.html
    (open it in a browser) and OUTPUT/gradebook.csv (one row per learner and lab, for a
    spreadsheet or an LMS); --json prints the gradebook instead of a summary. Files that
    are not results are named on stderr and skipped.

    Exit 0 with a gradebook, 2 when no result could be read at all.
    """
    from meshlab.report import gradebook, to_csv, to_html

    book = gradebook(list(results))
    for skipped in book.skipped:
        ui.errors.print(f"[yellow]skipped[/] {escape(skipped.source)}: {escape(skipped.reason)}")
    if not book.cells:
        raise InputError("no `meshlab check --json` result found in " + ", ".join(map(str, results)),
                         fix="collect the output of `meshlab check N --json > N.json` from each learner")
    try:
        output.mkdir(parents=True, exist_ok=True)
        (output / "gradebook.html").write_text(to_html(book), encoding="utf-8")
        (output / "gradebook.csv").write_text(to_csv(book), encoding="utf-8")
    except OSError as error:
        raise InputError(f"cannot write the gradebook to {output}: {error.strerror}",
                         fix="give a folder you can write to with --output") from None
    if as_json:
        click.echo(json.dumps(book.to_json(), indent=2))
        return
    for learner in book.learners:
        marks = []
        for number, slug, _ in book.labs:
            cell = book.cell(learner, slug)
            marks.append(f"{number:02d} " + ("·" if cell is None else {"pass": "[green]✔[/]", "fail": "[red]✘[/]",
                                                                        "error": "[yellow]⚠[/]"}[cell.status]))
        ui.console.print(f"{escape(learner):<24} " + "  ".join(marks))
    ui.console.print(f"{len(book.learners)} learners, {book.runs} runs: {ui.relative(output / 'gradebook.html')}, "
                     f"{ui.relative(output / 'gradebook.csv')}")
