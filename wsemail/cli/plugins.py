"""`wsemail plugins list / load / unload / priority`: change a running server's pipeline
through the authenticated admin extension; `wsemail plugins queue`: its outbound queue."""

from __future__ import annotations

import json

import typer
from lxml import etree

from wsemail.client.session import open_client
from wsemail.core.units import duration as _duration
from wsemail.protocol.soap import q

app = typer.Typer(help="Server plug-ins of a running server (admin account).", no_args_is_help=True)
ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="admin address (or WSEMAIL_USER)")


def _call(
    server: str | None, user: str | None, action: str, as_json: bool = False, **attrs: str
) -> None:
    request = etree.Element(q("Admin"), {"action": action, **attrs})
    with open_client(server, user) as client:
        answer = client.extension("admin", request)
    rows = [dict(node.attrib) for node in (answer if answer is not None else [])]
    for row in rows:
        if as_json:
            typer.echo(json.dumps(row))
        else:
            typer.echo(
                f"{row['priority']:>6}  {row['name']:16} {row['interfaces']:24} {row['ref']}"
            )


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Loaded plug-ins in the order they run."""
    _call(server, user, "list", as_json)


@app.command()
def load(
    ref: str = typer.Argument(..., help="entry-point name or module:Class"),
    priority: int = typer.Option(100, "--priority"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Load a plug-in into the running server."""
    _call(server, user, "load", ref=ref, priority=str(priority))


@app.command()
def unload(name: str, server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Unload a plug-in from the running server."""
    _call(server, user, "unload", name=name)


@app.command()
def priority(
    name: str, value: int, server: str | None = ServerOpt, user: str | None = UserOpt
) -> None:
    """Change when a plug-in runs (lower runs first)."""
    _call(server, user, "priority", name=name, priority=str(value))


@app.command()
def queue(
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one destination per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Outbound mail waiting per destination domain: how many, the oldest's age, when the
    next attempt is due, and the last error."""
    request = etree.Element(q("Admin"), {"action": "queue"})
    with open_client(server, user) as client:
        answer = client.extension("admin", request)
    rows = [dict(node.attrib) for node in (answer if answer is not None else [])]
    if as_json:
        for row in rows:
            typer.echo(json.dumps({k: _number(v) for k, v in row.items()}))
        return
    if not rows:
        typer.echo("the outbound queue is empty")
        return
    typer.echo(f"{'domain':24} {'depth':>5} {'oldest':>7} {'next in':>7} {'tries':>5}  last error")
    for row in rows:
        typer.echo(
            f"{row['name']:24} {row['depth']:>5} {_duration(int(row['oldest-age'])):>7} "
            f"{_duration(int(row['next-attempt-in'])):>7} {row['attempts']:>5}  "
            f"{row['last-error'][:100]}"
        )


def _number(value: str) -> str | int:
    return int(value) if value.isdigit() else value
