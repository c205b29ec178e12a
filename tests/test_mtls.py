"""The mTLS inspector against a real Envoy (free ports): each way a client can be turned
away is classified by its alert and confirmed by the server's counters, the same on
every try, with TLS 1.3 and TLS 1.2."""

from __future__ import annotations

import json

import pytest

from meshlab import certs, mtls
from meshlab.envoy import EnvoyProcess
from meshlab.ports import free_port


@pytest.fixture
def meshlab(cli):
    """`meshlab mtls` starts no lab: run it in this process (see the `cli` fixture)."""
    return cli

ID_A = "spiffe://cluster.local/ns/default/sa/app-a"
ID_B = "spiffe://cluster.local/ns/default/sa/app-b"

LISTENER = """
  - name: {name}
    address: {{socket_address: {{address: 127.0.0.1, port_value: {port}}}}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          route_config:
            virtual_hosts:
            - {{name: all, domains: ["*"], routes: [{{match: {{prefix: "/"}}, direct_response: {{status: 200, body: {{inline_string: inside}}}}}}]}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {{"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
      transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          require_client_certificate: true
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: {minimum}}}
            tls_certificates:
            - certificate_chain: {{filename: {dir}/b/svid.pem}}
              private_key: {{filename: {dir}/b/svid_key.pem}}
            validation_context:
              trusted_ca: {{filename: {dir}/ca/ca.pem}}
              match_typed_subject_alt_names:
              - {{san_type: URI, matcher: {{exact: "{id_a}"}}}}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An Envoy with two mTLS listeners (any version; TLS 1.3 only) on free ports."""
    folder = tmp_path_factory.mktemp("mtls")
    ca = certs.create_ca(folder / "ca")
    certs.issue_svid(ca, ID_B, folder / "b")
    certs.issue_svid(ca, ID_A, folder / "a")
    certs.issue_svid(ca, "spiffe://cluster.local/ns/default/sa/mallory", folder / "mallory")
    certs.issue_svid(certs.create_ca(folder / "foreign-ca"), ID_A, folder / "foreign")
    ports = {"any": free_port(), "tls13": free_port(), "admin": free_port()}
    listeners = "".join(LISTENER.format(name=name, port=ports[name], dir=folder, id_a=ID_A,
                                        minimum="TLSv1_3" if name == "tls13" else "TLSv1_2")
                        for name in ("any", "tls13"))
    config = folder / "envoy.yaml"
    config.write_text(f"admin: {{address: {{socket_address: {{address: 127.0.0.1, port_value: {ports['admin']}}}}}}}\n"
                      f"static_resources:\n  listeners:{listeners}")
    with EnvoyProcess(config, workdir=folder) as envoy:
        yield {"folder": folder, "ports": ports, "admin": envoy.admin}


@pytest.mark.parametrize("client, reason", [
    (None, "no-certificate"), ("foreign", "unknown-ca"), ("mallory", "wrong-identity")])
@pytest.mark.parametrize("tls", ["1.3", "1.2"])
def test_each_rejection_is_classified_and_confirmed(server, client, reason, tls):
    svid = server["folder"] / client if client else None
    for _ in range(5):  # the same verdict every time
        attempt = mtls.probe("127.0.0.1", server["ports"]["any"], tls=tls, svid=svid, admin=server["admin"])
        assert attempt.outcome == "rejected", attempt.describe()
        assert attempt.reason is not None and attempt.reason.key == reason, attempt.describe()
        assert attempt.counters == {mtls.REASONS[reason].counter: 1}, attempt.describe()
        assert attempt.confirmed, attempt.describe()  # Envoy's default validator: alert and counter agree


def test_with_tls_1_2_the_alert_for_no_certificate_is_generic(server):
    attempt = mtls.probe("127.0.0.1", server["ports"]["any"], tls="1.2", admin=server["admin"])
    assert attempt.alert == "SSLV3_ALERT_HANDSHAKE_FAILURE"  # the counter tells the reason
    assert mtls.probe("127.0.0.1", server["ports"]["any"], tls="1.3").alert == "TLSV13_ALERT_CERTIFICATE_REQUIRED"


def test_without_counters_the_alert_is_the_guess():
    attempt = mtls.Attempt(tls="1.3", outcome="rejected", alert="TLSV1_ALERT_UNKNOWN_CA")
    assert attempt.reason is not None and attempt.reason.key == "unknown-ca" and not attempt.confirmed
    # When the server's counters were read, they decide, whatever the alert said.
    attempt = mtls.Attempt(tls="1.2", outcome="rejected", alert="SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                           counters={"fail_verify_error": 1}, counters_read=True)
    assert attempt.reason.key == "unknown-ca" and attempt.reason_by_alert.key == "wrong-identity"
    assert not attempt.confirmed
    two = mtls.Attempt(tls="1.2", outcome="rejected", counters={"fail_verify_error": 1, "fail_verify_san": 1},
                       counters_read=True)
    assert two.reason is None


def test_the_right_client_gets_in_and_sees_the_server_identity(server):
    for tls in ("1.3", "1.2"):
        attempt = mtls.probe("127.0.0.1", server["ports"]["any"], tls=tls, svid=server["folder"] / "a",
                             admin=server["admin"])
        assert attempt.outcome == "accepted" and attempt.status == 200 and attempt.body == b"inside"
        assert attempt.version == f"TLSv{tls}" and attempt.server_ids == [ID_B]
        assert attempt.counters.get("handshake") == 1 and attempt.reason is None


def test_plaintext_is_closed_and_counted(server):
    attempt = mtls.probe("127.0.0.1", server["ports"]["any"], tls=None, admin=server["admin"])
    assert attempt.outcome == "closed" and attempt.status is None
    assert attempt.reason is not None and attempt.reason.key == "not-tls"


def test_a_server_that_refuses_a_version_says_so(server):
    attempt = mtls.probe("127.0.0.1", server["ports"]["tls13"], tls="1.2", svid=server["folder"] / "a")
    assert attempt.outcome == "version-refused", attempt.describe()
    attempt = mtls.probe("127.0.0.1", server["ports"]["tls13"], tls="1.3", svid=server["folder"] / "mallory",
                         admin=server["admin"])
    assert attempt.reason is not None and attempt.reason.key == "wrong-identity"


def test_nothing_listening_and_a_plaintext_server(server):
    assert mtls.probe("127.0.0.1", free_port(), tls="1.3").outcome == "refused"
    # The admin port speaks plain HTTP: a TLS client learns it is not TLS.
    assert mtls.probe("127.0.0.1", server["ports"]["admin"], tls="1.3").outcome == "not-tls"


def test_the_probe_command(meshlab, server):
    address = f"127.0.0.1:{server['ports']['any']}"
    admin = server["admin"].base_url
    run = meshlab("mtls", "probe", address, "--svid", str(server["folder"] / "mallory"), "--admin", admin, "--json")
    assert run.code == 1, run.output
    attempts = json.loads(run.stdout)
    assert [a["reason"] for a in attempts] == ["wrong-identity", "wrong-identity"]
    assert [a["tls"] for a in attempts] == ["1.3", "1.2"]
    run = meshlab("mtls", "probe", address, "--svid", str(server["folder"] / "a"), "--admin", admin)
    assert run.code == 0 and "accepted" in run.stdout and ID_B in run.stdout
    run = meshlab("mtls", "probe", address, "--admin", admin, "--tls", "1.3")
    assert run.code == 1 and "certificate_required" in run.stdout and "no certificate" in run.stdout
    assert meshlab("mtls", "probe", "nonsense").code == 2
    run = meshlab("mtls", "probe", address, "--svid", str(server["folder"] / "nowhere"))
    assert run.code == 2 and "holds no svid.pem" in run.stderr
    run = meshlab("mtls", "probe", address, "--admin", f"http://127.0.0.1:{free_port()}")
    assert run.code == 2 and "cannot read the server Envoy's counters" in run.stderr
    assert "Traceback" not in run.output
