"""A class gradebook from collected `meshlab check --json` results.

An instructor collects the results learners produce (files, or folders of them; several
runs per learner and lab), and `gradebook()` turns them into one cell per learner and
lab: the latest run's status, which checks fail in it, how many attempts, when the last
one finished. Files that are not results (malformed JSON, another tool's JSON, a format
this meshlab does not know) are set aside with the reason, never raised.

The result format is docs/results-schema.md; this module reads versions 1 and 2.
"""

from __future__ import annotations

import csv
import html
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

READABLE_VERSIONS = (1, 2)
UNNAMED = "(unnamed)"       # a result without a learner (version 1, or no name configured)
GRADEBOOK_VERSION = 1       # the format of `meshlab report --json`


@dataclass
class Run:
    """One `meshlab check --json` result, reduced to what a gradebook shows."""

    source: str
    learner: str
    lab: str
    number: int
    title: str
    status: str
    checks_passed: int
    checks_total: int
    failing: list[str]
    finished_at: str | None


@dataclass
class Skipped:
    source: str
    reason: str


@dataclass
class Cell:
    """A learner's standing on one lab: the latest run decides, the others count as attempts."""

    learner: str
    lab: str
    number: int
    title: str
    status: str                 # the latest run's: "pass", "fail" or "error"
    passed: bool                # the latest run passed
    ever_passed: bool
    checks_passed: int
    checks_total: int
    failing: list[str]          # titles of the checks that fail in the latest run
    attempts: int
    last: str | None            # when the latest run finished (ISO 8601, UTC)


@dataclass
class Gradebook:
    learners: list[str]
    labs: list[tuple[int, str, str]]                   # (number, slug, title), in course order
    cells: dict[tuple[str, str], Cell]                 # (learner, lab slug) -> cell
    skipped: list[Skipped] = field(default_factory=list)
    runs: int = 0

    def cell(self, learner: str, lab: str) -> Cell | None:
        return self.cells.get((learner, lab))

    def to_json(self) -> dict:
        return {
            "version": GRADEBOOK_VERSION,
            "learners": self.learners,
            "labs": [{"number": n, "lab": slug, "title": title} for n, slug, title in self.labs],
            "cells": [asdict(self.cells[key]) for key in self._ordered_keys()],
            "runs": self.runs,
            "skipped": [asdict(s) for s in self.skipped],
        }

    def _ordered_keys(self) -> list[tuple[str, str]]:
        return [(learner, slug) for learner in self.learners for _, slug, _ in self.labs
                if (learner, slug) in self.cells]


CSV_COLUMNS = ("learner", "lab", "number", "title", "status", "passed", "ever_passed", "checks_passed",
               "checks_total", "failing", "attempts", "last")


def result_files(paths: list[Path]) -> tuple[list[Path], list[Skipped]]:
    """The JSON files PATHS name (folders are searched recursively), and the paths that do not exist."""
    files: list[Path] = []
    missing: list[Skipped] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()))
        elif path.is_file():
            files.append(path)
        else:
            missing.append(Skipped(str(path), "no such file or folder"))
    return files, missing


def read_run(path: Path) -> Run | Skipped:
    """One result file as a Run, or the reason it is not one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return Skipped(str(path), "not text (UTF-8)")
    except json.JSONDecodeError as error:
        return Skipped(str(path), f"not JSON: {error.msg} at line {error.lineno}, column {error.colno}")
    except OSError as error:
        return Skipped(str(path), f"cannot be read: {error.strerror}")
    if not isinstance(data, dict) or "checks" not in data or "lab" not in data:
        return Skipped(str(path), "not a `meshlab check --json` result (no `lab` and `checks`)")
    version = data.get("version")
    if version not in READABLE_VERSIONS:
        return Skipped(str(path), f"result format version {version!r}; this meshlab reads "
                                  f"{', '.join(map(str, READABLE_VERSIONS))} (upgrade meshlab)")
    try:
        checks = data["checks"]
        if not isinstance(checks, list) or not all(isinstance(c, dict) for c in checks):
            raise TypeError("`checks` is not a list of objects")
        status = data["status"]
        if status not in ("pass", "fail", "error"):
            raise ValueError(f"unknown status {status!r}")
        learner = data.get("learner")
        return Run(
            source=str(path),
            learner=learner.strip() if isinstance(learner, str) and learner.strip() else UNNAMED,
            lab=str(data["lab"]),
            number=int(data.get("number") or 0),
            title=str(data.get("title") or data["lab"]),
            status=status,
            checks_passed=sum(1 for c in checks if c.get("status") == "pass"),
            # A check skipped there (another runtime's part, e.g. lab 01's Docker steps)
            # was not graded: it counts neither way.
            checks_total=sum(1 for c in checks if c.get("status") != "skip"),
            failing=[str(c.get("title") or c.get("id")) for c in checks if c.get("status") in ("fail", "error")],
            finished_at=data.get("finished_at") if isinstance(data.get("finished_at"), str) else None,
        )
    except (KeyError, TypeError, ValueError) as error:
        detail = f"missing `{error.args[0]}`" if isinstance(error, KeyError) else str(error)
        return Skipped(str(path), f"a damaged result: {detail}")


def gradebook(paths: list[Path]) -> Gradebook:
    """The gradebook of every result found under PATHS."""
    files, skipped = result_files(paths)
    runs: list[Run] = []
    seen: set[tuple[str, str, str]] = set()
    for path in files:
        run = read_run(path)
        if isinstance(run, Skipped):
            skipped.append(run)
            continue
        # The same file collected twice (a copy in two folders) is one attempt, not two.
        if run.finished_at is not None:
            key = (run.learner, run.lab, run.finished_at)
            if key in seen:
                continue
            seen.add(key)
        runs.append(run)
    by_cell: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        by_cell.setdefault((run.learner, run.lab), []).append(run)
    cells = {key: _cell(group) for key, group in by_cell.items()}
    # One column per lab, titled as its latest run has it (a title may change between versions).
    labs = sorted({run.lab: (run.number, run.lab, run.title) for run in sorted(runs, key=_age)}.values())
    learners = sorted({run.learner for run in runs}, key=lambda name: (name == UNNAMED, name.casefold()))
    return Gradebook(learners=learners, labs=labs, cells=cells, skipped=skipped, runs=len(runs))


def _age(run: Run) -> tuple[bool, str]:
    """Sorts runs oldest first; runs without a finish time (format 1) count as older, in file order."""
    return (run.finished_at is not None, run.finished_at or "")


def _cell(runs: list[Run]) -> Cell:
    latest = sorted(runs, key=_age)[-1]
    return Cell(learner=latest.learner, lab=latest.lab, number=latest.number, title=latest.title,
                status=latest.status, passed=latest.status == "pass",
                ever_passed=any(r.status == "pass" for r in runs), checks_passed=latest.checks_passed,
                checks_total=latest.checks_total, failing=latest.failing, attempts=len(runs),
                last=latest.finished_at)


def to_csv(book: Gradebook) -> str:
    """One row per learner and lab (the long format spreadsheets and LMS imports take)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for key in book._ordered_keys():
        cell = asdict(book.cells[key])
        cell["failing"] = "; ".join(cell["failing"])
        cell["passed"] = "yes" if cell["passed"] else "no"
        cell["ever_passed"] = "yes" if cell["ever_passed"] else "no"
        cell["last"] = cell["last"] or ""
        writer.writerow([cell[column] for column in CSV_COLUMNS])
    return out.getvalue()


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; color: #222; }
table { border-collapse: collapse; }
th, td { border: 1px solid #ccc; padding: .4rem .6rem; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.pass { background: #e5f5e5; } td.fail { background: #fdecea; } td.error { background: #fff4d6; }
td.none { color: #999; }
.failing { font-size: .85em; margin: .2rem 0 0 1rem; padding: 0; }
.meta { color: #555; font-size: .85em; }
"""

_MARK = {"pass": "✔ passed", "fail": "✘ failing", "error": "⚠ broken"}


def to_html(book: Gradebook) -> str:
    """A page an instructor opens: learners down, labs across, one cell each."""
    e = html.escape
    head = "".join(f"<th>Lab {n:02d}<br><span class=meta>{e(title)}</span></th>" for n, _, title in book.labs)
    rows = []
    for learner in book.learners:
        cells = []
        for _, slug, _ in book.labs:
            cell = book.cell(learner, slug)
            if cell is None:
                cells.append('<td class="none">not attempted</td>')
                continue
            failing = "".join(f"<li>{e(title)}</li>" for title in cell.failing)
            cells.append(
                f'<td class="{cell.status}" data-lab="{e(slug)}">{_MARK[cell.status]} '
                f"{cell.checks_passed}/{cell.checks_total}"
                + (f'<ul class="failing">{failing}</ul>' if failing else "")
                + f'<div class="meta">{cell.attempts} attempt{"s" if cell.attempts != 1 else ""}'
                + (f", last {e(cell.last)}" if cell.last else "")
                + ("" if cell.passed or not cell.ever_passed else ", passed before")
                + "</div></td>")
        rows.append(f"<tr><th>{e(learner)}</th>{''.join(cells)}</tr>")
    skipped = ""
    if book.skipped:
        items = "".join(f"<li><code>{e(s.source)}</code>: {e(s.reason)}</li>" for s in book.skipped)
        skipped = f"<h2>Files skipped</h2><ul>{items}</ul>"
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>meshlab gradebook</title>'
            f"<style>{_CSS}</style></head><body><h1>Gradebook</h1>"
            f'<p class="meta">{len(book.learners)} learners, {book.runs} runs read.</p>'
            f"<table><thead><tr><th>Learner</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            f"{skipped}</body></html>\n")
