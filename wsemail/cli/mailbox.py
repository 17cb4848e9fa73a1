"""`wsemail folders / folder create|rename|delete / move / flag / search`: the mailbox
(server side: wsemail/server/mailbox/)."""

from __future__ import annotations

import json
import re

import typer

from wsemail.cli.mail import ServerOpt, UserOpt, _ids, flags
from wsemail.client import session
from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import MessageHeader

folder_app = typer.Typer(help="Create, rename or delete your own folders.", no_args_is_help=True)
_OPERATOR_VALUE = re.compile(r"([A-Za-z]+:)(.*)", re.DOTALL)


def folders(
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one folder per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List your folders with their message and unread counts."""
    with session.open_client(server, user) as client:
        for folder in client.folders():
            if as_json:
                typer.echo(json.dumps(folder.as_dict()))
            else:
                typer.echo(f"{folder.name:24}  {folder.total:7} messages  {folder.unread:7} unread")


@folder_app.command("create")
def folder_create(
    name: str = typer.Argument(..., help="the new folder's name"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Create a folder."""
    with session.open_client(server, user) as client:
        typer.echo(f"created {client.create_folder(name)}")


@folder_app.command("rename")
def folder_rename(
    name: str = typer.Argument(..., help="one of your own folders"),
    new_name: str = typer.Argument(..., help="its new name"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Rename one of your own folders (its messages go with it)."""
    with session.open_client(server, user) as client:
        typer.echo(f"renamed {name} to {client.rename_folder(name, new_name)}")


@folder_app.command("delete")
def folder_delete(
    name: str = typer.Argument(..., help="one of your own folders, empty"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Delete one of your own folders; it must be empty."""
    with session.open_client(server, user) as client:
        typer.echo(f"deleted folder {client.delete_folder(name)}")


def move(
    args: list[str] = typer.Argument(..., help="ID… FOLDER (ids also one per line on stdin)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Move messages to a folder: all of them, or none if one id is unknown."""
    *ids, folder = args
    message_ids = _ids(ids)
    with session.open_client(server, user) as client:
        moved = client.move(message_ids, folder)
    typer.echo(f"moved {moved} message(s) to {folder}")


def flag(
    ids: list[str] = typer.Argument(None, help="message ids (else read from stdin)"),
    seen: bool | None = typer.Option(None, "--seen/--unseen", help="mark read / unread"),
    star: bool | None = typer.Option(None, "--star/--unstar", help="flag / unflag"),
    answered: bool | None = typer.Option(None, "--answered/--unanswered"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Set or clear flags on messages: seen, flagged (star), answered."""
    if seen is None and star is None and answered is None:
        raise UsageError("say which flag: --seen/--unseen, --star/--unstar, --answered")
    message_ids = _ids(ids)
    with session.open_client(server, user) as client:
        client.set_flags(message_ids, seen=seen, flagged=star, answered=answered)
    typer.echo(f"flagged {len(message_ids)} message(s)")


def _query(words: list[str]) -> str:
    """The shell took the quotes off `subject:"weekly report"`: put them back on an
    argument with a space in it."""
    parts = []
    for word in words:
        if any(c.isspace() for c in word) and '"' not in word:
            found = _OPERATOR_VALUE.fullmatch(word)
            word = f'{found.group(1)}"{found.group(2)}"' if found else f'"{word}"'
        parts.append(word)
    return " ".join(parts)


def _line(header: MessageHeader) -> str:
    return (
        f"{flags(header)} {header.id:16}  {header.date}  {header.folder:10.10}  "
        f"{header.sender:24.24}  {header.subject}"
    )


def search(
    query: list[str] = typer.Argument(
        ...,
        help='words, "phrases", from: to: subject: has:attachment is:unread|read|flagged|'
        "answered in:FOLDER before:/after:YYYY-MM-DD",
    ),
    limit: int = typer.Option(50, "--limit", help="at most this many (0: all)"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one header per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Search your mailbox on the server, newest first (every folder but Trash unless
    in:FOLDER). Encrypted bodies cannot be searched."""
    if limit < 0:
        raise UsageError("--limit must not be negative")
    text = _query(query)
    shown = 0
    cursor: str | None = None
    with session.open_client(server, user) as client:
        while True:
            page_size = 100 if limit == 0 else min(100, limit - shown)
            page = client.search(text, limit=page_size, cursor=cursor)
            if cursor is None and page.encrypted_not_searched:
                typer.echo(
                    f"note: {page.encrypted_not_searched} message(s) with encrypted bodies "
                    "were searched by their headers only",
                    err=True,
                )
            for header in page.headers:
                typer.echo(json.dumps(header.as_dict()) if as_json else _line(header))
            shown += len(page.headers)
            cursor = page.next_cursor
            if not cursor or (limit and shown >= limit):
                return


def register(app: typer.Typer) -> None:
    app.command()(folders)
    app.add_typer(folder_app, name="folder")
    app.command()(move)
    app.command()(flag)
    app.command()(search)
