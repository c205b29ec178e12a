"""Lab 07's app: an ordinary program that calls other services by their own address.

It knows nothing about a mesh: `GET /call?url=http://10.77.7.3:8080/x` makes a plain
HTTP request to that URL, on a new connection, and answers with what came back, as
JSON: `{"status", "headers", "body"}` (or `{"error"}` when the call failed). Any other
path answers with a greeting. Whether its call went through a proxy is decided by the
kernel (iptables, eBPF), not by the app.
"""

from __future__ import annotations

import json

import httpx

from meshlab.apps.server import Request, Response, serve

GREETING = "Hello from the app in the pod!"


def app(request: Request) -> Response:
    if request.path != "/call":
        return Response(200, GREETING + "\n", {"x-served-by": "app"})
    url = (request.query.get("url") or [""])[0]
    if not url.startswith("http://"):
        return Response(400, "give the address to call: /call?url=http://HOST:PORT/PATH\n")
    try:
        # A client per call: one connection per call, so connection counters count calls.
        with httpx.Client(timeout=5.0, trust_env=False) as client:
            answer = client.get(url)
        result = {"status": answer.status_code, "headers": dict(answer.headers), "body": answer.text}
    except httpx.HTTPError as exc:
        result = {"error": f"{type(exc).__name__}: {exc}"}
    return Response(200, json.dumps(result), {"content-type": "application/json"})


if __name__ == "__main__":
    serve(app, description="Lab 07's app: calls the URL it is given (/call?url=...), like any program would.")
