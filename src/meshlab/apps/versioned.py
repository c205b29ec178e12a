"""Lab 05's backends: one app, started once per version (`--version v1`, `--version v2`).
Each answers with its version in the body and in `x-app-version`, so a client (and the
checker, through the journal) can tell which one served a request."""

from __future__ import annotations

import argparse
import json

from meshlab.apps.server import Request, Response, serve


def versioned(version: str):
    def app(request: Request) -> Response:
        body = {"version": version, "user": request.header("x-user-id"), "bucket": request.header("x-user-bucket")}
        return Response(200, json.dumps(body) + "\n", {"content-type": "application/json", "x-app-version": version})

    return app


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--version", required=True, help="the version this instance serves, like v1")


if __name__ == "__main__":
    serve(None, description="Lab 05's backend: answers with its version.", add_arguments=_arguments,
          configure=lambda options: versioned(options.version))
