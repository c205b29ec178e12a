"""The mTLS inspector: try a TLS client against a server, and say why it was turned away.

A server Envoy that rejects a client during the handshake sends a TLS alert, and
counts the reason in its listener's `ssl.*` counters. We read both: the alert the
client received (classified below) and the counters that moved on the server, which
confirm the reason. The counter has the last word: with TLS 1.2 a missing client
certificate is a generic `handshake_failure` alert, and Envoy's SPIFFE certificate
validator answers an unknown CA with `certificate_unknown` (and, with TLS 1.3, closes
without any alert); only the counter says what it was.

    certificate_required (TLS 1.3) / handshake_failure (1.2)  ssl.fail_verify_no_cert
    unknown_ca                                                ssl.fail_verify_error
    certificate_unknown                                       ssl.fail_verify_san

Envoy counts a failed handshake after it has sent the alert, so a client can hold
the alert before the counter has moved: after a refusal we read the counters until a
verdict counter moves (for up to two seconds), instead of once.

One probe per TLS version. With TLS 1.3 the client's handshake completes before the
server has checked the client's certificate, so the verdict arrives later; a client
that sends its request at once may see the connection reset instead of the alert
(curl's exit code then varies). So after a 1.3 handshake we first wait for the
server's first word (its session tickets, or the alert) and only then send the
request: the verdict is the same on every run.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from meshlab import certs
from meshlab.envoy import Admin
from meshlab.errors import EnvironmentProblem

VERSIONS = {"1.3": ssl.TLSVersion.TLSv1_3, "1.2": ssl.TLSVersion.TLSv1_2}
SSL_COUNTERS = r"^listener\..*\.ssl\."


@dataclass(frozen=True)
class Reason:
    """Why a server turned a client away: the words, the alerts, the counter."""

    key: str
    words: str
    alerts: frozenset[str]
    counter: str | None


REASONS = {
    "no-certificate": Reason("no-certificate", "the client presented no certificate",
                             frozenset({"TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE"}),
                             "fail_verify_no_cert"),
    "unknown-ca": Reason("unknown-ca", "the client's certificate is from a CA the server does not trust",
                         frozenset({"TLSV1_ALERT_UNKNOWN_CA"}), "fail_verify_error"),
    "wrong-identity": Reason("wrong-identity", "the client's certificate names an identity the server does not accept",
                             frozenset({"SSLV3_ALERT_CERTIFICATE_UNKNOWN"}), "fail_verify_san"),
    "not-tls": Reason("not-tls", "the client did not speak TLS", frozenset(), "connection_error"),
}

# OpenSSL's names for alerts a client receives, in words.
ALERT_WORDS = {
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "certificate_required (the server wants a client certificate)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "handshake_failure",
    "TLSV1_ALERT_UNKNOWN_CA": "unknown_ca (the server does not trust the certificate's CA)",
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": "certificate_unknown (the server refused the certificate)",
    "SSLV3_ALERT_BAD_CERTIFICATE": "bad_certificate",
    "TLSV1_ALERT_PROTOCOL_VERSION": "protocol_version (the server refuses this TLS version)",
    "TLSV1_ALERT_DECRYPT_ERROR": "decrypt_error",
    "TLSV1_ALERT_ACCESS_DENIED": "access_denied",
}
_NOT_TLS = {"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST", "PACKET_LENGTH_TOO_LONG",
            "UNKNOWN_PROTOCOL"}
_VERSION_REFUSED = {"TLSV1_ALERT_PROTOCOL_VERSION", "UNSUPPORTED_PROTOCOL", "NO_PROTOCOLS_AVAILABLE",
                    "TLSV1_ALERT_INTERNAL_ERROR"}


@dataclass
class Attempt:
    """One client connection and what became of it."""

    tls: str | None                 # the TLS version asked for ("1.3", "1.2"), None = plaintext
    outcome: str                    # accepted | rejected | not-tls | version-refused | refused | closed | timeout
    alert: str | None = None        # OpenSSL's name for the alert received, if any
    version: str | None = None      # the version negotiated
    status: int | None = None       # HTTP status, when a response came back
    body: bytes = b""
    server_ids: list[str] = field(default_factory=list)  # URI SANs of the server's certificate
    detail: str = ""
    counters: dict[str, int] = field(default_factory=dict)  # server ssl counters that moved (suffix -> delta)
    counters_read: bool = False     # whether the server's counters were read at all

    @property
    def alert_words(self) -> str | None:
        return ALERT_WORDS.get(self.alert, self.alert) if self.alert else None

    @property
    def reason_by_alert(self) -> Reason | None:
        """What the alert suggests (the client's view; a guess where alerts are generic)."""
        for reason in REASONS.values():
            if self.alert in reason.alerts or (reason.key == "not-tls" and self.tls is None and self.counters):
                return reason
        return None

    @property
    def reason_by_counter(self) -> Reason | None:
        """What the server counted: the one verdict counter that moved, if exactly one did."""
        moved = [r for r in REASONS.values() if self.counters.get(r.counter, 0) > 0]
        return moved[0] if len(moved) == 1 else None

    @property
    def reason(self) -> Reason | None:
        """Why the client was turned away: the server's own count when we read it (it
        is authoritative), else the alert's suggestion."""
        if self.counters_read:
            return self.reason_by_counter
        return self.reason_by_alert

    @property
    def confirmed(self) -> bool:
        """The alert and the server's counter name the same reason."""
        return self.reason_by_counter is not None and self.reason_by_counter == self.reason_by_alert

    def describe(self) -> str:
        """One line for a learner: what the client saw and what the server counted."""
        asked = f"TLS {self.tls}" if self.tls else "plaintext HTTP"
        if self.outcome == "accepted":
            text = f"{asked}: accepted" + (f" ({self.version})" if self.version else "") + f", HTTP {self.status}"
        elif self.outcome == "rejected":
            text = f"{asked}: rejected in the handshake with alert {self.alert_words}"
        elif self.outcome == "closed" and self.tls and self.counters:
            text = f"{asked}: the server closed the connection in the handshake without an alert"
        else:
            text = f"{asked}: {self.outcome}" + (f" ({self.detail})" if self.detail else "")
        if self.counters:
            text += "; server counted " + ", ".join(f"ssl.{k} +{v}" for k, v in sorted(self.counters.items()))
        return text

    def to_json(self) -> dict:
        reason = self.reason
        return {"tls": self.tls, "outcome": self.outcome, "alert": self.alert, "alert_words": self.alert_words,
                "version": self.version, "status": self.status, "server_ids": self.server_ids,
                "detail": self.detail, "counters": self.counters, "reason": reason.key if reason else None,
                "reason_words": reason.words if reason else None, "confirmed": self.confirmed}


def client_context(tls: str, svid: Path | None = None) -> ssl.SSLContext:
    """A client that presents SVID (a folder with svid.pem and svid_key.pem, or none)
    and accepts any server: we test the server's verdict on us, not ours on it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = VERSIONS[tls]
    if svid is not None:
        svid = Path(svid)
        context.load_cert_chain(svid / certs.SVID_CERT, svid / certs.SVID_KEY)
    return context


def _request(path: str) -> bytes:
    return f"GET {path} HTTP/1.1\r\nhost: meshlab-probe\r\nconnection: close\r\n\r\n".encode()


def _read_response(read) -> tuple[int | None, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = read()
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    parts = head.split(b" ", 2)
    status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return status, body


def try_tls(host: str, port: int, *, tls: str = "1.3", svid: Path | None = None, path: str = "/",
            timeout: float = 5.0) -> Attempt:
    """Connect with TLS (at most version TLS), present SVID, send GET PATH."""
    attempt = Attempt(tls=tls, outcome="closed")
    context = client_context(tls, svid)
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except ConnectionRefusedError:
        attempt.outcome, attempt.detail = "refused", f"nothing listens on {host}:{port}"
        return attempt
    except OSError as exc:
        attempt.outcome, attempt.detail = "refused", str(exc)
        return attempt
    conn = context.wrap_socket(raw, do_handshake_on_connect=False)
    try:
        conn.do_handshake()
        attempt.version = conn.version()
        attempt.server_ids = _uri_sans(conn.getpeercert(binary_form=True))
        if attempt.version == "TLSv1.3":
            _await_server(conn, timeout)
        conn.sendall(_request(path))
        attempt.status, attempt.body = _read_response(lambda: conn.recv(65536))
        attempt.outcome = "accepted" if attempt.status is not None else "closed"
        if attempt.status is None:
            attempt.detail = "the server closed the connection without an HTTP response"
    except ssl.SSLError as exc:
        _classify_ssl_error(attempt, exc)
    except socket.timeout:
        attempt.outcome, attempt.detail = "timeout", f"no answer within {timeout:.0f} s"
    except (ConnectionResetError, BrokenPipeError) as exc:
        attempt.outcome, attempt.detail = "closed", f"the server reset the connection ({exc.strerror})"
    finally:
        conn.close()
    return attempt


def _await_server(conn: ssl.SSLSocket, timeout: float) -> None:
    """After a TLS 1.3 handshake: wait until the server speaks first (session tickets
    when it accepted us, an alert when it did not), reading without sending. A server
    that sends no tickets costs at most a short wait."""
    deadline = time.monotonic() + min(timeout, 1.0)
    conn.setblocking(False)
    try:
        while time.monotonic() < deadline:
            readable, _, _ = select.select([conn], [], [], max(0.0, deadline - time.monotonic()))
            if not readable:
                break
            try:
                if conn.recv(65536) == b"":
                    raise ConnectionResetError(0, "closed before any request")
            except ssl.SSLWantReadError:
                return  # tickets (or nothing) read, no alert: the server accepted us
    finally:
        conn.setblocking(True)
        conn.settimeout(timeout)


def _classify_ssl_error(attempt: Attempt, exc: ssl.SSLError) -> None:
    reason = getattr(exc, "reason", None) or ""
    attempt.alert = reason if "ALERT" in reason else None
    if reason in _NOT_TLS:
        attempt.outcome, attempt.detail = "not-tls", "the server answered something that is not TLS"
    elif reason in _VERSION_REFUSED:
        attempt.outcome, attempt.detail = "version-refused", f"the server does not speak TLS {attempt.tls}"
    elif attempt.alert:
        attempt.outcome = "rejected"
    elif isinstance(exc, ssl.SSLEOFError) or "EOF" in str(exc):
        attempt.outcome, attempt.detail = "closed", "the server closed the connection during the handshake"
    else:
        attempt.outcome, attempt.detail = "closed", f"TLS error {reason or exc}"


def try_plaintext(host: str, port: int, *, path: str = "/", timeout: float = 5.0) -> Attempt:
    """Send a plain HTTP request where TLS is expected."""
    attempt = Attempt(tls=None, outcome="closed")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(_request(path))
            attempt.status, attempt.body = _read_response(lambda: sock.recv(65536))
    except ConnectionRefusedError:
        attempt.outcome, attempt.detail = "refused", f"nothing listens on {host}:{port}"
        return attempt
    except socket.timeout:
        attempt.outcome, attempt.detail = "timeout", f"no answer within {timeout:.0f} s"
        return attempt
    except (ConnectionResetError, BrokenPipeError):
        attempt.detail = "the server reset the connection"
        return attempt
    if attempt.status is not None:
        attempt.outcome = "accepted"
    else:
        attempt.detail = "the server closed the connection without an HTTP response"
    return attempt


def server_counters(admin: Admin) -> dict[str, int]:
    """The server's listener ssl counters summed over its listeners, by suffix
    (`fail_verify_san`, ...), so they do not depend on listener names."""
    totals: dict[str, int] = {}
    try:
        stats = admin.stats(SSL_COUNTERS)
    except httpx.HTTPError as exc:
        raise EnvironmentProblem(f"cannot read the server Envoy's counters at {admin.base_url}: {exc}",
                                 fix="give the admin address of the Envoy that serves the port (like "
                                     "http://127.0.0.1:9902), or leave out --admin") from None
    for name, value in stats.items():
        suffix = name.split(".ssl.", 1)[1]
        totals[suffix] = totals.get(suffix, 0) + value
    return totals


def probe(host: str, port: int, *, tls: str | None = "1.3", svid: Path | None = None, admin: Admin | None = None,
          path: str = "/", timeout: float = 5.0, settle: float = 2.0) -> Attempt:
    """One attempt (TLS None means plaintext), with the server's counters that moved."""
    before = server_counters(admin) if admin else {}
    if tls is None:
        attempt = try_plaintext(host, port, path=path, timeout=timeout)
    else:
        attempt = try_tls(host, port, tls=tls, svid=svid, path=path, timeout=timeout)
    if admin is not None:
        # Envoy may count a failed handshake just after it sent the alert: a refused
        # client waits (up to SETTLE seconds) until a verdict counter has moved.
        verdicts = {r.counter for r in REASONS.values()}
        deadline = time.monotonic() + (settle if attempt.outcome in ("rejected", "closed", "not-tls") else 0)
        while True:
            after = server_counters(admin)
            attempt.counters = {k: after[k] - before.get(k, 0) for k in after
                                if after[k] != before.get(k, 0) and _interesting(k)}
            if verdicts & set(attempt.counters) or time.monotonic() >= deadline:
                break
            time.sleep(0.01)
        attempt.counters_read = True
    return attempt


def _interesting(counter: str) -> bool:
    # Cipher, curve and signature-algorithm counters say nothing about a verdict.
    return not counter.startswith(("ciphers.", "curves.", "sigalgs.", "versions."))


def _uri_sans(der: bytes | None) -> list[str]:
    if not der:
        return []
    from cryptography import x509

    try:
        cert = x509.load_der_x509_certificate(der)
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (ValueError, x509.ExtensionNotFound):
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)
