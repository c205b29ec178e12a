"""Lab 04 — mutual TLS between two sidecars, with SPIFFE identities.

app-a -> sidecar-a (:10000, plain HTTP) -> mutual TLS -> sidecar-b (:10443) -> app-b.

The checks decide from real handshakes and what Envoy reports: the certificates each
Envoy loaded (admin `/certs`), the TLS alert a test client receives and the server's
`ssl.*` counters that moved (the mTLS inspector, `meshlab.mtls`), and the
x-forwarded-client-cert header app-b actually received (its journal). Every rejection
is tried with TLS 1.3 and with TLS 1.2 and must be for its own reason in both.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import uuid
from pathlib import Path

import pytest

from meshlab import certs, mtls
from meshlab.apps.identity import callers
from meshlab.grading import check, describe, fail

pytestmark = pytest.mark.lab("04-mtls")

TRUST_DOMAIN = "cluster.local"
ID_A = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/app-a"
ID_B = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/app-b"
ID_OTHER = f"spiffe://{TRUST_DOMAIN}/ns/default/sa/mallory"
CERTS_HINT = "step 2: certs.sh makes certs/ca, certs/app-a and certs/app-b (meshlab runs it before each check)"
SERVER_HINT = ("step 3: sidecar-b's filter chain needs a transport_socket with a DownstreamTlsContext: "
               "require_client_certificate: true, app-b's SVID, trusted_ca certs/ca/ca.pem and a URI SAN match "
               f"on {ID_A}")


# -- the lab's ports, from its manifest ------------------------------------------

def mtls_port(lab) -> int:
    """sidecar-b's mutual-TLS listener."""
    return lab.port("sidecar-b", "mtls")


def relay_hint(lab) -> str:
    return f"app-a (:{lab.port('app-a')}) relays to sidecar-a on :{lab.port('sidecar-a', 'outbound')}"


# -- test clients ----------------------------------------------------------------

@pytest.fixture(scope="module")
def clients(lab, tmp_path_factory) -> dict[str, Path]:
    """SVID folders for test clients: app-a's ID from a foreign CA, and another ID from
    the mesh CA (made with the learner's CA key, as any mesh workload's would be)."""
    folder = tmp_path_factory.mktemp("clients")
    foreign = certs.create_ca(folder / "foreign-ca", trust_domain=TRUST_DOMAIN)
    made = {"foreign": certs.issue_svid(foreign, ID_A, folder / "foreign").folder}
    try:
        mesh = certs.load_ca(lab.dir / "certs" / "ca")
    except certs.CertError as error:
        made["mesh_error"] = error.message  # reported by the checks that need it
    else:
        made["mallory"] = certs.issue_svid(mesh, ID_OTHER, folder / "mallory").folder
        made["impostor"] = certs.issue_svid(mesh, f"spiffe://{TRUST_DOMAIN}/ns/default/sa/impostor",
                                            folder / "impostor").folder
    return made


def mesh_client(clients: dict, name: str) -> Path:
    if name not in clients:
        fail("the checker cannot make a certificate from your mesh CA",
             expected="the mesh CA in certs/ca (ca.pem and ca_key.pem)",
             received=clients.get("mesh_error", "no CA"), hint=CERTS_HINT)
    return clients[name]


# -- certificates loaded ---------------------------------------------------------

def _contexts(admin) -> list[dict]:
    return admin.get("/certs").json().get("certificates", [])


def _uris(entries: list[dict]) -> list[str]:
    return [san["uri"] for entry in entries for san in entry.get("subject_alt_names", []) if "uri" in san]


def _stale_svid_hint(lab, app: str, identity: str) -> str | None:
    """Why the SVID on disk names another ID than IDENTITY, when certs.sh explains it:
    the script issues IDENTITY now, but its guard kept a certificate made before."""
    try:
        on_disk = certs.inspect(lab.dir / "certs" / app / certs.SVID_CERT).spiffe_id
        script = (lab.dir / "certs.sh").read_text()
    except (certs.CertError, OSError):
        return None
    issued = set(re.findall(r"spiffe://[^\s\"'`]+", script))
    if on_disk is None or on_disk == identity:
        return None
    if identity in issued and on_disk not in issued:
        return (f"certs/{app}/{certs.SVID_CERT} on disk names {on_disk}, but certs.sh issues {identity}: its guard "
                "kept a certificate that is valid but made for the old ID. Let the guard compare the ID "
                "(meshlab certs inspect FILE --ca certs/ca --spiffe-id ID --valid-for 1h), or delete certs/ once")
    return f"certs/{app}/{certs.SVID_CERT} names {on_disk}: certs.sh must issue {identity} for {app}"


@check("Each sidecar holds its workload's SVID and trusts the mesh CA",
       hint="steps 2, 3 and 4: make the certificates, then give each Envoy its own SVID (tls_certificates) "
            "and the mesh CA (validation_context.trusted_ca)")
def test_sidecars_hold_svids(lab):
    for sidecar, identity, step in (("sidecar-b", ID_B, 3), ("sidecar-a", ID_A, 4)):
        contexts = _contexts(lab.envoy(sidecar))
        held = [uri for c in contexts for uri in _uris(c.get("cert_chain", [])[:1])]
        if not contexts:
            fail(f"{sidecar} holds no certificate: it has no TLS context yet",
                 expected=f"{sidecar} loaded an SVID for {identity}", received="no certificates (admin /certs)",
                 hint=f"step 2 makes the certificates (certs.sh); step {step} gives {sidecar}.yaml its TLS context")
        if identity not in held:
            app = identity.rsplit('/', 1)[1]
            fail(f"{sidecar} presents a certificate for another identity",
                 expected=f"a leaf certificate whose URI SAN is {identity}",
                 received=f"URI SANs of its leaf certificates: {', '.join(held) or 'none'}",
                 hint=_stale_svid_hint(lab, app, identity)
                 or f"{sidecar} speaks for {app}: use certs/{app}/svid.pem and svid_key.pem")
        trusted = [c for c in contexts if identity in _uris(c.get("cert_chain", [])[:1]) and c.get("ca_cert")]
        if not trusted:
            fail(f"{sidecar} has its SVID but no CA to verify its peer with",
                 expected="validation_context.trusted_ca: the mesh CA (certs/ca/ca.pem)",
                 received="no CA certificate in the same TLS context (admin /certs)",
                 hint=f"step {step}: add a validation_context with trusted_ca to {sidecar}'s TLS context")


# -- the authenticated path ------------------------------------------------------

@check("app-a's request reaches app-b over mTLS, and app-b learns the caller is app-a",
       hint="steps 3-5: both TLS contexts, and on sidecar-b forward_client_cert_details: SANITIZE_SET with "
            "set_current_client_cert_details: {uri: true}")
def test_identity_reaches_app_b(lab):
    probe = uuid.uuid4().hex
    before = lab.journal_position("app-b")
    # app-a also claims to be somebody else: a header only the sidecars may set.
    forged = f"URI=spiffe://{TRUST_DOMAIN}/ns/default/sa/admin"
    response = lab.get(lab.url("app-a", path="/whoami"), params={"probe": probe},
                       headers={"x-forwarded-client-cert": forged}, hint=relay_hint(lab) + "; both must be running")
    seen = next((e for e in lab.journal("app-b", since=before) if e["query"].get("probe") == [probe]), None)
    if seen is None:
        fail("app-a's request never reached app-b",
             expected="HTTP 200 from app-b, through sidecar-a and sidecar-b",
             received=describe(response),
             hint="read the body: Envoy says why it could not connect (a TLS error names the failing side); "
                  "sidecar-a must present app-a's SVID and accept app-b's, sidecar-b the reverse")
    xfcc = seen["headers"].get("x-forwarded-client-cert")
    if xfcc is None:
        fail("app-b received no x-forwarded-client-cert: it cannot know who called",
             expected=f"x-forwarded-client-cert with URI={ID_A}", received="no such header",
             hint="step 5: on sidecar-b's HTTP connection manager, forward_client_cert_details: SANITIZE_SET and "
                  "set_current_client_cert_details: {uri: true} (this only works on a TLS connection with a "
                  "client certificate)")
    found = callers(xfcc)
    if forged.split("=", 1)[1] in found:
        fail("an identity app-a merely claimed in a header reached app-b",
             expected=f"only the verified identity ({ID_A})", received=f"x-forwarded-client-cert: {xfcc}",
             hint="sidecar-b must drop what the client sent and set its own: forward_client_cert_details: "
                  "SANITIZE_SET")
    if ID_A not in found:
        fail("app-b's x-forwarded-client-cert does not name app-a",
             expected=f"URI={ID_A} in x-forwarded-client-cert", received=f"x-forwarded-client-cert: {xfcc}",
             hint="set_current_client_cert_details: {uri: true} puts the client certificate's URI SAN in the "
                  "header; the client certificate must be app-a's SVID")
    if found[-1] != ID_A:
        fail("the caller's own element of x-forwarded-client-cert is not app-a",
             expected=f"the last element's URI is {ID_A}", received=f"x-forwarded-client-cert: {xfcc}")
    if response.status_code != 200:
        fail("app-b answered, but app-a did not get the answer",
             expected="HTTP 200 at app-a", received=describe(response))
    if mtls.server_counters(lab.envoy("sidecar-b")).get("handshake", 0) < 1:
        fail("sidecar-b never completed a TLS handshake",
             expected="listener ssl.handshake > 0 on sidecar-b", received="0", hint=SERVER_HINT)


# -- rejections, each for its own reason -----------------------------------------

def expect_rejection(lab, reason_key: str, svid: Path | None, who: str) -> None:
    """Try TLS 1.3 and TLS 1.2 with SVID; each version the server speaks must reject the
    client for REASON_KEY, by its alert and by sidecar-b's counter."""
    reason = mtls.REASONS[reason_key]
    admin = lab.envoy("sidecar-b")
    port = mtls_port(lab)
    attempts = [mtls.probe("127.0.0.1", port, tls=tls, svid=svid, admin=admin) for tls in ("1.3", "1.2")]
    spoken = [a for a in attempts if a.outcome != "version-refused"]
    seen = "; ".join(a.describe() for a in attempts)
    expected = (f"a handshake rejected because {reason.words}: alert "
                f"{' or '.join(sorted(mtls.ALERT_WORDS[a].split(' ')[0] for a in reason.alerts))}, "
                f"and sidecar-b's ssl.{reason.counter} +1")
    if not spoken:
        fail("sidecar-b refused both TLS 1.3 and TLS 1.2", expected=expected, received=seen, hint=SERVER_HINT)
    for attempt in spoken:
        version = f"TLS {attempt.tls}"
        if attempt.outcome == "accepted":
            fail(f"sidecar-b let in {who} ({version}) and answered HTTP {attempt.status}",
                 expected=expected, received=seen, hint=_accepted_hint(reason_key))
        if attempt.outcome in ("not-tls", "refused"):
            fail(f"sidecar-b does not speak TLS on :{port}" if attempt.outcome == "not-tls"
                 else f"nothing listens on 127.0.0.1:{port}", expected=expected, received=seen, hint=SERVER_HINT)
        # The server's counter decides; the alert is what the client saw (shown, and
        # the same as the counter's reason with Envoy's default certificate validator).
        got = attempt.reason
        if attempt.outcome in ("rejected", "closed") and got is not None and got.key == reason_key:
            continue
        fail(f"sidecar-b turned {who} away ({version}), but not because {reason.words}",
             expected=expected, received=seen,
             hint=f"the reason was: {got.words}" if got else _accepted_hint(reason_key))


def _accepted_hint(reason_key: str) -> str:
    return {
        "no-certificate": "require_client_certificate: true in sidecar-b's DownstreamTlsContext; without it a "
                          "client certificate is optional",
        "unknown-ca": "sidecar-b's validation_context must trust only the mesh CA: trusted_ca certs/ca/ca.pem",
        "wrong-identity": "trusting the mesh CA is not enough: every workload has a certificate from it. Match the "
                          f"caller's URI SAN exactly: match_typed_subject_alt_names [{{san_type: URI, matcher: "
                          f"{{exact: {ID_A}}}}}]",
    }[reason_key]


@check("A client without a certificate is turned away (certificate required)",
       hint="require_client_certificate: true on sidecar-b's DownstreamTlsContext")
def test_no_certificate_rejected(lab):
    expect_rejection(lab, "no-certificate", None, "a client without a certificate")


@check("A client with app-a's name but another CA's certificate is turned away (unknown CA)",
       hint="sidecar-b's validation_context.trusted_ca: the mesh CA (certs/ca/ca.pem) and nothing else")
def test_other_ca_rejected(lab, clients):
    expect_rejection(lab, "unknown-ca", clients["foreign"], "a client whose certificate comes from another CA")


@check("A mesh workload that is not app-a is turned away (certificate unknown)",
       hint=f"match the caller's SPIFFE ID exactly: match_typed_subject_alt_names, san_type URI, exact {ID_A}")
def test_wrong_identity_rejected(lab, clients):
    expect_rejection(lab, "wrong-identity", mesh_client(clients, "mallory"),
                     f"a client from the mesh CA with another identity ({ID_OTHER})")


@check("Plaintext HTTP to the mTLS port gets no answer",
       hint="every filter chain of sidecar-b's listener must have the TLS transport_socket; no plaintext chain")
def test_plaintext_rejected(lab):
    before = lab.journal_position("app-b")
    port = mtls_port(lab)
    attempt = mtls.probe("127.0.0.1", port, tls=None, admin=lab.envoy("sidecar-b"))
    reached = lab.journal("app-b", since=before)
    expected = "the connection closed without an HTTP response, and sidecar-b's ssl.connection_error +1"
    if attempt.outcome == "accepted" or reached:
        fail(f"sidecar-b answered plaintext HTTP on :{port} (HTTP {attempt.status})",
             expected=expected, received=attempt.describe() + ("; app-b received it" if reached else ""),
             hint="a listener that also accepts plaintext (a 'permissive' filter chain) lets anyone in without "
                  "a certificate: keep only the TLS filter chain")
    if attempt.outcome == "refused":
        fail(f"nothing listens on 127.0.0.1:{port}", expected=expected, received=attempt.describe(),
             hint=SERVER_HINT)
    if attempt.counters.get("connection_error", 0) < 1:
        fail("the plaintext request was refused, but not by sidecar-b's TLS",
             expected=expected, received=attempt.describe(), hint=SERVER_HINT)


# -- the client side verifies the server ------------------------------------------

class Impostor:
    """A TLS server on sidecar-b's port with a mesh certificate for another identity,
    recording what each client did: plaintext, a failed handshake, or a request."""

    def __init__(self, svid: Path, port: int):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(svid / certs.SVID_CERT, svid / certs.SVID_KEY)
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.events: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def __enter__(self) -> "Impostor":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        try:  # wakes the thread's accept() at once on Linux, instead of after its timeout
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.settimeout(5)
            try:
                first = conn.recv(1, socket.MSG_PEEK)
                if first and first != b"\x16":
                    self.events.append("plaintext")
                    conn.close()
                    continue
                tls = self.context.wrap_socket(conn, server_side=True)
                tls.recv(65536)
                self.events.append("request")
                body = b"impostor"
                tls.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
                tls.close()
            except (ssl.SSLError, OSError) as exc:
                self.events.append(f"handshake failed: {getattr(exc, 'reason', None) or exc}")
                conn.close()


@check("sidecar-a refuses a server that is not app-b, even with a mesh certificate",
       hint=f"step 4: sidecar-a's UpstreamTlsContext needs a validation_context: trusted_ca certs/ca/ca.pem and "
            f"a URI SAN match on {ID_B}")
def test_client_verifies_server(lab, clients):
    svid = mesh_client(clients, "impostor")
    admin = lab.envoy("sidecar-a")
    with lab.stopped("sidecar-b"):
        with Impostor(svid, mtls_port(lab)) as impostor, admin.delta(r"^cluster\..*\.ssl\.") as delta:
            response = lab.get(lab.url("app-a", path="/"), hint=relay_hint(lab))
            if not impostor.events:  # the request met a pooled connection to the stopped sidecar-b
                response = lab.get(lab.url("app-a", path="/"), hint=relay_hint(lab))
    refused = sum(v for k, v in delta.changed().items() if k.endswith((".ssl.fail_verify_san", ".ssl.fail_verify_error")))
    seen = f"{describe(response)}; the impostor saw: {', '.join(impostor.events) or 'no connection'}"
    expected = ("sidecar-a aborts the handshake (its cluster's ssl.fail_verify_san +1) and app-a gets 503: "
                "the impostor never sees the request")
    if "request" in impostor.events:
        fail("sidecar-a sent app-a's request to an impostor with a mesh certificate for another identity",
             expected=expected, received=seen,
             hint=f"verify the server: validation_context with trusted_ca and match_typed_subject_alt_names "
                  f"(URI, exact {ID_B}) in sidecar-a's UpstreamTlsContext")
    if "plaintext" in impostor.events:
        fail("sidecar-a speaks plaintext to app-b's sidecar", expected=expected, received=seen,
             hint="step 4: add a transport_socket with an UpstreamTlsContext to sidecar-a's cluster")
    if refused < 1:
        fail("the impostor was not refused by sidecar-a's certificate check",
             expected=expected, received=f"{seen}; sidecar-a's ssl counters moved: {delta.changed() or 'none'}",
             hint=f"sidecar-a must check the server's URI SAN ({ID_B}) against the mesh CA")
    if response.status_code == 200:
        fail("app-a got an answer although the server was an impostor", expected=expected, received=seen)
