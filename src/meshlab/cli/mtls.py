"""`meshlab mtls probe`: knock on a TLS port as a test client and say why it was let in
or turned away, from the TLS alert and the server Envoy's ssl counters (meshlab.mtls).

Exit codes: 0 every attempt was accepted; 1 at least one was turned away (the output
says why); 2 bad input (an address that is not HOST:PORT, an unreadable SVID folder).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from meshlab import mtls, ui
from meshlab.certs import SVID_CERT, SVID_KEY, CertError
from meshlab.envoy import Admin
from meshlab.errors import InputError


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InputError(f"{text!r} is not HOST:PORT", fix="write it like 127.0.0.1:10443")
    return host, int(port)


@click.group("mtls")
def mtls_group() -> None:
    """Look at mutual TLS from the outside: who gets in, who does not, and why."""


@mtls_group.command("probe")
@click.argument("address", metavar="HOST:PORT")
@click.option("--svid", type=click.Path(), help="Present this SVID folder (svid.pem, svid_key.pem); none by default.")
@click.option("--tls", "versions", type=click.Choice(["1.3", "1.2", "plain"]), multiple=True,
              help="TLS versions to try (repeatable; `plain` sends plaintext HTTP) [default: 1.3 and 1.2].")
@click.option("--admin", help="The server Envoy's admin URL, to read its ssl counters (like http://127.0.0.1:9902).")
@click.option("--path", "url_path", default="/", show_default=True, help="The HTTP path to request once in.")
@click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")
def probe_command(address: str, svid: str | None, versions: tuple[str, ...], admin: str | None, url_path: str,
          as_json: bool) -> None:
    """Connect to HOST:PORT as a TLS client and report the verdict.

    \b
      meshlab mtls probe 127.0.0.1:10443 --admin http://127.0.0.1:9902
      meshlab mtls probe 127.0.0.1:10443 --svid certs/app-a --admin http://127.0.0.1:9902
    """
    host, port = _address(address)
    folder = Path(svid) if svid else None
    if folder is not None and not ((folder / SVID_CERT).is_file() and (folder / SVID_KEY).is_file()):
        raise CertError(f"{folder} holds no {SVID_CERT} and {SVID_KEY}",
                        fix="give a folder made by `meshlab certs issue --out DIR`")
    server = Admin(admin) if admin else None
    try:
        attempts = [mtls.probe(host, port, tls=None if v == "plain" else v, svid=folder, admin=server, path=url_path)
                    for v in (versions or ("1.3", "1.2"))]
    finally:
        if server is not None:
            server.close()
    if as_json:
        click.echo(json.dumps([a.to_json() for a in attempts], indent=2))
    else:
        for attempt in attempts:
            mark = "[green]✔[/]" if attempt.outcome == "accepted" else "[red]✘[/]"
            ui.console.print(f" {mark} {ui.escape(attempt.describe())}")
            if attempt.server_ids:
                ui.console.print(f"     [dim]server certificate: {ui.escape(', '.join(attempt.server_ids))}[/]")
            reason = attempt.reason
            if reason is not None:
                source = ("alert and server counter agree" if attempt.confirmed else
                          "the server's counter" if attempt.counters_read else "guessed from the alert alone")
                ui.console.print(f"     [bold]why:[/] {ui.escape(reason.words)} [dim]({source})[/]")
            elif attempt.outcome == "rejected" and server is None:
                ui.console.print("     [dim](add --admin to confirm the reason with the server's counters)[/]")
    sys.exit(0 if all(a.outcome == "accepted" for a in attempts) else 1)
