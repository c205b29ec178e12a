"""`meshlab certs`: SVIDs as the SPIFFE X.509-SVID standard describes them, keys kept
private, and every bad input an exit 2 with a message that says what is wrong."""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from meshlab import certs


@pytest.fixture
def meshlab(cli):
    """`meshlab certs` starts no lab: run it in this process (see the `cli` fixture)."""
    return cli

ID_A = "spiffe://cluster.local/ns/default/sa/app-a"


@pytest.fixture
def ca_dir(meshlab, tmp_path: Path) -> Path:
    run = meshlab("certs", "ca", "--out", str(tmp_path / "ca"))
    assert run.code == 0, run.output
    return tmp_path / "ca"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# -- what is made ------------------------------------------------------------------

def test_ca_and_svid_follow_the_standard(meshlab, ca_dir: Path, tmp_path: Path):
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "a"),
                  "--json")
    assert run.code == 0, run.output
    assert json.loads(run.stdout)["spiffe_id"] == ID_A
    chain = x509.load_pem_x509_certificates((tmp_path / "a" / certs.SVID_CERT).read_bytes())
    ca = x509.load_pem_x509_certificate((ca_dir / certs.CA_CERT).read_bytes())
    leaf = chain[0]
    assert len(chain) == 2 and chain[1] == ca  # leaf, then the CA
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [ID_A]  # exactly one URI SAN
    constraints = leaf.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    usage = leaf.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and not usage.key_cert_sign and not usage.crl_sign
    assert isinstance(leaf.public_key(), ec.EllipticCurvePublicKey) and leaf.public_key().curve.name == "secp256r1"
    assert certs.signed_by(leaf, ca)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc <= dt.timedelta(hours=24) + certs.BACKDATE
    ca_san = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ca_san.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cluster.local"]
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert (tmp_path / "a" / certs.SVID_BUNDLE).read_bytes() == (ca_dir / certs.CA_CERT).read_bytes()


def test_private_keys_are_0600_and_never_printed(meshlab, ca_dir: Path, tmp_path: Path):
    out = tmp_path / "a"
    out.mkdir()
    (out / certs.SVID_KEY).write_text("old")
    (out / certs.SVID_KEY).chmod(0o644)  # a key file that was readable by all is made private again
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(out))
    assert run.code == 0, run.output
    assert _mode(ca_dir / certs.CA_KEY) == 0o600
    assert _mode(out / certs.SVID_KEY) == 0o600
    inspect = meshlab("certs", "inspect", str(out / certs.SVID_CERT), "--ca", str(ca_dir), "--json")
    for text in (run.output, inspect.output):
        assert "PRIVATE KEY" not in text


def test_inspect_reports_id_issuer_validity_and_chain(meshlab, ca_dir: Path, tmp_path: Path):
    meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "a"), "--ttl", "2h")
    run = meshlab("certs", "inspect", str(tmp_path / "a" / certs.SVID_CERT), "--ca", str(ca_dir), "--json")
    assert run.code == 0, run.output
    report = json.loads(run.stdout)
    assert report["spiffe_id"] == ID_A and report["trust_domain"] == "cluster.local"
    assert "meshlab CA for cluster.local" in report["issuer"]
    assert report["chains"] is True and report["ok"] is True
    assert 7000 < report["seconds_left"] <= 7200
    text = meshlab("certs", "inspect", str(tmp_path / "a" / certs.SVID_CERT), "--ca", str(ca_dir))
    for words in ("SPIFFE ID", ID_A, "trust domain", "issuer", "time left", "chains to", "yes"):
        assert words in text.stdout


def test_inspect_exits_1_for_another_ca_or_too_short_a_life(meshlab, ca_dir: Path, tmp_path: Path):
    meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "a"), "--ttl", "30m")
    other = tmp_path / "other"
    meshlab("certs", "ca", "--out", str(other))
    svid = str(tmp_path / "a" / certs.SVID_CERT)
    run = meshlab("certs", "inspect", svid, "--ca", str(other))
    assert run.code == 1 and "not issued by the CA" in run.stdout and "NO" in run.stdout
    run = meshlab("certs", "inspect", svid, "--valid-for", "1h")
    assert run.code == 1 and "less than the 1h asked for" in run.stdout
    assert meshlab("certs", "inspect", svid, "--valid-for", "10m").code == 0


def test_inspect_compares_the_spiffe_id_when_asked(meshlab, ca_dir: Path, tmp_path: Path):
    meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "a"))
    svid = str(tmp_path / "a" / certs.SVID_CERT)
    assert meshlab("certs", "inspect", svid, "--ca", str(ca_dir), "--spiffe-id", ID_A).code == 0
    other = "spiffe://cluster.local/ns/default/sa/app-b"
    run = meshlab("certs", "inspect", svid, "--ca", str(ca_dir), "--spiffe-id", other, "--valid-for", "1h")
    assert run.code == 1, run.output
    assert f"it names {ID_A}, not {other}" in " ".join(run.stdout.split()), run.stdout
    data = json.loads(meshlab("certs", "inspect", svid, "--spiffe-id", other, "--json").stdout)
    assert data["ok"] is False and any(other in problem for problem in data["problems"])


def test_inspect_a_ca_certificate_is_not_a_leaf(meshlab, ca_dir: Path):
    report = json.loads(meshlab("certs", "inspect", str(ca_dir / certs.CA_CERT), "--json").stdout)
    assert report["is_ca"] is True and report["spiffe_id"] == "spiffe://cluster.local"


def test_an_svid_never_outlives_its_ca(tmp_path: Path):
    ca = certs.create_ca(tmp_path / "ca", ttl=dt.timedelta(hours=2))
    issued = certs.issue_svid(ca, ID_A, tmp_path / "a", ttl=dt.timedelta(days=3))
    assert issued.clamped and issued.not_after == ca.certificate.not_valid_after_utc


def test_a_second_trust_domain(meshlab, tmp_path: Path):
    run = meshlab("certs", "ca", "--out", str(tmp_path / "ca"), "--trust-domain", "partner.example")
    assert run.code == 0, run.output
    run = meshlab("certs", "issue", "--ca", str(tmp_path / "ca"), "--spiffe-id",
                  "spiffe://partner.example/ns/shop/sa/checkout", "--out", str(tmp_path / "c"))
    assert run.code == 0, run.output


# -- bad input: exit 2, a message that says what is wrong, nothing written ----------

@pytest.mark.parametrize("spiffe_id, words", [
    ("http://cluster.local/ns/default/sa/app-a", "scheme must be spiffe://"),
    ("SPIFFE://cluster.local/ns/default/sa/app-a", "scheme must be spiffe://"),
    ("spiffe://Cluster.Local/ns/default/sa/app-a", "lower-case"),
    ("spiffe://cluster.local:8443/ns/default", "no port"),
    ("spiffe://user@cluster.local/ns/default", "no port or user"),
    ("spiffe:///ns/default/sa/app-a", "trust domain is empty"),
    ("spiffe://cluster.local", "needs a path"),
    ("spiffe://cluster.local/", "must not end with /"),
    ("spiffe://cluster.local/ns//app-a", "empty segment"),
    ("spiffe://cluster.local/ns/../admin", ". or .. segments"),
    ("spiffe://cluster.local/ns/default/sa/app a", "may only use letters"),
    ("spiffe://cluster.local/ns/default?x=1", "query"),
    ("spiffe://cluster.local/ns/default#frag", "fragment"),
    ("app-a", "scheme must be spiffe://"),
])
def test_an_invalid_spiffe_id_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path, spiffe_id: str, words: str):
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", spiffe_id, "--out", str(tmp_path / "x"))
    assert run.code == 2, run.output
    assert "is not a valid SPIFFE ID" in run.stderr and words in run.stderr
    assert "Traceback" not in run.output
    assert not (tmp_path / "x").exists()


def test_an_id_of_another_trust_domain_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path):
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", "spiffe://other.org/ns/default/sa/app-a",
                  "--out", str(tmp_path / "x"))
    assert run.code == 2 and "trust domain 'other.org'" in run.stderr and "signs for 'cluster.local'" in run.stderr


def test_a_missing_ca_is_exit_2(meshlab, tmp_path: Path):
    run = meshlab("certs", "issue", "--ca", str(tmp_path / "nowhere"), "--spiffe-id", ID_A, "--out",
                  str(tmp_path / "x"))
    assert run.code == 2 and "there is no CA folder" in run.stderr and "meshlab certs ca --out" in run.stderr
    assert "Traceback" not in run.output and not (tmp_path / "x").exists()


def test_a_ca_without_its_key_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path):
    (ca_dir / certs.CA_KEY).unlink()
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "x"))
    assert run.code == 2 and f"has no {certs.CA_KEY}" in run.stderr


def test_a_ca_whose_key_is_another_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path):
    meshlab("certs", "ca", "--out", str(tmp_path / "other"))
    (ca_dir / certs.CA_KEY).write_bytes((tmp_path / "other" / certs.CA_KEY).read_bytes())
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "x"))
    assert run.code == 2 and "is not the key of" in run.stderr


def test_an_expired_ca_is_exit_2(meshlab, tmp_path: Path):
    long_ago = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    certs.create_ca(tmp_path / "old", ttl=dt.timedelta(days=1), now=long_ago)
    run = meshlab("certs", "issue", "--ca", str(tmp_path / "old"), "--spiffe-id", ID_A, "--out", str(tmp_path / "x"))
    assert run.code == 2 and "expired on" in run.stderr and "--force" in run.stderr
    assert "Traceback" not in run.output and not (tmp_path / "x").exists()


def test_a_ca_not_yet_valid_is_exit_2(meshlab, tmp_path: Path):
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=10)
    certs.create_ca(tmp_path / "future", now=later)
    run = meshlab("certs", "issue", "--ca", str(tmp_path / "future"), "--spiffe-id", ID_A, "--out",
                  str(tmp_path / "x"))
    assert run.code == 2 and "is not valid before" in run.stderr


def test_a_ca_that_is_not_a_ca_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path):
    meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "a"))
    fake = tmp_path / "fake"
    fake.mkdir()
    leaf = x509.load_pem_x509_certificates((tmp_path / "a" / certs.SVID_CERT).read_bytes())[0]
    (fake / certs.CA_CERT).write_bytes((tmp_path / "a" / certs.SVID_CERT).read_bytes().split(b"-----END CERTIFICATE-----")[0]
                                      + b"-----END CERTIFICATE-----\n")
    (fake / certs.CA_KEY).write_bytes((tmp_path / "a" / certs.SVID_KEY).read_bytes())
    assert leaf.subject.rfc4514_string().startswith("CN=app-a")
    run = meshlab("certs", "issue", "--ca", str(fake), "--spiffe-id", ID_A, "--out", str(tmp_path / "x"))
    assert run.code == 2 and "is not a CA certificate" in run.stderr


def test_an_existing_ca_is_kept_unless_forced(meshlab, ca_dir: Path):
    before = (ca_dir / certs.CA_CERT).read_bytes()
    run = meshlab("certs", "ca", "--out", str(ca_dir))
    assert run.code == 2 and "already holds a CA" in run.stderr and "--force" in run.stderr
    assert (ca_dir / certs.CA_CERT).read_bytes() == before
    assert meshlab("certs", "ca", "--out", str(ca_dir), "--force").code == 0
    assert (ca_dir / certs.CA_CERT).read_bytes() != before


@pytest.mark.parametrize("ttl", ["forever", "0h", "-5m", "24", "1y", ""])
def test_a_bad_ttl_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path, ttl: str):
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "x"),
                  "--ttl", ttl)
    assert run.code == 2 and ("is not a duration" in run.stderr or "longer than zero" in run.stderr), run.output


@pytest.mark.parametrize("domain", ["Cluster.Local", "cluster.local:80", "", "a b"])
def test_a_bad_trust_domain_is_exit_2(meshlab, tmp_path: Path, domain: str):
    run = meshlab("certs", "ca", "--out", str(tmp_path / "ca"), "--trust-domain", domain)
    assert run.code == 2 and "is not a valid trust domain" in run.stderr
    assert not (tmp_path / "ca").exists()


def test_inspect_of_a_missing_or_non_certificate_file_is_exit_2(meshlab, tmp_path: Path):
    run = meshlab("certs", "inspect", str(tmp_path / "none.pem"))
    assert run.code == 2 and "does not exist" in run.stderr
    (tmp_path / "junk.pem").write_text("hello\n")
    run = meshlab("certs", "inspect", str(tmp_path / "junk.pem"))
    assert run.code == 2 and "holds no PEM certificate" in run.stderr
    assert "Traceback" not in run.output


def test_out_that_is_a_file_is_exit_2(meshlab, ca_dir: Path, tmp_path: Path):
    (tmp_path / "file").write_text("x")
    run = meshlab("certs", "issue", "--ca", str(ca_dir), "--spiffe-id", ID_A, "--out", str(tmp_path / "file"))
    assert run.code == 2, run.output
