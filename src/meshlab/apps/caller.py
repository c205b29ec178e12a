"""Lab 04's app-a: a client that knows nothing about TLS. It relays every request it
receives to its upstream (its own sidecar, in plain HTTP on loopback) and answers with
what came back, so the checker can call "app-a" and see what app-b answered to it.
Identity and encryption are the sidecars' business, not the app's."""

from __future__ import annotations

import argparse

import httpx

from meshlab.apps.server import Request, Response, serve

# Headers that describe one hop, not the request: never relayed.
_HOP_BY_HOP = {"host", "connection", "content-length", "keep-alive", "transfer-encoding", "upgrade", "te"}


def relay(upstream: str):
    client = httpx.Client(base_url=upstream, timeout=10.0, trust_env=False)

    def app(request: Request) -> Response:
        headers = {k: v for k, v in request.headers.items() if k not in _HOP_BY_HOP}
        try:
            answer = client.request(request.method, request.path, params=request.query, headers=headers,
                                    content=request.body)
        except httpx.HTTPError as exc:
            return Response(502, f"app-a could not reach its sidecar at {upstream}: {exc}\n")
        kept = {k: v for k, v in answer.headers.items() if k not in _HOP_BY_HOP and k != "content-type"}
        kept["content-type"] = answer.headers.get("content-type", "text/plain")
        return Response(answer.status_code, answer.content, kept)

    return app


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--upstream", required=True, help="where to send requests (the sidecar), like "
                                                          "http://127.0.0.1:10000")


if __name__ == "__main__":
    serve(None, description="Lab 04's app-a: relays each request to its sidecar.", add_arguments=_arguments,
          configure=lambda options: relay(options.upstream))
