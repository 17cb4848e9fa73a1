"""`wsemail ca init / issue-server / revoke / crl / list`: the federation root's folder."""

from __future__ import annotations

import json
from pathlib import Path

import platformdirs
import typer

from wsemail.pki import (
    create_root,
    fingerprint,
    issue_server,
    list_issued,
    read_cert,
    read_crl,
    revoke,
    write_crl,
)
from wsemail.protocol.errors import UsageError

app = typer.Typer(
    help="Run the federation root: issue domain servers' certificates, revoke, publish CRLs.",
    no_args_is_help=True,
)

CaDirOpt = typer.Option(None, "--ca-dir", help="the root's folder (default: per-user data dir)")


def default_ca_dir() -> Path:
    return Path(platformdirs.user_data_dir("wsemail", appauthor=False)) / "ca"


def parse_serial(text: str) -> int:
    """A serial number in decimal or 0x-hex."""
    cleaned = text.strip().lower()
    try:
        serial = int(cleaned[2:], 16) if cleaned.startswith("0x") else int(cleaned, 10)
    except ValueError as exc:
        raise UsageError(f"not a serial number (decimal or 0x-hex): {text!r}") from exc
    if serial <= 0:
        raise UsageError(f"serial numbers are positive, not {text!r}")
    return serial


@app.command()
def init(
    ca_dir: Path | None = CaDirOpt,
    name: str = typer.Option("wsemail federation root", help="the root's common name"),
    days: int = typer.Option(3650, help="validity in days"),
) -> None:
    """Create the self-signed federation root (never overwrites one)."""
    path = create_root(ca_dir or default_ca_dir(), name=name, days=days)
    typer.echo(f"root certificate: {path}")
    typer.echo(f"SHA-256 fingerprint: {fingerprint(read_cert(path))}")


@app.command("issue-server")
def issue_server_(
    domain: str,
    ca_dir: Path | None = CaDirOpt,
    out: Path | None = typer.Option(None, "--out", help="output folder (default: ./DOMAIN)"),
    days: int = typer.Option(365, help="validity in days"),
) -> None:
    """Issue a domain's server certificate and issuing CA, with their keys."""
    files = issue_server(ca_dir or default_ca_dir(), domain, out or Path(domain), days=days)
    server = read_cert(files.server_cert)
    issuing = read_cert(files.issuing_cert)
    typer.echo(f"server certificate: {files.server_cert}  (serial {server.serial_number:#x})")
    typer.echo(f"server key:         {files.server_key}")
    typer.echo(f"issuing CA:         {files.issuing_cert}  (serial {issuing.serial_number:#x})")
    typer.echo(f"issuing CA key:     {files.issuing_key}")
    typer.echo(f"trust anchor:       {files.root_cert}")
    typer.echo(f"valid until {server.not_valid_after_utc:%Y-%m-%d %H:%M} UTC")


def _publish(ca_dir: Path, days: int) -> None:
    path = write_crl(ca_dir, days=days)
    next_update = read_crl(path).next_update_utc
    typer.echo(f"CRL: {path}  (next update {next_update:%Y-%m-%d %H:%M} UTC)")


@app.command("revoke")
def revoke_(
    serial: str,
    ca_dir: Path | None = CaDirOpt,
    days: int = typer.Option(7, help="validity of the rewritten CRL in days"),
) -> None:
    """Revoke a server certificate or issuing CA, then rewrite the CRL."""
    folder = ca_dir or default_ca_dir()
    number = parse_serial(serial)
    revoke(folder, number)
    typer.echo(f"revoked {number:#x}")
    _publish(folder, days)


@app.command()
def crl(
    ca_dir: Path | None = CaDirOpt,
    days: int = typer.Option(7, help="days until the next update"),
) -> None:
    """Write or refresh the root's CRL (crl.pem)."""
    _publish(ca_dir or default_ca_dir(), days)


@app.command("list")
def list_(
    ca_dir: Path | None = CaDirOpt,
    as_json: bool = typer.Option(False, "--json", help="one JSON array"),
) -> None:
    """List the certificates the root issued."""
    records = list_issued(ca_dir or default_ca_dir())
    if as_json:
        typer.echo(json.dumps([r.to_json() for r in records], indent=2))
        return
    for r in records:
        revoked = f"revoked {r.revoked_at:%Y-%m-%d}" if r.revoked_at else ""
        typer.echo(
            f"{r.serial:#x}  {r.kind:<7}  {r.domain or '-':<20}  "
            f"{r.not_after:%Y-%m-%d}  {revoked}".rstrip()
        )
