"""`wsemail export / import`: your mailbox to and from an mbox file or a maildir
(wsemail/client/archive.py; the server side of import: wsemail/server/mailbox/importing.py)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import typer

from wsemail.cli.mail import ServerOpt, UserOpt
from wsemail.client import archive, session
from wsemail.protocol.errors import RemoteFault
from wsemail.protocol.folders import check_name


def _where(mbox: Path | None, maildir: Path | None) -> tuple[Path, str]:
    """A command-line mistake (exit 2) unless exactly one of the two is given."""
    if mbox is not None and maildir is None:
        return mbox, "mbox"
    if maildir is not None and mbox is None:
        return maildir, "maildir"
    raise click.UsageError("give one of --mbox FILE or --maildir DIR")


def _folder(name: str | None) -> str | None:
    if name is None:
        return None
    try:
        return check_name(name)
    except RemoteFault as exc:
        raise click.BadParameter(exc.reason, param_hint="--folder") from exc


def export(
    mbox: Path | None = typer.Option(None, "--mbox", help="write one mbox file (new)"),
    maildir: Path | None = typer.Option(
        None, "--maildir", help="write a maildir (new or empty; other folders as .NAME)"
    ),
    folder: str | None = typer.Option(None, "--folder", help="only this folder (default: all)"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Export your mail (all folders, or one) with its seen/flagged/answered flags."""
    path, kind = _where(mbox, maildir)
    name = _folder(folder)
    with session.open_client(server, user) as client:
        done = archive.export(client, path, kind, name)
    if as_json:
        found = {"messages": done.messages, "folders": done.folders, kind: str(path)}
        typer.echo(json.dumps(found))
    else:
        typer.echo(
            f"exported {done.messages} message(s) from {len(done.folders)} folder(s) to {path}"
        )


def import_(
    mbox: Path | None = typer.Option(None, "--mbox", help="an mbox file"),
    maildir: Path | None = typer.Option(
        None, "--maildir", help="a maildir (its top only, not its .NAME sub-maildirs)"
    ),
    folder: str = typer.Option(
        ..., "--folder", help="into this folder of yours (made if missing; not Drafts/Trash)"
    ),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Import mail from a file into one of your folders, marked imported (never shown as
    signed); a message imported into that folder before is skipped."""
    path, kind = _where(mbox, maildir)
    name = _folder(folder)
    assert name is not None
    items = archive.read_items(path, kind)
    skipped = archive.sub_maildirs(path) if kind == "maildir" else []
    if skipped:
        typer.echo(f"note: sub-maildirs not imported: {', '.join(skipped)}", err=True)
    if not items:
        done = archive.Imported(name, 0, 0)
    else:
        with session.open_client(server, user) as client:
            done = archive.import_items(client, name, items)
    if as_json:
        found = {"folder": done.folder, "imported": done.imported, "duplicates": done.duplicates}
        typer.echo(json.dumps(found))
    else:
        typer.echo(
            f"imported {done.imported} message(s) into {done.folder}"
            + (f" ({done.duplicates} imported before, skipped)" if done.duplicates else "")
        )


def register(app: typer.Typer) -> None:
    app.command()(export)
    app.command("import")(import_)
