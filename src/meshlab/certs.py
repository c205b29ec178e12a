"""A certificate authority and SPIFFE X.509-SVIDs, on the `cryptography` package.

What the SPIFFE X.509-SVID standard asks of an SVID, and what this module makes:

- the SPIFFE ID (`spiffe://TRUST-DOMAIN/PATH`) is the one and only URI SAN;
- a leaf is not a CA (basicConstraints cA=false) and its key usage is
  digitalSignature only (no keyCertSign, no cRLSign); here also clientAuth and
  serverAuth as extended key usages, so one SVID serves both ends of a connection;
- a signing certificate is a CA with keyCertSign; its URI SAN, if any, is the trust
  domain's own ID (`spiffe://cluster.local`, no path).

Keys are EC P-256. Files, in the style of the SPIFFE helper:

    CA folder:       ca.pem (certificate), ca_key.pem (key, mode 0600)
    workload folder: svid.pem (leaf, then the CA: the chain), svid_key.pem (0600),
                     svid_bundle.pem (the trust bundle: the CA certificate)

Nothing here prints a private key. Bad input raises `CertError` (exit 2 in the CLI).
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from meshlab.errors import InputError, Location

CA_CERT, CA_KEY = "ca.pem", "ca_key.pem"
SVID_CERT, SVID_KEY, SVID_BUNDLE = "svid.pem", "svid_key.pem", "svid_bundle.pem"
DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_CA_TTL = dt.timedelta(days=365)
DEFAULT_SVID_TTL = dt.timedelta(hours=24)
# Clocks differ a little between machines; an SVID valid from "now" might be "not yet
# valid" to a peer whose clock is behind.
BACKDATE = dt.timedelta(minutes=5)


class CertError(InputError):
    """A bad SPIFFE ID, a missing or unusable CA, a file that is not a certificate."""

    kind = "certs"


# -- SPIFFE IDs -------------------------------------------------------------------

_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]+")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]+")


@dataclass(frozen=True)
class SpiffeId:
    trust_domain: str
    path: str  # "" or "/ns/default/sa/app-a"

    def __str__(self) -> str:
        return f"spiffe://{self.trust_domain}{self.path}"


def parse_spiffe_id(text: str, *, require_path: bool = True) -> SpiffeId:
    """Parse TEXT by the SPIFFE ID rules, or raise CertError saying which rule it breaks."""
    def bad(why: str) -> CertError:
        return CertError(f"{text!r} is not a valid SPIFFE ID: {why}",
                         fix="a SPIFFE ID looks like spiffe://cluster.local/ns/default/sa/app-a")

    if len(text.encode()) > 2048:
        raise bad("it is longer than 2048 bytes")
    if not text.startswith("spiffe://"):
        scheme = text.split("://", 1)[0] if "://" in text else None
        raise bad(f"the scheme must be spiffe://, lower case (found {scheme + '://' if scheme else 'none'})")
    rest = text[len("spiffe://"):]
    if "?" in rest or "#" in rest:
        raise bad("a query (?) or fragment (#) is not allowed")
    domain, slash, path = rest.partition("/")
    check_trust_domain(domain, error=bad)
    path = slash + path
    if path:
        if path.endswith("/"):
            raise bad("the path must not end with /")
        for segment in path[1:].split("/"):
            if segment == "":
                raise bad("the path has an empty segment (//)")
            if segment in (".", ".."):
                raise bad("the path must not contain . or .. segments")
            if not _SEGMENT.fullmatch(segment):
                raise bad(f"path segment {segment!r} may only use letters, digits, '.', '-' and '_'")
    elif require_path:
        raise bad("a workload's ID needs a path after the trust domain (like /ns/default/sa/app-a)")
    return SpiffeId(domain, path)


def check_trust_domain(domain: str, *, error=None) -> str:
    error = error or (lambda why: CertError(f"{domain!r} is not a valid trust domain: {why}",
                                            fix="use lower-case letters, digits, '.', '-', '_' (like cluster.local)"))
    if not domain:
        raise error("the trust domain is empty")
    if ":" in domain or "@" in domain:
        raise error("a trust domain has no port or user (no ':' or '@')")
    if not _TRUST_DOMAIN.fullmatch(domain):
        raise error("the trust domain may only use lower-case letters, digits, '.', '-' and '_'")
    if len(domain) > 255:
        raise error("the trust domain is longer than 255 characters")
    return domain


# -- durations --------------------------------------------------------------------

_DURATION = re.compile(r"(\d+)([dhms])")
_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(text: str) -> dt.timedelta:
    """`24h`, `30m`, `7d`, `1h30m` -> timedelta; CertError otherwise."""
    cleaned = text.strip().lower()
    parts = _DURATION.findall(cleaned)
    if not cleaned or "".join(n + u for n, u in parts) != cleaned:
        raise CertError(f"{text!r} is not a duration", fix="write it like 24h, 30m, 7d or 1h30m")
    seconds = sum(int(n) * _UNITS[u] for n, u in parts)
    if seconds <= 0:
        raise CertError(f"the duration {text!r} must be longer than zero")
    return dt.timedelta(seconds=seconds)


def format_duration(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes = seconds // 60
    text = (f"{days}d" if days else "") + (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes or not (days or hours) else "")
    return sign + text


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# -- files ------------------------------------------------------------------------

def write_private_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    """Write KEY as PEM readable by its owner only (0600, also when PATH existed)."""
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_certs(path: Path, certs: list[x509.Certificate]) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


def load_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates in a PEM file, first first; CertError if there are none."""
    path = Path(path)
    if not path.is_file():
        raise CertError(f"{path} does not exist", where=Location(path),
                        fix="give the path of a PEM certificate file (like certs/app-a/svid.pem)")
    data = path.read_bytes()
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise CertError(f"{path} holds no PEM certificate", where=Location(path),
                        fix="a certificate file starts with -----BEGIN CERTIFICATE-----")
    return certs


def _ou(name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "meshlab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, name)])


def _uri_sans(cert: x509.Certificate) -> list[str]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return ext.value.get_values_for_type(x509.UniformResourceIdentifier)


def _ext(cert: x509.Certificate, kind: type):
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


# -- the CA -----------------------------------------------------------------------

@dataclass
class Authority:
    """A loaded CA: certificate, key, and the trust domain its URI SAN names."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    trust_domain: str | None
    folder: Path

    @property
    def cert_path(self) -> Path:
        return self.folder / CA_CERT


def create_ca(out: Path, *, trust_domain: str = DEFAULT_TRUST_DOMAIN, ttl: dt.timedelta = DEFAULT_CA_TTL,
              force: bool = False, now: dt.datetime | None = None) -> Authority:
    """Make a CA for TRUST_DOMAIN in folder OUT (ca.pem, ca_key.pem)."""
    check_trust_domain(trust_domain)
    out = Path(out)
    existing = [p for p in (out / CA_CERT, out / CA_KEY) if p.exists()]
    if existing and not force:
        raise CertError(f"{out} already holds a CA ({', '.join(p.name for p in existing)})",
                        where=Location(existing[0]),
                        fix="keep it (every SVID it issued depends on it), choose another --out, or pass --force "
                            "to replace it")
    _make_folder(out)
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    name = _ou(f"meshlab CA for {trust_domain}")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    write_private_key(out / CA_KEY, key)
    _write_certs(out / CA_CERT, [cert])
    return Authority(cert, key, trust_domain, out)


def load_ca(folder: Path, *, now: dt.datetime | None = None) -> Authority:
    """The CA in FOLDER, checked: both files there, key matching, a CA, valid now."""
    folder = Path(folder)
    cert_path, key_path = folder / CA_CERT, folder / CA_KEY
    if not folder.is_dir():
        raise CertError(f"there is no CA folder at {folder}", where=Location(folder),
                        fix=f"make one first: meshlab certs ca --out {folder}")
    for path in (cert_path, key_path):
        if not path.is_file():
            raise CertError(f"the CA folder {folder} has no {path.name}", where=Location(path),
                            fix=f"make the CA with: meshlab certs ca --out {folder}")
    certificate = load_certificates(cert_path)[0]
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError):
        raise CertError(f"{key_path} is not an unencrypted PEM private key", where=Location(key_path),
                        fix=f"make the CA again: meshlab certs ca --out {folder} --force") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or \
            key.public_key().public_numbers() != certificate.public_key().public_numbers():
        raise CertError(f"{key_path.name} is not the key of {cert_path.name} in {folder}", where=Location(key_path),
                        fix=f"the two files must come from the same `meshlab certs ca --out {folder}`")
    constraints = _ext(certificate, x509.BasicConstraints)
    if constraints is None or not constraints.ca:
        raise CertError(f"{cert_path} is not a CA certificate (basicConstraints cA is not true)",
                        where=Location(cert_path), fix=f"make a CA with: meshlab certs ca --out {folder}")
    now = now or _now()
    if certificate.not_valid_after_utc <= now:
        raise CertError(f"the CA in {folder} expired on {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC",
                        where=Location(cert_path),
                        fix=f"make a new CA (meshlab certs ca --out {folder} --force) and issue the SVIDs again")
    if certificate.not_valid_before_utc > now:
        raise CertError(f"the CA in {folder} is not valid before "
                        f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC", where=Location(cert_path),
                        fix="check this machine's clock, or make a new CA")
    domains = [u[len("spiffe://"):] for u in _uri_sans(certificate) if u.startswith("spiffe://")]
    return Authority(certificate, key, domains[0] if domains else None, folder)


# -- SVIDs ------------------------------------------------------------------------

@dataclass
class Issued:
    spiffe_id: SpiffeId
    folder: Path
    not_after: dt.datetime
    clamped: bool  # the TTL asked for outlived the CA: the SVID ends with the CA


def issue_svid(ca: Authority, spiffe_id: str, out: Path, *, ttl: dt.timedelta = DEFAULT_SVID_TTL,
               now: dt.datetime | None = None) -> Issued:
    """Issue an X.509-SVID for SPIFFE_ID signed by CA into folder OUT."""
    sid = parse_spiffe_id(spiffe_id)
    if ca.trust_domain is not None and sid.trust_domain != ca.trust_domain:
        raise CertError(f"{sid} is in trust domain {sid.trust_domain!r}, but the CA at {ca.folder} signs for "
                        f"{ca.trust_domain!r}",
                        fix=f"use an ID like spiffe://{ca.trust_domain}{sid.path}, or a CA made with "
                            f"--trust-domain {sid.trust_domain}")
    now = now or _now()
    not_after = now + ttl
    clamped = not_after > ca.certificate.not_valid_after_utc
    if clamped:
        not_after = ca.certificate.not_valid_after_utc
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_ou(sid.path.rsplit("/", 1)[-1] or sid.trust_domain))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(max(now - BACKDATE, ca.certificate.not_valid_before_utc)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(str(sid))]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.certificate.public_key()),
                       critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    out = Path(out)
    _make_folder(out)
    write_private_key(out / SVID_KEY, key)
    _write_certs(out / SVID_CERT, [cert, ca.certificate])
    _write_certs(out / SVID_BUNDLE, [ca.certificate])
    return Issued(sid, out, not_after, clamped)


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise CertError(f"{out} exists and is not a folder", where=Location(out), fix="choose another --out")
    out.mkdir(parents=True, exist_ok=True)


# -- inspecting -------------------------------------------------------------------

@dataclass
class Inspection:
    """What a certificate file says, as SVID: ID, issuer, validity, and its problems."""

    file: Path
    subject: str
    issuer: str
    serial: str
    not_before: dt.datetime
    not_after: dt.datetime
    spiffe_id: str | None
    trust_domain: str | None
    is_ca: bool
    key: str
    chain_length: int
    chains_to: str | None = None          # the CA file checked against, if any
    chains: bool | None = None
    problems: list[str] = field(default_factory=list)
    now: dt.datetime = field(default_factory=_now)

    @property
    def time_left(self) -> dt.timedelta:
        return self.not_after - self.now

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {
            "file": str(self.file), "spiffe_id": self.spiffe_id, "trust_domain": self.trust_domain,
            "subject": self.subject, "issuer": self.issuer, "serial": self.serial,
            "not_before": self.not_before.isoformat(), "not_after": self.not_after.isoformat(),
            "seconds_left": int(self.time_left.total_seconds()), "is_ca": self.is_ca, "key": self.key,
            "chain_length": self.chain_length, "chains_to": self.chains_to, "chains": self.chains,
            "ok": self.ok, "problems": self.problems,
        }


def inspect(path: Path, *, ca: Path | None = None, valid_for: dt.timedelta | None = None,
            now: dt.datetime | None = None, expect_id: str | None = None) -> Inspection:
    """Read the first certificate of PATH as an X.509-SVID. With CA (a CA folder or a
    certificate file), also whether it chains to it; with VALID_FOR, whether it is still
    valid that long from now; with EXPECT_ID, whether it names that SPIFFE ID (a script
    that keeps valid certificates must not keep one made for an ID since corrected).
    Problems are listed, not raised: only an unreadable file raises."""
    certs = load_certificates(Path(path))
    leaf = certs[0]
    now = now or _now()
    uris = _uri_sans(leaf)
    constraints = _ext(leaf, x509.BasicConstraints)
    is_ca = bool(constraints and constraints.ca)
    public = leaf.public_key()
    key = f"EC {public.curve.name}" if isinstance(public, ec.EllipticCurvePublicKey) else type(public).__name__
    problems = []
    spiffe_id = trust_domain = None
    spiffe_uris = [u for u in uris if u.startswith("spiffe://")]
    if len(uris) != 1:
        problems.append(f"an X.509-SVID has exactly one URI SAN; this one has {len(uris)}"
                        + (f" ({', '.join(uris)})" if uris else ""))
    if spiffe_uris:
        try:
            parsed = parse_spiffe_id(spiffe_uris[0], require_path=not is_ca)
            spiffe_id, trust_domain = str(parsed), parsed.trust_domain
        except CertError as error:
            problems.append(error.message)
    elif len(uris) == 1:
        problems.append(f"its URI SAN {uris[0]} is not a SPIFFE ID")
    if expect_id is not None and spiffe_id != expect_id:
        problems.append(f"it names {spiffe_id or 'no SPIFFE ID'}, not {expect_id}")
    usage = _ext(leaf, x509.KeyUsage)
    if not is_ca:
        if usage is None or not usage.digital_signature:
            problems.append("a leaf SVID must have key usage digitalSignature")
        elif usage.key_cert_sign or usage.crl_sign:
            problems.append("a leaf SVID must not have key usage keyCertSign or cRLSign")
    if leaf.not_valid_after_utc <= now:
        problems.append(f"it expired on {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    elif leaf.not_valid_before_utc > now:
        problems.append(f"it is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC")
    elif valid_for is not None and leaf.not_valid_after_utc - now < valid_for:
        problems.append(f"it expires in {format_duration(leaf.not_valid_after_utc - now)}, "
                        f"less than the {format_duration(valid_for)} asked for")
    result = Inspection(
        file=Path(path), subject=leaf.subject.rfc4514_string(), issuer=leaf.issuer.rfc4514_string(),
        serial=format(leaf.serial_number, "x"), not_before=leaf.not_valid_before_utc,
        not_after=leaf.not_valid_after_utc, spiffe_id=spiffe_id, trust_domain=trust_domain, is_ca=is_ca,
        key=key, chain_length=len(certs), problems=problems, now=now,
    )
    if ca is not None:
        ca_file = Path(ca) / CA_CERT if Path(ca).is_dir() else Path(ca)
        anchor = load_certificates(ca_file)[0]
        result.chains_to = str(ca_file)
        result.chains = signed_by(leaf, anchor)
        if not result.chains:
            problems.append(f"it was not issued by the CA in {ca_file}")
        elif anchor.not_valid_after_utc <= now:
            problems.append(f"its CA ({ca_file}) expired on {anchor.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")
    return result


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True when ISSUER's key signed CERT (and names match), as a verifier checks it."""
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
