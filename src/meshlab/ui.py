"""How meshlab shows things in a terminal: scorecards, tables, errors, progress.

Only rendering lives here; what to show comes from the modules that compute it.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from meshlab.course import Course, Lab
from meshlab.errors import MeshlabError

if TYPE_CHECKING:  # only named: importing it would load the checker's machinery into every command
    from meshlab.checking import LabResult

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)

_MARK = {"pass": "[green]✔[/]", "fail": "[red]✘[/]", "error": "[red]![/]", "skip": "[yellow]-[/]"}


def _progress_bar():
    """A transient bar: spinner, description, bar, done/total, elapsed. (rich.progress is
    imported here: only the commands that show progress pay for it.)"""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def relative(path: str | Path) -> str:
    """PATH relative to the current folder when that is shorter (for copy-pasting)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def show_error(error: MeshlabError | dict, *, title: str = "error") -> None:
    data = error.to_dict() if isinstance(error, MeshlabError) else error
    errors.print(f"[bold red]{title}:[/] {escape(data['message'])}")
    if data.get("where"):
        errors.print(f"  [dim]at[/] {escape(relative(data['where']) if ':' not in data['where'] else _rel_loc(data['where']))}")
    if data.get("details"):
        errors.print(escape(data["details"]))
    if data.get("fix"):
        errors.print(f"  [bold]fix:[/] {escape(data['fix'])}")


def _rel_loc(where: str) -> str:
    path, _, rest = where.partition(":")
    return relative(path) + (":" + rest if rest else "")


def show_result(result: LabResult, *, logs: bool = True) -> None:
    header = f"[bold]Lab {result.number:02d} · {escape(result.title)}[/]  [dim]{escape(relative(result.path))}[/]"
    if result.status == "error" and result.error:
        errors.print(header)  # the whole message on one stream, so the lines stay in order
        show_error(result.error, title="cannot grade")
        return
    console.print(header)
    causes_shown: list[tuple] = []
    for check in result.checks:
        console.print(f" {_MARK.get(check.status, '?')} {escape(check.title)}")
        for note in check.notes:
            console.print(f"     [dim]{escape(note)}[/]")
        if check.status == "skip" and check.message:
            # Why it did not run (the Docker part of a lab on the local runtime), once.
            reason = ("skip", check.message)
            console.print("     [dim]skipped: same reason[/]" if reason in causes_shown
                          else f"     [yellow]skipped:[/] {escape(check.message)}")
            causes_shown.append(reason)
        if check.status in ("fail", "error"):
            cause = (check.message, check.expected, check.received)
            if cause in causes_shown:
                console.print("     [dim]same cause as above[/]")
                continue
            causes_shown.append(cause)
            if check.message:
                console.print(f"     {escape(check.message)}")
            if check.expected is not None:
                console.print(f"     [bold]EXPECTED[/] {_continued(check.expected)}")
            if check.received is not None:
                console.print(f"     [bold]RECEIVED[/] {_continued(check.received)}")
            if check.hint:
                console.print(f"     [bold cyan]HINT[/]     {escape(check.hint)}")
    failed = [c for c in result.checks if c.status not in ("pass", "skip")]
    if failed and logs:
        tails = next((c.logs for c in failed if c.logs), {})
        for service, text in tails.items():
            lines = [line for line in text.splitlines() if line.strip()][-6:]
            if lines:
                console.print(f"   [dim]── log of {escape(service)} (last lines) ──[/]")
                for line in lines:
                    console.print(f"   [dim]{escape(line)}[/]")  # whole: an error ends the line
    total = len(result.checks)
    colour = "green" if result.status == "pass" else "red"
    skipped = sum(1 for c in result.checks if c.status == "skip")
    console.print(f"[{colour}]{result.passed}/{total} checks pass[/]"
                  + (f" ({skipped} skipped)" if skipped else "") + f" in {result.duration:.1f} s."
                  + ("" if result.status == "pass" else f"  Logs: {escape(relative(result.run_dir or ''))}  "
                     f"More help: meshlab hint {result.number}"))


def _continued(text: object) -> str:
    """TEXT escaped, its later lines indented under the first (a traceback's frames)."""
    return escape(str(text)).replace("\n", "\n" + " " * 14)


@contextlib.contextmanager
def check_progress(lab: Lab) -> Iterator[Callable[[dict], None]]:
    """A progress bar fed by the checker's events (a no-op when not on a terminal)."""
    if not console.is_terminal:
        yield lambda event: None
        return
    with _progress_bar() as bar:
        task = bar.add_task(f"Lab {lab.number:02d}: starting services", total=None)

        def on_event(event: dict) -> None:
            if event["event"] == "start":
                bar.update(task, total=len(event["checks"]), description=f"Lab {lab.number:02d}: checking")
            elif event["event"] == "check":
                bar.update(task, advance=1, description=f"Lab {lab.number:02d}: {event['title'][:40]}")

        yield on_event


@contextlib.contextmanager
def audit_progress(total: int) -> Iterator[Callable[[Lab, str, LabResult], None]]:
    """A progress bar over the audit's graded runs (a no-op when not on a terminal)."""
    if not console.is_terminal:
        yield lambda lab, which, result: None
        return
    with _progress_bar() as bar:
        task = bar.add_task("auditing", total=total)
        yield lambda lab, which, result: bar.update(task, advance=1,
                                                     description=f"{lab.slug} {which}: {result.status}")


def _cell(markup: str) -> Text:
    # Parsed once here: a table re-parses a string cell's markup each time it measures or
    # draws it, and string markup loads rich's table of emoji codes (about 3 ms of a
    # `meshlab list`), which no text of ours uses.
    return Text.from_markup(markup, emoji=False)


def show_labs(course: Course, progress: dict[str, dict], running: set[str]) -> None:
    table = Table(title=Text(course.title, style="table.title"), title_justify="left")
    for column in ("#", "lab", "status", "time", "hints"):
        table.add_column(Text(column))
    for lab in course.labs:
        entry = progress.get(lab.slug, {})
        if entry.get("passed"):
            status = "[green]passed[/]"
        elif entry.get("last_status"):
            status = f"[yellow]in progress[/] ({entry.get('last_score', '?')})"
        else:
            status = "not started"
        if lab.slug in running:
            status += " [cyan]· running[/]"
        hints = f"{entry.get('hints_shown', 0)}/{len(lab.hints)}"
        table.add_row(_cell(f"{lab.number:02d}"), _cell(f"{escape(lab.title)}\n[dim]{escape(lab.summary)}[/]"),
                      _cell(status), _cell(f"{lab.time_minutes} min"), _cell(hints))
    console.print(table)


def show_audit(rows: list) -> None:
    table = Table(title="meshlab audit: starters must fail, solutions must pass", title_justify="left")
    for column in ("lab", "starter", "solution", "verdict"):
        table.add_column(column)
    for row in rows:
        if row.skipped:
            table.add_row(escape(row.lab.slug), "skipped", "skipped", "[yellow]skipped: " + escape(row.skipped) + "[/]")
            continue
        total = len(row.starter.checks)
        failed = sum(1 for c in row.starter.checks if c.status in ("fail", "error"))
        starter = (f"fails {failed}/{total}" if row.starter.status == "fail" else row.starter.status)
        solution = (f"passes {row.solution.passed}/{len(row.solution.checks)}" if row.solution.status == "pass"
                    else row.solution.status)
        skipped = sum(1 for c in row.solution.checks if c.status == "skip")
        if skipped:  # checks of another runtime (lab 01's Docker part on local processes)
            solution += f" ({skipped} skipped)"
        verdict = "[green]ok[/]" if row.ok else "[red]" + escape("; ".join(row.problems)) + "[/]"
        table.add_row(escape(row.lab.slug), starter, solution, verdict)
    console.print(table)
    graded = sorted({row.graded for row in rows})
    if graded:
        console.print(f"[dim]Starters graded from: {escape(', '.join(graded))}.[/]")
    for row in rows:
        for warning in row.warnings:
            console.print(f"[yellow]warning:[/] {escape(row.lab.slug)}: {escape(warning)}")


def show_readiness(summary: str, labs: list) -> None:
    """doctor's verdict, then what stops each lab that is not ready."""
    ready = all(row.ready for row in labs)
    console.print(f"[bold {'green' if ready else 'yellow'}]{escape(summary[:1].upper() + summary[1:])}.[/]")
    for row in labs:
        for finding in row.missing:
            console.print(f"  lab {row.lab.number:02d} ({escape(row.lab.slug)}): {escape(finding.name)} "
                          f"{escape(finding.detail)}" + (f"\n    [dim]fix: {escape(finding.fix)}[/]" if finding.fix else ""))


def show_findings(findings: list) -> None:
    table = Table(title="meshlab doctor", title_justify="left")
    for column in ("", "what", "status", "detail"):
        table.add_column(column)
    colours = {"ok": "green", "missing": "red", "warn": "yellow", "absent": "dim"}
    for finding in findings:
        detail = escape(finding.detail) + (f"\n[dim]fix: {escape(finding.fix)}[/]" if finding.fix else "")
        table.add_row(finding.group, escape(finding.name),
                      f"[{colours.get(finding.status, 'white')}]{finding.status}[/]", detail)
    console.print(table)
