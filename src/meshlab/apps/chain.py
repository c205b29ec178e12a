"""A service in a call chain (productpage -> reviews -> ratings): it calls its
`--upstream` (the next service's sidecar) with the path and query it received, and
answers with its own name and what came back; the last one in the chain answers alone.

Which headers go on the outgoing call is the app's business, not the proxy's: a
function `outgoing_headers(incoming) -> dict` read from the file `--headers-from`
decides (lab 08's `propagation.py`, where the learner copies the trace context).
Without that file, nothing is copied.

Known signals for a checker: `--fail-every K` answers 503 to every K-th request (after
calling upstream, so the trace still has every hop), `--delay S` waits S seconds before
answering, and a path under `/missing` is answered 404 at once, without calling upstream.
Counting is per process, so the pattern is exact whatever the concurrency.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Callable

import httpx

from meshlab.apps.server import App, Request, Response, serve

Headers = Callable[[dict[str, str]], dict[str, str]]


def load_headers_function(path: Path) -> Headers:
    """`outgoing_headers` from the Python file PATH."""
    spec = importlib.util.spec_from_file_location("meshlab_outgoing_headers", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    function = getattr(module, "outgoing_headers", None)
    if not callable(function):
        raise SystemExit(f"{path} must define outgoing_headers(incoming) -> dict")
    return function


def chain(name: str, upstream: str | None, outgoing_headers: Headers, *, fail_every: int = 0,
          delay: float = 0.0) -> App:
    client = httpx.Client(timeout=10.0, trust_env=False) if upstream else None
    counter = itertools.count(1)
    lock = threading.Lock()

    def answer(request: Request) -> Response:
        if request.path.startswith("/missing"):
            return Response(404, json.dumps({"service": name, "error": "not found"}),
                            {"content-type": "application/json", "x-served-by": name})
        with lock:
            number = next(counter)
        upstream_answer: object = None
        status = 200
        if client is not None:
            headers = {str(k).lower(): str(v) for k, v in (outgoing_headers(dict(request.headers)) or {}).items()}
            headers.pop("host", None)
            try:
                # The path and query go on, like a product id would (and a checker's probe).
                called = client.get(upstream.rstrip("/") + request.path, params=request.query, headers=headers)
                upstream_answer = called.json() if called.headers.get("content-type") == "application/json" \
                    else called.text
                status = 200 if called.status_code < 500 else 502
            except httpx.HTTPError as error:
                upstream_answer, status = f"could not reach {upstream}: {error}", 502
        if delay:
            time.sleep(delay)
        if fail_every and number % fail_every == 0:
            status = 503
        body = {"service": name, "request": number, "upstream": upstream_answer}
        return Response(status, json.dumps(body), {"content-type": "application/json", "x-served-by": name})

    return answer


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", required=True, help="the service's name, in every answer")
    parser.add_argument("--upstream", help="URL of the next service (its sidecar); none: the end of the chain")
    parser.add_argument("--headers-from", type=Path,
                        help="Python file defining outgoing_headers(incoming) -> dict (default: copy nothing)")
    parser.add_argument("--fail-every", type=int, default=0, help="answer 503 to every K-th request (default never)")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering (default 0)")


def _configure(options: argparse.Namespace) -> App:
    headers = load_headers_function(options.headers_from) if options.headers_from else (lambda incoming: {})
    return chain(options.name, options.upstream, headers, fail_every=options.fail_every, delay=options.delay)


if __name__ == "__main__":
    serve(None, description="A service in a call chain.", add_arguments=_arguments, configure=_configure)
