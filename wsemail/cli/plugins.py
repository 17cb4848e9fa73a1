"""`wsemail plugins list / load / unload / priority`: change a running server's pipeline
through the authenticated admin extension."""

from __future__ import annotations

import json

import typer
from lxml import etree

from wsemail.client.session import open_client
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
