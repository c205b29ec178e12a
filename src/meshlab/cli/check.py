"""meshlab check: grade a lab.

A module of its own because a learner runs it after every save: it starts the checker
process (Python, pytest, the lab: most of the wait) as soon as it knows what to grade,
and only then imports what draws the progress and the scorecard, which runs meanwhile.
"""

from __future__ import annotations

import json
import sys

import click

from meshlab.cli.options import JSON, LAB, RUNTIME, lab_dir_for, open_course
from meshlab.errors import MeshlabError


@click.command("check")
@LAB
@click.option("--path", type=click.Path(), help="Grade the lab files in this folder instead of labs/NN-slug.")
@click.option("--solution", is_flag=True, help="Grade the course's solution (solutions/NN-slug).")
@click.option("--isolate", is_flag=True,
              help="Run in a private network namespace (fixed ports never collide; needs Linux namespaces).")
@RUNTIME
@click.option("--learner", metavar="NAME",
              help="Who is checking, recorded in --json results (default: $MESHLAB_LEARNER, else git's user.name).")
@JSON
def check_command(lab: str, path: str | None, solution: bool, isolate: bool, runtime: str | None,
                  learner: str | None,
                  as_json: bool) -> None:
    """Grade LAB against real Envoy: a scorecard of checks, EXPECTED / RECEIVED, hints.

    Exit 0 when every check passes, 1 when one fails, 2 when the lab files or the
    machine are broken (the message says where and how to fix it).
    """
    from meshlab import isolation
    from meshlab.checking import Checker, default_learner
    from meshlab.runtime.interface import selected

    course = open_course()
    spec = course.find(lab)
    lab_dir = lab_dir_for(course, spec, path, solution)
    runtime = selected(runtime)
    if isolate and runtime == "docker":
        raise MeshlabError("--isolate and the docker runtime exclude each other: the lab's ports are published "
                           "on the host's 127.0.0.1, which a private namespace cannot reach",
                           fix="drop --isolate (containers are isolated already; only the published ports are shared)")
    if isolate and not isolation.available():
        raise MeshlabError("--isolate needs network namespaces, which this machine does not allow",
                           fix="run without --isolate, or as root / with unprivileged user namespaces")
    checker = Checker(course, spec, lab_dir, isolate=isolate, runtime=runtime)
    checker.start()
    try:
        from meshlab import progress, ui

        if as_json:
            result = checker.run()
        else:
            with ui.check_progress(spec) as on_event:
                result = checker.run(on_event)
    except KeyboardInterrupt:
        checker.interrupt()  # also when it came before `run` was there to pass it on
        raise
    if as_json:
        result.learner = (learner or "").strip() or default_learner(course.root)
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        ui.show_result(result)
    if lab_dir == spec.workspace and result.status != "error":
        progress.record_check(course, spec, result.status, result.passed, len(result.checks))
    sys.exit(result.exit_code)
