"""An app that fails two of every three attempts: the first `--failures` attempts of
each request answer 503, the next one succeeds.

A request is known by its `x-request-id`, which Envoy sets once and keeps on every
retry, so the pattern holds per request even under concurrent load: without retries
every request fails; with two retries every one succeeds on its third attempt.
Requests without the header (a direct curl) fail and succeed in turn by count.
"""

from __future__ import annotations

import argparse
import itertools
import threading
from collections import OrderedDict

from meshlab.apps.server import App, Request, Response, serve

_REMEMBERED = 20000  # request ids kept; older ones are forgotten first


def flaky(failures: int) -> App:
    attempts: OrderedDict[str, int] = OrderedDict()
    anonymous = itertools.count()
    lock = threading.Lock()

    def answer(request: Request) -> Response:
        key = request.header("x-request-id")
        with lock:
            if key is None:
                seen = next(anonymous) % (failures + 1)
            else:
                seen = attempts.pop(key, 0)
                attempts[key] = seen + 1
                if len(attempts) > _REMEMBERED:
                    attempts.popitem(last=False)
        if seen < failures:
            return Response(503, f"flaky: attempt {seen + 1} fails\n")
        return Response(200, f"flaky: attempt {seen + 1} succeeds\n")
    return answer


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--failures", type=int, default=2,
                        help="attempts of each request that fail before one succeeds (default 2)")


if __name__ == "__main__":
    serve(None, description="Fails the first attempts of each request, then succeeds.", add_arguments=_arguments,
          configure=lambda options: flaky(options.failures))
