"""A backend that says which one it is: `--name blue` answers "blue" and the header
`x-served-by: blue`. Several run side by side so that a check (and a learner with curl)
can see where a proxy sent each request."""

from __future__ import annotations

import argparse

from meshlab.apps.server import App, Request, Response, serve


def named(name: str) -> App:
    def whoami(request: Request) -> Response:
        return Response(200, f"{name}\n", {"x-served-by": name})
    return whoami


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="what this backend calls itself")


if __name__ == "__main__":
    serve(named("?"), description="A backend that answers with its name.",
          add_arguments=_add_arguments, configure=lambda options: named(options.name))
