"""In charge of `wsemail keys`: the user's key pair and certificate on this device —
create (key pair + certificate from the home server), show, export, import, renew,
revoke. Finding other users' certificates and opening encrypted mail on this device is
`wsemail.client.usercerts.device`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import typer

from wsemail.client import session
from wsemail.client.usercerts import (
    keystore,
    list_certificates,
    new_private_key,
    request_certificate,
    revoke,
)
from wsemail.protocol.errors import RequestInvalid, UsageError
from wsemail.protocol.soap import parse_int

app = typer.Typer(help="Your key pair and certificate for signed and encrypted mail.")
ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")


@app.command()
def create(
    lifetime_days: int = typer.Option(365, "--days", help="certificate lifetime"),
    force: bool = typer.Option(False, "--force", help="replace a key already on this device"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Make a key pair and have your home server certify it (stored encrypted here)."""
    with session.open_client(server, user) as client:
        if keystore.exists(client.username) and not force:
            raise UsageError(f"{client.username} already has a key here (use --force or renew)")
        passphrase = keystore.storable(client.username)  # before the server certifies it
        user_key = request_certificate(client, new_private_key(), lifetime_days=lifetime_days)
    path = keystore.save(user_key, passphrase=passphrase)
    typer.echo(f"key and certificate for {user_key.address} stored in {path}")
    typer.echo(f"certificate valid until {user_key.cert.not_valid_after_utc:%Y-%m-%d}")


@app.command()
def show(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Your certificates as your server knows them, and the one on this device."""
    with session.open_client(server, user) as client:
        certs = list_certificates(client)
        local = keystore.load(client.username) if keystore.exists(client.username) else None
    here = str(local.cert.serial_number) if local else None
    for info in certs:
        row = {**info.as_dict(), "on_this_device": str(info.serial) == here}
        if as_json:
            typer.echo(json.dumps(row))
        else:
            mark = " (this device)" if row["on_this_device"] else ""
            typer.echo(f"{info.serial}  {info.state:8}  until {info.expires}{mark}")


def _passphrase(prompt: str, from_stdin: bool) -> str:
    env = os.environ.get("WSEMAIL_EXPORT_PASSPHRASE")
    return env or session.read_password(from_stdin, prompt)


@app.command("export")
def export_(
    output: Path = typer.Option(..., "-o", "--output", help="file to write"),
    passphrase_stdin: bool = typer.Option(False, "--passphrase-stdin"),
    user: str | None = UserOpt,
) -> None:
    """Write your key and certificates, protected by an export passphrase."""
    _, address = session.resolve(None, user)
    data = keystore.export_key(address, _passphrase("Export passphrase", passphrase_stdin))
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    typer.echo(f"exported {address}'s key to {output}")


@app.command("import")
def import_(
    source: Path = typer.Argument(..., help="a file written by 'wsemail keys export'"),
    passphrase_stdin: bool = typer.Option(False, "--passphrase-stdin"),
    user: str | None = UserOpt,
) -> None:
    """Store an exported key on this device."""
    _, address = session.resolve(None, user)
    try:
        data = source.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc}") from exc
    user_key = keystore.import_key(
        address, data, _passphrase("Export passphrase", passphrase_stdin)
    )
    typer.echo(f"imported {user_key.address}'s key")


@app.command()
def renew(
    lifetime_days: int = typer.Option(365, "--days", help="certificate lifetime"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """A new certificate for the key on this device (earlier mail still opens)."""
    with session.open_client(server, user) as client:
        current = keystore.load(client.username)
        issued = request_certificate(client, current.key, lifetime_days=lifetime_days)
    keystore.save(current.with_cert(issued.cert, issued.issuer))
    typer.echo(f"renewed until {issued.cert.not_valid_after_utc:%Y-%m-%d}")


@app.command("revoke")
def revoke_(
    serial: str | None = typer.Option(None, "--serial", help="one certificate (default: all)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Revoke your certificates (a lost device); nobody can encrypt to them any more."""
    try:
        number = parse_int(serial, "--serial", 0, 2**160) if serial is not None else None
    except RequestInvalid as exc:
        raise UsageError(f"--serial is a decimal number: {exc.reason}") from exc
    with session.open_client(server, user) as client:
        count = revoke(client, number)
    typer.echo(f"revoked {count} certificate(s)")


def register(app_: typer.Typer) -> None:
    app_.add_typer(app, name="keys")


__all__ = ["app", "register"]
