"""Where the `meshlab` command starts (and `python -m meshlab`).

The CLI turns Ctrl-C into "interrupted" and exit code 130 once a command runs; before
that, Python is still importing click and the command's module, and a Ctrl-C there
would end in a traceback. Nothing has been started at that point, so it just exits."""

from __future__ import annotations

import sys


def main() -> None:
    try:
        from meshlab.cli import main as cli
    except KeyboardInterrupt:
        sys.exit(130)
    cli(prog_name="meshlab")
