"""`meshlab compose`: render compose/NN-slug/compose.yaml from every lab.yaml."""

from __future__ import annotations

import sys

import click

from meshlab import ui
from meshlab.cli.options import open_course


@click.command("compose")
@click.option("--check", "check_only", is_flag=True,
              help="Write nothing; exit 1 when a committed file differs from what its lab.yaml renders.")
def compose_command(check_only: bool) -> None:
    """Render each lab's Compose sandbox (compose/NN-slug/compose.yaml) from its lab.yaml.

    One container per service, all in one network namespace (a `pod` that publishes the
    lab's ports on 127.0.0.1), the lab folder mounted at /lab. Then:
    docker compose -f compose/01-hello-mesh/compose.yaml up -d
    """
    from meshlab.container.compose import stale, write_all

    course = open_course()
    if check_only:
        outdated = stale(course)
        for path in outdated:
            ui.console.print(f"stale: {ui.relative(path)} (run `meshlab compose`)")
        if outdated:
            sys.exit(1)
        ui.console.print(f"{len(course.labs)} compose files are fresh.")
        return
    changed = write_all(course)
    for path in changed:
        ui.console.print(f"{'wrote' if path.exists() else 'removed'} {ui.relative(path)}")
    if not changed:
        ui.console.print(f"{len(course.labs)} compose files were already fresh.")
