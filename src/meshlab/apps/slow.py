"""An app that takes its time: every answer comes after `--delay` seconds. In front of
it, a proxy either lets callers pile up behind the slow service or fails them fast."""

from __future__ import annotations

import argparse
import time

from meshlab.apps.server import App, Request, Response, serve


def slow(delay: float) -> App:
    def answer(request: Request) -> Response:
        time.sleep(delay)
        return Response(200, f"Slow hello, after {delay:g} s\n")
    return answer


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delay", type=float, default=1.0, help="seconds before each answer (default 1)")


if __name__ == "__main__":
    serve(None, description="Answers every request after a delay.", add_arguments=_arguments,
          configure=lambda options: slow(options.delay))
