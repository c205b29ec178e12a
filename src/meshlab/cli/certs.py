"""`meshlab certs`: a CA and SPIFFE X.509-SVIDs for the mTLS lab (see meshlab.certs).

Exit codes: 0 done (or, for `inspect`, a valid SVID); 1 `inspect` found the certificate
unfit (expired, not chaining to --ca, not an SVID); 2 bad input (an invalid SPIFFE ID,
a missing or expired CA, a file that is not a certificate). Private keys are written
0600 and never printed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from meshlab import certs, ui

_TTL_HELP = "How long it is valid: 24h, 30m, 7d, 1h30m."


def _duration(value: str | None):
    return certs.parse_duration(value) if value is not None else None


@click.group("certs")
def certs_group() -> None:
    """A CA and SPIFFE X.509-SVIDs (EC P-256) for mutual TLS between sidecars.

    \b
      meshlab certs ca --out certs/ca
      meshlab certs issue --ca certs/ca --spiffe-id spiffe://cluster.local/ns/default/sa/app-a --out certs/app-a
      meshlab certs inspect certs/app-a/svid.pem --ca certs/ca
    """


@certs_group.command("ca")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder for ca.pem and ca_key.pem.")
@click.option("--trust-domain", default=certs.DEFAULT_TRUST_DOMAIN, show_default=True,
              help="The trust domain this CA signs for (its URI SAN is spiffe://TRUST-DOMAIN).")
@click.option("--ttl", default="365d", show_default=True, help=_TTL_HELP)
@click.option("--force", is_flag=True, help="Replace a CA already in --out (its SVIDs stop being trusted).")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def ca_command(out: str, trust_domain: str, ttl: str, force: bool, as_json: bool) -> None:
    """Make a CA: a key (ca_key.pem, mode 0600) and a self-signed certificate (ca.pem)."""
    authority = certs.create_ca(Path(out), trust_domain=trust_domain, ttl=certs.parse_duration(ttl), force=force)
    cert = authority.certificate
    if as_json:
        click.echo(json.dumps({"trust_domain": trust_domain, "certificate": str(authority.cert_path),
                               "key": str(Path(out) / certs.CA_KEY),
                               "not_after": cert.not_valid_after_utc.isoformat()}, indent=2))
        return
    ui.console.print(f"CA for trust domain [bold]{trust_domain}[/] (URI SAN spiffe://{trust_domain})")
    ui.console.print(f"  certificate  {ui.relative(authority.cert_path)}")
    ui.console.print(f"  key          {ui.relative(Path(out) / certs.CA_KEY)}  [dim](mode 0600; keep it secret)[/]")
    ui.console.print(f"  valid until  {cert.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


@certs_group.command("issue")
@click.option("--ca", "ca_dir", required=True, type=click.Path(), help="The CA folder (from `meshlab certs ca`).")
@click.option("--spiffe-id", required=True, help="The workload's ID, like spiffe://cluster.local/ns/default/sa/app-a.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Folder for svid.pem (leaf + CA), svid_key.pem (0600) and svid_bundle.pem (the CA).")
@click.option("--ttl", default="24h", show_default=True, help=_TTL_HELP + " Never past the CA's own end.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def issue_command(ca_dir: str, spiffe_id: str, out: str, ttl: str, as_json: bool) -> None:
    """Issue an X.509-SVID: exactly one URI SAN (the SPIFFE ID), not a CA, digitalSignature."""
    lifetime = certs.parse_duration(ttl)
    certs.parse_spiffe_id(spiffe_id)  # a bad ID is reported before the CA is even read
    authority = certs.load_ca(Path(ca_dir))
    issued = certs.issue_svid(authority, spiffe_id, Path(out), ttl=lifetime)
    files = {name: str(issued.folder / name) for name in (certs.SVID_CERT, certs.SVID_KEY, certs.SVID_BUNDLE)}
    if as_json:
        click.echo(json.dumps({"spiffe_id": str(issued.spiffe_id), "files": files,
                               "not_after": issued.not_after.isoformat(), "clamped_to_ca": issued.clamped},
                              indent=2))
        return
    ui.console.print(f"X.509-SVID for [bold]{issued.spiffe_id}[/]")
    ui.console.print(f"  chain   {ui.relative(files[certs.SVID_CERT])}  [dim](leaf, then the CA)[/]")
    ui.console.print(f"  key     {ui.relative(files[certs.SVID_KEY])}  [dim](mode 0600)[/]")
    ui.console.print(f"  bundle  {ui.relative(files[certs.SVID_BUNDLE])}  [dim](the CA, to verify peers)[/]")
    ui.console.print(f"  valid until {issued.not_after:%Y-%m-%d %H:%M} UTC"
                     + (" [yellow](cut to the CA's own end)[/]" if issued.clamped else ""))


@certs_group.command("inspect")
@click.argument("file", type=click.Path())
@click.option("--ca", "ca", type=click.Path(), help="A CA folder or certificate: does FILE chain to it?")
@click.option("--valid-for", help="Also require that it stays valid this long (like 1h).")
@click.option("--spiffe-id", "spiffe_id", help="Also require that it names this SPIFFE ID.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def inspect_command(file: str, ca: str | None, valid_for: str | None, spiffe_id: str | None, as_json: bool) -> None:
    """Show a certificate as an SVID: SPIFFE ID, trust domain, issuer, validity, time left.

    Exit 0 for a valid SVID (chaining to --ca, valid for --valid-for, naming --spiffe-id,
    when given), 1 when it is not, 2 when FILE cannot be read as a certificate.
    """
    report = certs.inspect(Path(file), ca=Path(ca) if ca else None, valid_for=_duration(valid_for),
                           expect_id=spiffe_id)
    if as_json:
        click.echo(json.dumps(report.to_json(), indent=2))
    else:
        rows = [
            ("SPIFFE ID", report.spiffe_id or "none"),
            ("trust domain", report.trust_domain or "none"),
            ("subject", report.subject),
            ("issuer", report.issuer),
            ("CA", "yes" if report.is_ca else "no"),
            ("key", report.key),
            ("valid", f"{report.not_before:%Y-%m-%d %H:%M} to {report.not_after:%Y-%m-%d %H:%M} UTC"),
            ("time left", certs.format_duration(report.time_left) if report.time_left.total_seconds() > 0
             else "none (expired)"),
            ("chain", f"{report.chain_length} certificate(s) in the file"),
        ]
        if report.chains_to:
            rows.append(("chains to", f"{ui.relative(report.chains_to)}: {'yes' if report.chains else 'NO'}"))
        for name, value in rows:
            ui.console.print(f"  {name:<13} {ui.escape(value)}")
        for problem in report.problems:
            ui.console.print(f"  [red]✘[/] {ui.escape(problem)}")
        if report.ok:
            ui.console.print("  [green]✔[/] a valid X.509-SVID")
    sys.exit(0 if report.ok else 1)
