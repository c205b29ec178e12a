"""Lab 10 — a proxy-wasm filter that masks personal data in response bodies.

The specification (README), on responses whose content-type is text/*, application/json
or */*+json, in this order over the whole body:
  1. e-mail: a run of [A-Za-z0-9._%+-] right before an @ followed by a letter or digit
     becomes ***;
  2. phone: + then 8 to 15 digits, single spaces or hyphens allowed between two digits,
     becomes [phone];
  3. card: a run of 13 to 19 digits (no digit around it) that passes Luhn keeps its last
     four digits, the others become *.
The response trailer x-pii-masked carries how many were masked; other content types
pass byte for byte. The checks put bodies into the app (POST /echo, shaped by x-serve-*
headers), fetch them through Envoy with a plain HTTP/1.1 client that reads trailers, and
compare with the specification computed here; Envoy's own counters and log say whether
the module ran and whether it panicked.
"""

from __future__ import annotations

import re
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import h11
import pytest

from meshlab.grading import check, fail

pytestmark = pytest.mark.lab("10-wasm")

LIMIT = 65536                   # per_connection_buffer_limit_bytes in envoy.yaml
MASK_HINT = ("mask(): e-mails (local part -> ***), then phones (+ and 8-15 digits -> [phone]), then cards "
             "(13-19 digits passing Luhn keep their last four); see the specification's examples")
CHUNK_HINT = ("return Action::Pause from on_http_response_body until end_of_stream, then mask "
              "get_http_response_body(0, body_size): Envoy keeps every chunk you paused on")


# -- the specification, in Python ---------------------------------------------------

EMAIL = re.compile(rb"[A-Za-z0-9._%+-]+(?=@[A-Za-z0-9])")
PHONE = re.compile(rb"\+\d(?:[ -]?\d)*")
CARD = re.compile(rb"(?<!\d)\d{13,19}(?!\d)")


def luhn(digits: bytes) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = char - 48
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def mask(body: bytes) -> tuple[bytes, int]:
    count = 0

    def email(_match: re.Match) -> bytes:
        nonlocal count
        count += 1
        return b"***"

    def phone(match: re.Match) -> bytes:
        nonlocal count
        if 8 <= sum(c.isdigit() for c in match.group().decode()) <= 15:
            count += 1
            return b"[phone]"
        return match.group()

    def card(match: re.Match) -> bytes:
        nonlocal count
        digits = match.group()
        if luhn(digits):
            count += 1
            return b"*" * (len(digits) - 4) + digits[-4:]
        return digits

    body = EMAIL.sub(email, body)
    body = PHONE.sub(phone, body)
    return CARD.sub(card, body), count


def is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith("text/") or media == "application/json" or media.endswith("+json")


# -- the bodies ---------------------------------------------------------------------

@dataclass(frozen=True)
class Body:
    name: str
    content_type: str
    data: bytes
    cuts: tuple[int, ...] = ()        # chunk boundaries when served chunked
    pause_ms: int = 30                # between chunks: Envoy reads each one on its own

    @property
    def expected(self) -> tuple[bytes, int]:
        return mask(self.data) if is_text(self.content_type) else (self.data, 0)


BATTERY = [
    Body("plain text", "text/plain; charset=utf-8",
         b"Card 4111111111111111 expires 12/27.\nCall +1 555-123-4567 or write to ada.lovelace@example.com.\n"),
    Body("JSON", "application/json",
         b'{"card":"5500005555555559","email":"bob+news@mail.example.org","phone":"+4915112345678","id":"42"}'),
    Body("JSON list of cards", "application/json; charset=utf-8",
         b'{"cards":["378282246310005","4222222222222","6011111111111117"],"owner":"Jo"}'),
    Body("HTML", "text/html",
         b'<p>Contact <a href="mailto:eve@example.net">eve@example.net</a>, phone +44 20 7946 0958.</p>\n'),
    Body("problem+json", "application/problem+json",
         b'{"title":"declined","detail":"card 4012888888881881 was declined; ask billing@example.com"}'),
    Body("UTF-8 text", "text/plain; charset=utf-8",
         "Zahlung für Jürgen Groß: Karte 3530111333300000, Rückfragen +49 30 1234567.\n".encode()),
]

LUHN_BODY = Body("cards and look-alikes", "text/plain",
                 b"valid 4111111111111111; not Luhn 4111111111111112 and 1234567812345678; "
                 b"valid 4000056655665556; too short 79927398713; too long 41111111111111111115; "
                 b"order no. 1234567890123.\n")


def _cut_inside(data: bytes, *needles: bytes) -> tuple[int, ...]:
    """Chunk boundaries in the middle of each NEEDLE: a filter that masks per chunk
    sees each half alone."""
    return tuple(sorted(data.index(n) + len(n) // 2 for n in needles))


_SPLIT_TEXT = (b"Ticket 7781: card 4111111111111111 was charged twice; the customer, "
               b"ada.lovelace@example.com, asks for a call back on +1 555-123-4567.\n")
_SPLIT_JSON = b'{"customer":{"email":"bob@example.org","cards":["5500005555555559","378282246310005"]}}'
SPLIT = [
    Body("text, each item cut in two", "text/plain", _SPLIT_TEXT,
         _cut_inside(_SPLIT_TEXT, b"4111111111111111", b"ada.lovelace@", b"555-123-4567")),
    Body("JSON, cards cut in two", "application/json", _SPLIT_JSON,
         _cut_inside(_SPLIT_JSON, b"5500005555555559", b"378282246310005")),
    Body("text, many small chunks", "text/plain", _SPLIT_TEXT, tuple(range(7, len(_SPLIT_TEXT), 7))),
]

_PII = b"card 4111111111111111, mail ada@example.com, phone +1 555 123 4567\n"
BINARY = [
    Body("octet-stream", "application/octet-stream", _PII * 3),
    Body("PNG", "image/png", bytes.fromhex("89504e470d0a1a0a0000000d49484452") + _PII + bytes(range(256))),
    Body("PDF", "application/pdf", b"%PDF-1.4\n" + _PII + b"%%EOF\n"),
]
TEXT_TWINS = [Body("upper-case TEXT/PLAIN", "TEXT/PLAIN; charset=UTF-8", _PII * 3),
              Body("JSON string", "application/json", b'"' + _PII.strip() + b'"')]


# -- a plain HTTP/1.1 client that reads trailers ---------------------------------------

@dataclass
class Reply:
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    trailers: dict[str, str] = field(default_factory=dict)
    complete: bool = False          # the message ended as HTTP/1.1 framing says
    problem: str | None = None      # why it did not (closed early, timed out, malformed)

    def describe(self) -> str:
        if self.status is None:
            return f"no response ({self.problem})"
        text = f"HTTP {self.status}, {len(self.body)} body bytes"
        return text + ("" if self.complete else f", incomplete: {self.problem}")


def fetch(lab, body: Body, *, chunked: bool = True, timeout: float = 5.0) -> Reply:
    """POST BODY to the app's /echo through Envoy (its listener port from lab.yaml); the
    app serves it back chunked at BODY.cuts (or in one piece with a content-length)."""
    envoy = ("127.0.0.1", lab.port("envoy", "listener"))
    headers = [("host", f"{envoy[0]}:{envoy[1]}"), ("te", "trailers"), ("connection", "close"),
               ("x-serve-content-type", body.content_type), ("content-length", str(len(body.data)))]
    if chunked:
        headers += [("x-serve-chunks", ",".join(map(str, body.cuts))), ("x-serve-pause-ms", str(body.pause_ms))]
    connection = h11.Connection(h11.CLIENT)
    reply, parts = Reply(), []
    try:
        with socket.create_connection(envoy, timeout=timeout) as sock:
            sock.sendall(connection.send(h11.Request(method="POST", target="/echo", headers=headers)))
            sock.sendall(connection.send(h11.Data(data=body.data)) + connection.send(h11.EndOfMessage()))
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    connection.receive_data(sock.recv(65536))
                    continue
                if isinstance(event, h11.Response):
                    reply.status = event.status_code
                    reply.headers = {k.decode().lower(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    parts.append(bytes(event.data))
                elif isinstance(event, h11.EndOfMessage):
                    reply.trailers = {k.decode().lower(): v.decode() for k, v in event.headers}
                    reply.complete = True
                    break
                elif isinstance(event, h11.ConnectionClosed):
                    reply.problem = "the connection closed"
                    break
    except socket.timeout:
        reply.problem = f"nothing more arrived for {timeout:.0f} s (the client still waits for the body)"
    except (h11.RemoteProtocolError, OSError) as error:
        reply.problem = f"{type(error).__name__}: {error}"
    finally:
        reply.body = b"".join(parts)
    return reply


def fetch_all(lab, bodies: list[Body], **options) -> list[Reply]:
    """`fetch` each of BODIES, all at once on connections of their own: each keeps its
    own pauses between chunks, and the check waits for the slowest, not for the sum."""
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        return list(pool.map(lambda body: fetch(lab, body, **options), bodies))


def _show(data: bytes, limit: int = 160) -> str:
    text = data.decode("utf-8", "replace")
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _first_difference(got: bytes, want: bytes) -> str:
    at = next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
    start = max(0, at - 30)
    return f"from byte {at}: got {_show(got[start:at + 40])}, specified {_show(want[start:at + 40])}"


def _served(body: Body, reply: Reply) -> None:
    """Fail unless BODY came back as a complete 200: anything else (Envoy's own 503
    after a panic, a stream cut short) says nothing about the masking, and the hint
    must say so rather than blame the masking, the trailer or the content type."""
    if not reply.complete or reply.status != 200:
        expected, _ = body.expected
        fail(f"the {body.name} body did not arrive whole through Envoy",
             expected=f"HTTP 200 and the whole {'masked ' if is_text(body.content_type) else ''}body "
                      f"({len(expected)} bytes)",
             received=reply.describe(), hint=_broken_hint(reply))


def _compare(bodies: list[Body], replies: list[Reply], *, what: str, hint: str) -> None:
    """Fail with the first body that is not exactly as specified."""
    for body, reply in zip(bodies, replies):
        expected, _ = body.expected
        _served(body, reply)
        if reply.body != expected:
            leaked = [m.group().decode() for m in CARD.finditer(reply.body) if luhn(m.group())]
            fail(f"the {body.name} body ({body.content_type}) is not masked as specified" +
                 (f": {what}" if what else ""),
                 expected=_show(expected), received=_show(reply.body) + "; " + _first_difference(reply.body, expected)
                 + (f"; card numbers left readable: {', '.join(leaked)}" if leaked else ""),
                 hint=hint)


def _broken_hint(reply: Reply) -> str:
    if reply.status == 503:
        return ("Envoy answered 503 itself: after a panic the module's VM is gone and every later request "
                "fails (the last check shows the panic)")
    if reply.status == 200 and not reply.complete:
        return ("the response stopped half-way: a panic in a body callback ends the stream (the last check "
                "shows it), and so does a content-length that no longer matches the body")
    return "the app answers 200 to every POST /echo: anything else came from Envoy or the filter"


# -- the checks ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def battery(lab) -> list[Reply]:
    return fetch_all(lab, BATTERY)


@check("Cards, e-mails and phone numbers in text and JSON bodies are masked as specified", hint=MASK_HINT)
def test_text_bodies_masked(battery):
    _compare(BATTERY, battery, what="", hint=MASK_HINT)


@check("Only numbers that pass the Luhn check are masked",
       hint="a card number is a run of 13 to 19 digits whose Luhn sum is a multiple of 10; every other run of "
            "digits stays as it is")
def test_only_luhn_numbers(lab):
    reply = fetch(lab, LUHN_BODY)
    expected, _ = LUHN_BODY.expected
    _served(LUHN_BODY, reply)
    if reply.body != expected:
        untouchable = [m.group() for m in re.finditer(rb"\d+", LUHN_BODY.data)
                       if not (13 <= len(m.group()) <= 19 and luhn(m.group()))]
        masked_wrongly = [n.decode() for n in untouchable if n not in reply.body]
        fail("digits were masked where the specification leaves them, or left where it masks them",
             expected=_show(expected), received=_show(reply.body),
             hint=(f"{', '.join(masked_wrongly)} fail the Luhn check or the 13-19 digit rule, yet were masked: "
                   "check both before masking") if masked_wrongly else
                  "mask the Luhn-valid runs of 13 to 19 digits, keeping their last four digits")
    _compare([LUHN_BODY], [reply], what="", hint=MASK_HINT)


@check("The trailer x-pii-masked counts what was masked",
       hint="count what you masked and send the count as the trailer x-pii-masked from the last body "
            "callback (a header can no longer change by then)")
def test_count_trailer(battery):
    for body, reply in zip(BATTERY, battery):
        _served(body, reply)
    wrong = []
    for body, reply in zip(BATTERY, battery):
        _, count = body.expected
        got = reply.trailers.get("x-pii-masked", reply.headers.get("x-pii-masked"))
        if got != str(count):
            wrong.append(f"{body.name}: {got!r} (specified {count})")
    if wrong:
        in_headers = any("x-pii-masked" in r.headers for r in battery)
        fail(f"{len(wrong)} of {len(BATTERY)} responses carry a wrong or no x-pii-masked trailer",
             expected="a trailer x-pii-masked: N, N the number of items masked in the body",
             received="; ".join(wrong[:3]) + (f" (and {len(wrong) - 3} more)" if len(wrong) > 3 else ""),
             hint=("the count came as a header: it has to be a trailer, added once the whole body is seen")
                  if in_headers else None)


@check("A number cut across two body chunks is still masked", hint=CHUNK_HINT)
def test_split_across_chunks(lab):
    replies = fetch_all(lab, SPLIT)
    _compare(SPLIT, replies, what="the app sent it in several chunks, cut in the middle of the items",
             hint=CHUNK_HINT)


@check("Responses the app sends with a content-length arrive whole and masked",
       hint="the masked body is shorter than the original: remove content-length in on_http_response_headers "
            "(set_http_response_header(\"content-length\", None)), so Envoy frames the new body itself")
def test_content_length_bodies(lab):
    replies = [fetch(lab, body, chunked=False, timeout=3.0) for body in BATTERY[:3]]
    for body, reply in zip(BATTERY[:3], replies):
        expected, _ = body.expected
        if not reply.complete or reply.body != expected:
            length = reply.headers.get("content-length")
            stale = reply.status == 200 and length is not None and int(length) != len(expected)
            fail(f"the {body.name} body, sent by the app with content-length {len(body.data)}, arrived broken",
                 expected=f"HTTP 200 with the whole masked body ({len(expected)} bytes) and no stale "
                          f"content-length", received=f"{reply.describe()}; content-length: {length}; body "
                                                      f"{_show(reply.body, 100)}",
                 hint=None if stale or reply.status == 200 else _broken_hint(reply))


@check("Binary bodies pass byte for byte; the same bytes as text are masked",
       hint="decide by content-type: text/*, application/json and */*+json (ignoring case and parameters) are "
            "masked; everything else passes untouched, without a trailer")
def test_binary_untouched(lab):
    replies = fetch_all(lab, BINARY + TEXT_TWINS)
    for body, reply in zip(BINARY, replies):
        _served(body, reply)
        if reply.body != body.data or "x-pii-masked" in reply.trailers:
            fail(f"the {body.name} body ({body.content_type}) was changed",
                 expected=f"the {len(body.data)} bytes the app sent, unchanged, no x-pii-masked",
                 received=f"{reply.describe()}; {_first_difference(reply.body, body.data)}")
    _compare(TEXT_TWINS, replies[len(BINARY):], what="the content-type says text",
             hint="text/*, application/json and */*+json, compared without case and without ;parameters")


@check("A text body over the buffer limit never reaches the client unmasked",
       hint="buffer the body (Action::Pause until end_of_stream): past the limit Envoy ends the response "
            "itself, before any of the body left; a filter that lets chunks through leaks them")
def test_over_the_limit(lab):
    unit = b"card 4111111111111111 on file, account 12345. " * 40
    repeat = LIMIT // len(unit) * 3
    # Every chunk ends inside a card number: whatever a filter lets through leaks.
    big = Body("large", "text/plain", unit * repeat, tuple(i * len(unit) + 12 for i in range(1, repeat)),
               pause_ms=2)
    with lab.envoy().delta(r"\.rs_too_large$") as overflow:
        reply = fetch(lab, big, timeout=5.0)
    readable = [m.group() for m in CARD.finditer(reply.body) if luhn(m.group())]
    expected, _ = big.expected
    stopped = sum(overflow.changed().values()) >= 1 and not reply.complete
    if reply.status not in (200, None) and not readable:
        _served(big, reply)
    if readable or not (stopped or (reply.complete and reply.body == expected)):
        fail(f"a {len(big.data)} byte text body (the limit is {LIMIT}) reached the client "
             + ("with readable card numbers" if readable else "neither stopped nor masked"),
             expected="Envoy stops the response (rs_too_large +1) before any body byte, or the whole body "
                      "arrives masked", received=f"{reply.describe()}; {len(readable)} readable card numbers; "
                                                 f"rs_too_large +{sum(overflow.changed().values())}")


@check("Envoy ran your module on a text body in V8 and it never panicked",
       hint="read Envoy's log (meshlab start 10 names it): a panic shows as `panicked at` with the file and "
            "line, followed by Envoy's `Function: proxy_on_... failed`")
def test_loaded_without_panic(lab):
    created = lab.envoy().stats(r"^wasm\.envoy\.wasm\.runtime\.v8\.created$")
    if not any(created.values()):
        fail("Envoy did not create a V8 Wasm VM", expected="wasm.envoy.wasm.runtime.v8.created >= 1",
             received=", ".join(f"{k}: {v}" for k, v in created.items()) or "no such stat",
             hint="keep the envoy.filters.http.wasm filter of envoy.yaml, with runtime envoy.wasm.runtime.v8")
    # No panic means something only once the module's own code ran on a body: one more
    # text body, which a module that does anything changes (or adds its trailer to). Plain
    # application/json, without parameters: even a content-type test too strict for
    # `text/plain; charset=...` (which the masking checks catch) takes it for text.
    sample = BATTERY[1]
    reply = fetch(lab, sample)
    # Since this Envoy started (the log keeps earlier runs, each after a start marker).
    log = lab.runtime.log_path("envoy").read_text(errors="replace").rsplit("--- meshlab: starting envoy", 1)[-1]
    panics = [line for line in log.splitlines()
              if "panicked at" in line or re.search(r"Function: proxy_on_\w+ failed", line)]
    if panics:
        times = sum("panicked at" in p for p in panics) or len(panics)
        fail(f"the module panicked {times} time{'s' if times > 1 else ''} during the checks", expected="no panic, no failed Wasm call in Envoy's log",
             received=" | ".join(p.split("]", 4)[-1].strip() for p in panics[:2]))
    _served(sample, reply)
    if reply.body == sample.data and "x-pii-masked" not in reply.trailers:
        fail("your module loaded but left a text body as the app sent it: none of your code has acted on a body "
             "yet, so that it never panicked proves nothing so far",
             expected=f"the {sample.name} body ({sample.content_type}) changed by the module, or carrying its "
                      "x-pii-masked trailer",
             received=f"{reply.describe()}: the {len(sample.data)} bytes the app sent, unchanged, no trailer",
             hint="this check passes once on_http_response_body masks text bodies (steps 3 and 4); it is "
                  "here to catch a panic of the code you write there")
