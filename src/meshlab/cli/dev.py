"""`meshlab dev`: commands for the course's authors, apart from the learner's.

    meshlab dev check            # the course's shape (docs/course-shape.md), file and line
    meshlab dev check --json     # the same findings for a machine
"""

from __future__ import annotations

import json
import sys

import click

from meshlab.course import load_course
from meshlab.errors import MeshlabError


@click.group("dev")
def dev_group() -> None:
    """Commands for course authors (the learner's commands are the others)."""


@dev_group.command("check")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of text.")
def check_command(as_json: bool) -> None:
    """Check that every lab has the course's shape (docs/course-shape.md).

    Prints each breach as FILE:LINE: RULE: message, then its fix, paths relative to the
    course root. Exit 0 when the course passes, 1 when it has findings, 2 when the
    course does not even load (the message says where).
    """
    from meshlab.shape import RULES, check_course

    try:
        course = load_course()
    except MeshlabError as error:
        if not as_json:
            raise  # the CLI shows it and exits 2, as for every command
        click.echo(json.dumps({"ok": False, "error": error.to_dict(), "findings": []}, indent=2))
        sys.exit(2)
    findings = check_course(course)
    if as_json:
        click.echo(json.dumps({"ok": not findings, "labs": len(course.labs), "rules": list(RULES),
                               "findings": [f.to_dict(course.root) for f in findings]}, indent=2))
    else:
        for finding in findings:
            click.echo(f"{finding.path(course.root)}:{finding.line}: {finding.rule}: {finding.message}")
            click.echo(f"    fix: {finding.fix}")
        files = len({f.file for f in findings})
        summary = (f"{len(findings)} finding{'s' * (len(findings) != 1)} in {files} file{'s' * (files != 1)}"
                   if findings else "the course has its shape")
        click.echo(f"{summary} ({len(course.labs)} labs, {len(RULES)} rules; docs/course-shape.md)",
                   err=bool(findings))
    sys.exit(1 if findings else 0)
