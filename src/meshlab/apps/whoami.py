"""An app that answers with its own name: two versions of a service (lab 02), or the
instances of one (lab 03), told apart by what they say. `--status 500` makes a broken
instance that answers every request with an error, in its own name."""

from __future__ import annotations

import argparse

from meshlab.apps.server import App, Request, Response, serve


def whoami(name: str, status: int) -> App:
    def answer(request: Request) -> Response:
        return Response(status, name + "\n", {"x-served-by": name})
    return answer


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="what the app answers, like 'Version 1.0 (Stable)'")
    parser.add_argument("--status", type=int, default=200, help="the status of every answer (default 200)")


if __name__ == "__main__":
    serve(None, description="Answers every request with its own name.", add_arguments=_arguments,
          configure=lambda options: whoami(options.name, options.status))
