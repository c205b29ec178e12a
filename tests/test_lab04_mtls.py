"""Lab 04 graded for real: configurations that only look right fail the check they
should (each for its own reason), and unusual correct ones pass, certificates made with
openssl among them. tests/test_course_proves_itself.py grades the starter and the
solution."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from lab_variants import fails_only, passes

pytestmark = pytest.mark.lab_runs

ROOT = Path(__file__).resolve().parents[1]
SOLUTION = ROOT / "solutions" / "04-mtls"
ID_A = "spiffe://cluster.local/ns/default/sa/app-a"


def solved(name: str) -> dict:
    return yaml.safe_load((SOLUTION / name).read_text())


def server_tls(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]["typed_config"]


def server_hcm(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def client_tls(config: dict) -> dict:
    return config["static_resources"]["clusters"][0]["transport_socket"]["typed_config"]


def variant(*, server=None, client=None, certs_sh: str | None = None) -> dict[str, str]:
    b, a = solved("sidecar-b.yaml"), solved("sidecar-a.yaml")
    if server:
        server(b)
    if client:
        client(a)
    files = {"sidecar-b.yaml": yaml.safe_dump(b), "sidecar-a.yaml": yaml.safe_dump(a)}
    if certs_sh is not None:
        files["certs.sh"] = certs_sh
    return files


# -- plausible but wrong ---------------------------------------------------------------

def test_trusting_the_mesh_ca_without_requiring_a_certificate(grade):
    def lax(b):
        tls = server_tls(b)
        tls.pop("require_client_certificate")
        tls["common_tls_context"]["validation_context"].pop("match_typed_subject_alt_names")

    checks = fails_only(grade, 4, variant(server=lax), {"test_no_certificate_rejected", "test_wrong_identity_rejected"})
    assert "let in a client without a certificate" in checks["test_no_certificate_rejected"]["message"]
    assert "require_client_certificate" in checks["test_no_certificate_rejected"]["hint"]


def test_trusting_the_mesh_ca_without_matching_the_caller(grade):
    def no_san(b):
        server_tls(b)["common_tls_context"]["validation_context"].pop("match_typed_subject_alt_names")

    checks = fails_only(grade, 4, variant(server=no_san), {"test_wrong_identity_rejected"})
    assert "trusting the mesh CA is not enough" in checks["test_wrong_identity_rejected"]["hint"]


def test_a_prefix_match_on_the_trust_domain(grade):
    def prefix(b):
        server_tls(b)["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"] = [
            {"san_type": "URI", "matcher": {"prefix": "spiffe://cluster.local/"}}]

    fails_only(grade, 4, variant(server=prefix), {"test_wrong_identity_rejected"})


def test_a_permissive_listener_that_also_takes_plaintext(grade):
    def permissive(b):
        listener = b["static_resources"]["listeners"][0]
        tls_chain = listener["filter_chains"][0]
        tls_chain["filter_chain_match"] = {"transport_protocol": "tls"}
        listener["filter_chains"].append({"filters": tls_chain["filters"]})
        listener["listener_filters"] = [{
            "name": "envoy.filters.listener.tls_inspector",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector"}}]

    checks = fails_only(grade, 4, variant(server=permissive), {"test_plaintext_rejected"})
    assert "answered plaintext HTTP" in checks["test_plaintext_rejected"]["message"]


def test_client_identity_not_passed_to_the_app(grade):
    checks = fails_only(grade, 4, variant(server=lambda b: server_hcm(b).pop("set_current_client_cert_details")),
                        {"test_identity_reaches_app_b"})
    assert "does not name app-a" in checks["test_identity_reaches_app_b"]["message"]


def test_matching_the_spiffe_id_as_a_dns_name(grade):
    def dns(b):
        server_tls(b)["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["san_type"] = "DNS"

    checks = fails_only(grade, 4, variant(server=dns), {"test_identity_reaches_app_b"})
    assert "never reached app-b" in checks["test_identity_reaches_app_b"]["message"]


def test_client_that_trusts_any_mesh_server(grade):
    checks = fails_only(
        grade, 4, variant(client=lambda a: client_tls(a)["common_tls_context"]["validation_context"].pop(
            "match_typed_subject_alt_names")),
        {"test_client_verifies_server"})
    assert "impostor" in checks["test_client_verifies_server"]["message"]


# -- unusual but correct -----------------------------------------------------------------

def test_tls13_only_regex_match_and_the_svid_bundle(grade):
    def server(b):
        context = server_tls(b)["common_tls_context"]
        context["tls_params"] = {"tls_minimum_protocol_version": "TLSv1_3"}
        context["validation_context"] = {
            "trusted_ca": {"filename": "certs/app-b/svid_bundle.pem"},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {
                "safe_regex": {"regex": r"^spiffe://cluster\.local/ns/default/sa/app-a$"}}}]}

    def client(a):  # an Envoy client offers at most TLS 1.2 unless told otherwise
        client_tls(a)["common_tls_context"]["tls_params"] = {"tls_maximum_protocol_version": "TLSv1_3"}

    passes(grade, 4, variant(server=server, client=client))


def test_a_san_match_without_require_client_certificate(grade):
    """Envoy asks for a client certificate, and fails the handshake without one, as soon
    as the validation context matches SANs: the flag is then implied (with TLS 1.3 it
    closes without an alert; its counter still says fail_verify_no_cert)."""
    passes(grade, 4, variant(server=lambda b: server_tls(b).pop("require_client_certificate")))


def test_tls12_only_and_append_forward(grade):
    def server(b):
        server_tls(b)["common_tls_context"]["tls_params"] = {"tls_maximum_protocol_version": "TLSv1_2"}
        server_hcm(b)["forward_client_cert_details"] = "APPEND_FORWARD"

    passes(grade, 4, variant(server=server))


def test_the_spiffe_certificate_validator(grade):
    """Envoy's SPIFFE validator binds the bundle to the trust domain. It answers an
    unknown CA with certificate_unknown (TLS 1.2) or no alert at all (TLS 1.3); the
    server's counters still name each reason, and they decide."""
    def server(b):
        server_tls(b)["common_tls_context"]["validation_context"] = {
            "custom_validator_config": {"name": "envoy.tls.cert_validator.spiffe", "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.SPIFFECertValidatorConfig",
                "trust_domains": [{"name": "cluster.local", "trust_bundle": {"filename": "certs/ca/ca.pem"}}]}},
            "match_typed_subject_alt_names": [{"san_type": "URI", "matcher": {"exact": ID_A}}]}

    passes(grade, 4, variant(server=server))


OPENSSL_CERTS = (ROOT / "labs" / "04-mtls" / "README.md").read_text().split("<!-- openssl-certs -->")[1] \
    .split("```sh\n", 1)[1].split("```", 1)[0]


def test_certificates_made_with_openssl_as_the_readme_shows(grade):
    script = "#!/bin/sh\nset -eu\ncd \"$(dirname \"$0\")\"\n[ -f certs/ca/ca.pem ] && exit 0\n" + OPENSSL_CERTS
    passes(grade, 4, variant(certs_sh=script))


def test_a_corrected_spiffe_id_takes_effect_and_a_stale_one_is_explained(grade, lab_copy):
    """The learner first issued app-a a wrong ID, then corrected certs.sh. A guard that
    checks only the chain and dates keeps the old certificate: the check says so. The
    README's guard (with --spiffe-id) makes it again."""
    solution = (SOLUTION / "certs.sh").read_text()
    old_guard = solution.replace(' --spiffe-id "$2"', "").replace("fresh certs/app-a/svid.pem "
                                                                 "spiffe://cluster.local/ns/default/sa/app-a",
                                                                 "fresh certs/app-a/svid.pem")
    old_guard = old_guard.replace("fresh certs/app-b/svid.pem spiffe://cluster.local/ns/default/sa/app-b",
                                  "fresh certs/app-b/svid.pem")
    assert "--spiffe-id \"$2\"" not in old_guard and solution != old_guard
    folder = lab_copy(4, base="solution", files={"certs.sh": old_guard.replace("sa/app-a --out", "sa/appa --out")})
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["sh", "certs.sh"], cwd=folder, env=env, check=True, capture_output=True)
    (folder / "certs.sh").write_text(old_guard)  # corrected, but the guard keeps the old SVID
    code, checks, _ = grade(4, path=folder)
    held = checks["test_sidecars_hold_svids"]
    assert code == 1 and held["status"] == "fail"
    assert "spiffe://cluster.local/ns/default/sa/appa" in held["hint"] and "certs.sh" in held["hint"], held
    assert "--spiffe-id" in held["hint"], held
    (folder / "certs.sh").write_text(solution)  # the README's guard
    code, checks, data = grade(4, path=folder)
    assert code == 0, {cid: c.get("message") for cid, c in checks.items() if c["status"] != "pass"} or data


@pytest.mark.parametrize("script", ["solution", "starter"])
def test_certs_sh_runs_bare_without_an_activated_virtualenv(tmp_path, script):
    """The README runs `sh certs.sh` in the lab folder; the course's virtualenv (.venv at
    the course's root) need not be activated."""
    folder = tmp_path / "course" / "labs" / "04-mtls"
    folder.mkdir(parents=True)
    (tmp_path / "course" / ".venv").symlink_to(Path(sys.executable).parent.parent)
    source = SOLUTION if script == "solution" else ROOT / "labs" / "04-mtls"
    (folder / "certs.sh").write_text((source / "certs.sh").read_text())
    bare = {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PATH")}
    run = subprocess.run(["sh", "certs.sh"], cwd=folder, env={**bare, "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    if script == "solution":
        assert (folder / "certs" / "app-b" / "svid.pem").is_file()
