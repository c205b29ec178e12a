"""The course as a whole on this machine: `meshlab doctor` and `meshlab audit`."""

from __future__ import annotations

import json
import sys

import click

from meshlab import ui
from meshlab.cli.options import JSON, open_course
from meshlab.errors import MeshlabError


@click.command("doctor")
@JSON
def doctor_command(as_json: bool) -> None:
    """Which labs this machine is ready for, and what is missing for the others.

    Checks Python, Envoy, the ports the labs bind, and the tools and kernel features the
    labs require. Exit 0 when every lab is ready, 1 when some lab is not (the verdict
    names it, with the fix), 2 when nothing can run (no Envoy, no course).
    """
    from meshlab.doctor import diagnose, healthy, readiness, verdict

    try:
        course, course_error = open_course(), None
    except MeshlabError as error:
        course, course_error = None, error
    findings = diagnose(course, course_error)
    labs = readiness(course, findings) if course else []
    summary = verdict(labs) if course else "the course cannot be loaded"
    if as_json:
        click.echo(json.dumps({"verdict": summary, "labs": [row.to_json() for row in labs],
                               "findings": [f.to_json() for f in findings]}, indent=2))
    else:
        ui.show_findings(findings)
        ui.show_readiness(summary, labs)
    core_ok = healthy([f for f in findings if f.group == "core"])
    sys.exit(2 if not core_ok else 0 if all(row.ready for row in labs) else 1)


@click.command("audit")
@click.argument("labs", nargs=-1, metavar="[LAB]...")
@click.option("--jobs", "-j", type=int, default=1, show_default=True,
              help="Labs graded at once (needs isolation: labs share fixed ports).")
@click.option("--isolate/--no-isolate", default=None,
              help="Grade each run in its own network namespace [default: when available].")
@click.option("--working-tree", is_flag=True,
              help="Grade the starters as they are in labs/, not as last committed (after adapting a lab).")
@JSON
def audit_command(labs: tuple[str, ...], jobs: int, isolate: bool | None, working_tree: bool, as_json: bool) -> None:
    """Prove the course: each starter must fail its checks, each solution pass them.

    Starters are read from the last commit (a learner's edits never count), and the
    audit says which commit and warns about starters changed since. Exit 0 when every
    lab proves itself, 1 when one does not (its failing checks are shown).
    """
    from meshlab import isolation
    from meshlab.audit import audit as run_audit

    course = open_course()
    chosen = [course.find(ref) for ref in labs] if labs else list(course.labs)
    if isolate is None:
        isolate = isolation.available()
    elif isolate and not isolation.available():
        raise MeshlabError("--isolate needs network namespaces, which this machine does not allow",
                           fix="run with --no-isolate (one lab at a time, on the real ports)")
    if as_json:
        rows = run_audit(course, chosen, jobs=jobs, isolate=isolate, working_tree=working_tree)
        click.echo(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        with ui.audit_progress(2 * len(chosen)) as on_done:
            rows = run_audit(course, chosen, jobs=jobs, isolate=isolate, working_tree=working_tree, on_done=on_done)
        ui.show_audit(rows)
        for row in rows:
            for which, result in (("starter", row.starter), ("solution", row.solution)):
                if result.status == "error" and result.error:
                    ui.show_error(result.error, title=f"{row.lab.slug} {which}")
            if row.solution.status == "fail":
                ui.console.rule(f"{row.lab.slug}: the solution's scorecard")
                ui.show_result(row.solution)
    sys.exit(0 if all(row.ok for row in rows) else 1)

