"""meshlab slides: build the instructor's decks (offline reveal.js, live demos) and serve them."""

from __future__ import annotations

import time
from pathlib import Path

import click

from meshlab import ui
from meshlab.cli.options import open_course

DEFAULT_OUT = Path("build") / "slides"


@click.group("slides")
def slides_group() -> None:
    """The instructor's decks in slides/: build them into reveal.js pages, serve them."""


@slides_group.command("build")
@click.argument("decks", nargs=-1, type=int, metavar="[N]...")
@click.option("--execute", "run_demos", is_flag=True,
              help="Run the decks' live demo cells (each starts its lab's solution) so the pictures are real.")
@click.option("--pdf", is_flag=True, help="Also print each deck to a PDF handout (headless Chromium).")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help=f"Build folder (default: {DEFAULT_OUT} in the course).")
def build_command(decks: tuple[int, ...], run_demos: bool, pdf: bool, output: Path | None) -> None:
    """Build deck N (0 is the opening deck; every deck when none is given) into reveal.js HTML.

    \b
    The build folder is self-contained: reveal.js, Mermaid and MathJax come from the
    npm registry on the first build (cached), never from a CDN, so the decks present
    with no network. Run demos inside a free set of ports (they use the labs' own),
    e.g. not while a learner's lab runs on this machine.
    """
    from meshlab.slides import build

    course = open_course()
    out = (output or course.root / DEFAULT_OUT).resolve()
    built = build(course, out, numbers=list(decks) or None, run_demos=run_demos, pdf=pdf,
                  on_step=lambda text: ui.console.print(f"[dim]{text}[/]"))
    ui.console.print(f"{len(built)} decks in {ui.relative(out)}/; present them with: meshlab slides serve")


@slides_group.command("serve")
@click.option("--port", type=int, default=8000, show_default=True, help="Port on 127.0.0.1.")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=None,
              help=f"Build folder to serve (default: {DEFAULT_OUT} in the course).")
def serve_command(port: int, output: Path | None) -> None:
    """Serve the built decks on 127.0.0.1 (press S in a deck for the speaker notes)."""
    from meshlab.errors import InputError, PortBusy
    from meshlab.slides import serving

    course = open_course()
    out = (output or course.root / DEFAULT_OUT).resolve()
    pages = sorted(out.glob("*.slides.html"))
    if not pages:
        raise InputError(f"no built deck in {ui.relative(out)}", fix="build them first: meshlab slides build")
    try:
        context = serving(out, port)
        base = context.__enter__()
    except OSError as error:
        raise PortBusy(f"cannot serve on 127.0.0.1:{port}: {error.strerror}", fix="choose another with --port") from None
    try:
        for page in pages:
            ui.console.print(f"  {base}/{page.name}")
        ui.console.print("Press S in a deck for the speaker view (notes, timer); Ctrl-C to stop.")
        while True:
            time.sleep(3600)
    finally:
        context.__exit__(None, None, None)
