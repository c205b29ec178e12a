"""HTTP from a check's point of view, and assertions about responses that read like prose.

    response = lab.get("http://127.0.0.1:10000/")
    responds_with_status(response, 200)
    responds_with_header(response, "server", "envoy")

A connection that fails is a verdict too (nothing listens there), so `get` turns it
into a CheckFailed that says what was tried, not a traceback.
"""

from __future__ import annotations

import httpx

from meshlab.grading.failures import CheckFailed

# Headers worth showing when a response is described; the rest is noise for a learner.
_SHOWN_HEADERS = 8


def request(client: httpx.Client, method: str, url: str, *, hint: str | None = None,
            **kwargs: object) -> httpx.Response:
    try:
        return client.request(method, url, **kwargs)
    except httpx.ConnectError as exc:
        raise CheckFailed(f"nothing accepted the connection to {url}",
                          expected=f"a listener at {httpx.URL(url).host}:{httpx.URL(url).port}",
                          received=f"connection refused ({exc})", hint=hint) from None
    except httpx.TimeoutException:
        raise CheckFailed(f"{url} did not answer in time",
                          expected="a response", received="a timeout", hint=hint) from None
    except httpx.HTTPError as exc:
        raise CheckFailed(f"the request to {url} failed", expected="an HTTP response",
                          received=f"{type(exc).__name__}: {exc}", hint=hint) from None


def describe(response: httpx.Response) -> str:
    """`HTTP 503, server: envoy, body 'upstream connect error...'`"""
    body = response.text.strip().replace("\n", " ")
    if len(body) > 80:
        body = body[:77] + "..."
    headers = ", ".join(f"{k}: {v}" for k, v in list(response.headers.items())[:_SHOWN_HEADERS]
                        if k not in ("date", "content-length"))
    return f"HTTP {response.status_code}; {headers}; body {body!r}"


def responds_with_status(response: httpx.Response, status: int, *, hint: str | None = None) -> None:
    if response.status_code != status:
        raise CheckFailed(f"{response.request.url} answered {response.status_code}, not {status}",
                          expected=f"HTTP {status}", received=describe(response), hint=hint)


def responds_with_body(response: httpx.Response, text: str, *, hint: str | None = None) -> None:
    """The body, stripped of surrounding whitespace, equals TEXT."""
    if response.text.strip() != text.strip():
        raise CheckFailed(f"{response.request.url} answered with another body",
                          expected=repr(text.strip()), received=describe(response), hint=hint)


def responds_with_header(response: httpx.Response, name: str, value: str | None = None, *,
                         hint: str | None = None) -> str:
    """The response carries header NAME (with VALUE, if given); returns its value."""
    got = response.headers.get(name)
    if got is None or (value is not None and got != value):
        expected = f"{name}: {value}" if value is not None else f"a {name} header"
        received = f"{name}: {got}" if got is not None else f"no {name} header ({describe(response)})"
        raise CheckFailed(f"the response {'lacks' if got is None else 'has another'} {name}",
                          expected=expected, received=received, hint=hint)
    return got


def lacks_header(response: httpx.Response, name: str, *, hint: str | None = None) -> None:
    if name in response.headers:
        raise CheckFailed(f"the response should not carry {name}",
                          expected=f"no {name} header", received=f"{name}: {response.headers[name]}", hint=hint)
