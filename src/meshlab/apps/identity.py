"""Lab 04's app-b: tells its caller who it thinks the caller is. Its sidecar puts the
verified client identity into `x-forwarded-client-cert` (XFCC); app-b only reads it,
it never sees a certificate itself. The answer is JSON:
`{"service": "app-b", "caller": "spiffe://...", "xfcc": "..."}`."""

from __future__ import annotations

import json
import re

from meshlab.apps.server import Request, Response, serve

# XFCC: elements separated by ',', each `Key=value;Key=value` (values may be quoted).
_URI = re.compile(r'(?:^|[;,])URI="?([^;,"]+)"?')


def callers(xfcc: str | None) -> list[str]:
    """The URI (SPIFFE ID) of each element of an XFCC header, in order."""
    return [m.group(1) for m in _URI.finditer(xfcc or "")]


def identify(request: Request) -> Response:
    xfcc = request.header("x-forwarded-client-cert")
    found = callers(xfcc)
    body = {"service": "app-b", "caller": found[-1] if found else None, "xfcc": xfcc}
    return Response(200, json.dumps(body) + "\n", {"content-type": "application/json"})


if __name__ == "__main__":
    serve(identify, description="Lab 04's app-b: echoes the caller identity from x-forwarded-client-cert.")
