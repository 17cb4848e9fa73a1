"""`wsemail filters set FILE | show | test FILE` and `wsemail vacation on | off | show`:
the user's own rules, run by their server at delivery (server side:
wsemail/server/filters/)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from wsemail.cli.mail import ServerOpt, UserOpt
from wsemail.client import session
from wsemail.client.filters import Filters, Vacation
from wsemail.core.sieve import SieveError, evaluate, parse, view_of_mime
from wsemail.protocol.errors import UsageError

filters_app = typer.Typer(
    help="Your Sieve filters, run by your server when mail arrives.", no_args_is_help=True
)
vacation_app = typer.Typer(
    help="The vacation responder: one automatic reply per sender per N days.",
    no_args_is_help=True,
)


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _checked(path: Path) -> str:
    text = _read(path)
    try:
        if text.strip():
            parse(text)
    except SieveError as exc:
        where = f"{path}:{exc.line}:{exc.column}: " if exc.line else f"{path}: "
        raise UsageError(f"{where}{exc.reason}") from exc
    return text


@filters_app.command("set")
def set_(
    file: Path = typer.Argument(..., help="the Sieve script (an empty file removes yours)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Make FILE your filter script; a script with an error is refused whole."""
    text = _checked(file)
    with session.open_client(server, user) as client:
        Filters(client).set_script(text)
    typer.echo("filters set" if text.strip() else "filters removed")


@filters_app.command("show")
def show(server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Print your filter script."""
    with session.open_client(server, user) as client:
        text = Filters(client).script()
    if text:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        typer.echo("no filters", err=True)


@filters_app.command("test")
def test(
    file: Path = typer.Argument(..., help="a Sieve script; the message (RFC 5322) on stdin"),
) -> None:
    """Dry run: print the actions FILE takes for the message on stdin (nothing is sent)."""
    text = _checked(file)
    if sys.stdin.isatty():
        raise UsageError("give the message on stdin: wsemail filters test FILE < message.eml")
    data = sys.stdin.buffer.read(64 << 20)
    actions = evaluate(parse(text), view_of_mime(data)) if text.strip() else []
    for action in actions or []:
        typer.echo(action.describe())
    if not actions:
        typer.echo("keep")


def _show(vacation: Vacation, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(vacation.as_dict()))
        return
    if not vacation.on:
        typer.echo("vacation: off")
        return
    until = f" until {vacation.until}" if vacation.until else ""
    typer.echo(f"vacation: on{until}, one reply per sender per {vacation.days} day(s)")
    typer.echo(f"Subject: {vacation.subject or '(Auto: the original subject)'}")
    typer.echo("")
    typer.echo(vacation.body)


@vacation_app.command("on")
def on(
    subject: str = typer.Option("", "--subject", help="the reply's subject"),
    body: str = typer.Option(..., "--body", help="the reply's text"),
    until: str | None = typer.Option(None, "--until", help="last day (YYYY-MM-DD)"),
    days: int = typer.Option(7, "--days", help="days before the same sender is answered again"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Turn the vacation responder on."""
    with session.open_client(server, user) as client:
        _show(Filters(client).set_vacation(subject, body, days=days, until=until), False)


@vacation_app.command("off")
def off(server: str | None = ServerOpt, user: str | None = UserOpt) -> None:
    """Turn the vacation responder off."""
    with session.open_client(server, user) as client:
        _show(Filters(client).vacation_off(), False)


@vacation_app.command("show")
def show_vacation(
    as_json: bool = typer.Option(False, "--json", help="as one JSON object"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Show the vacation responder's settings."""
    with session.open_client(server, user) as client:
        _show(Filters(client).vacation(), as_json)


def register(app: typer.Typer) -> None:
    app.add_typer(filters_app, name="filters")
    app.add_typer(vacation_app, name="vacation")
