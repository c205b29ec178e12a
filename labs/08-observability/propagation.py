"""What productpage and reviews send with their call to the next service.

Both run meshlab.apps.chain: for each request, the app calls the next service's
sidecar, and asks this file which headers to put on that call. Envoy starts a span for
every request its sidecar sees and tells the app which span that is, in the request
headers; the app must hand it on, or the next sidecar starts a trace of its own.
"""


def outgoing_headers(incoming: dict[str, str]) -> dict[str, str]:
    """The headers of the call to the next service, given the headers of the request
    this app is serving (names in lower case)."""
    headers = {"accept": "application/json"}
    # TODO(step 4): copy the W3C trace context, `traceparent` (and `tracestate` when
    #   present), from the incoming request to the outgoing one.
    return headers
