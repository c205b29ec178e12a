"""`meshlab image`: the course's Docker images (base and toolbox)."""

from __future__ import annotations

import json
import time

import click

from meshlab import ui
from meshlab.cli.options import JSON, open_course


@click.group("image")
def image_group() -> None:
    """The course's Docker images: a Debian base and the toolbox (meshlab + Envoy).

    \b
      meshlab image base     the base (pulled, or made with debootstrap without a registry)
      meshlab image build    the toolbox meshlab:VERSION, from a wheelhouse made on this host
      meshlab image status   which images exist on the engine
    """


def _say(text: str) -> None:
    ui.errors.print(f"[dim]{ui.escape(text)}[/]")


# A build step may print nothing for minutes (pip installing from the wheelhouse on a
# loaded machine): the engine's API answers slower than a status call does.
BUILD_TIMEOUT_S = 900


@image_group.command("base")
@click.option("--debootstrap", "method", flag_value="debootstrap",
              help="Make it with debootstrap even if a registry answers.")
@click.option("--pull", "method", flag_value="pull", help="Only pull python:3.11-slim (no fallback).")
@click.option("--mirror", metavar="URL", help="Debian mirror for debootstrap (default: the one apt uses).")
def base_command(method: str | None, mirror: str | None) -> None:
    """Make the base image (Debian bookworm with Python 3.11).

    Pulls python:3.11-slim where a registry answers; otherwise (or with --debootstrap)
    makes Debian bookworm with debootstrap (root, about a minute) and imports it.
    """
    from meshlab.container.engine import BASE_IMAGE, connect
    from meshlab.container.images import make_base

    client = connect(timeout=BUILD_TIMEOUT_S)
    started = time.monotonic()
    how = make_base(client, say=_say, method=method or "auto", mirror=mirror)
    ui.console.print(f"{BASE_IMAGE}: {how}, in {time.monotonic() - started:.0f} s")


@image_group.command("build")
def build_command() -> None:
    """Build the toolbox image meshlab:VERSION from this checkout.

    Python packages are downloaded on this host into .meshlab/image/wheelhouse (again
    only when pyproject.toml changes) and installed in the image without network.
    Needs the base image (`meshlab image base`).
    """
    from meshlab.container.engine import TOOLBOX_IMAGE, connect
    from meshlab.container.images import build_toolbox

    course = open_course()
    client = connect(timeout=BUILD_TIMEOUT_S)
    started = time.monotonic()
    image_id = build_toolbox(client, course.root, course.state_dir / "image", say=_say)
    ui.console.print(f"{TOOLBOX_IMAGE} ({image_id}) built in {time.monotonic() - started:.0f} s")


@image_group.command("status")
@JSON
def status_command(as_json: bool) -> None:
    """The Docker engine and which of the course's images it has."""
    from meshlab.container.engine import connect, describe

    info = describe(connect())
    if as_json:
        click.echo(json.dumps(info.__dict__, indent=2))
        return
    ui.console.print(f"Docker engine {info.version} (API {info.api_version}, {info.os}/{info.architecture})")
    for name, image_id in info.images.items():
        ui.console.print(f"  {name:<24} {image_id or '[yellow]absent[/]'}")
