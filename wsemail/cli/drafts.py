"""`wsemail draft save / list / edit / send / delete`: drafts kept on your server, in Drafts
(client side: wsemail/client/drafts.py; server side: wsemail/server/mailbox/drafts.py)."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import typer

from wsemail.cli.mail import ServerOpt, UserOpt
from wsemail.client import session
from wsemail.client.drafts import Drafts, addresses, from_text, to_text
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import UsageError

app = typer.Typer(
    help="Drafts kept on your server: save, list, edit in $EDITOR, send.", no_args_is_help=True
)


def _stdin_text() -> str | None:
    """The text piped in, if any (an empty pipe gives none)."""
    if sys.stdin.isatty():
        return None
    text = sys.stdin.read()
    return text or None


@app.command("save")
def save(
    to: list[str] = typer.Option([], "--to", help="recipient (repeatable)"),
    cc: list[str] = typer.Option([], "--cc", help="copy to (repeatable)"),
    bcc: list[str] = typer.Option([], "--bcc", help="blind copy to (repeatable)"),
    subject: str | None = typer.Option(None, "--subject", "-s"),
    body: str | None = typer.Option(None, "--body", help="the text (else stdin)"),
    draft_id: str | None = typer.Option(
        None, "--id", help="replace this draft (what no option gives is kept)"
    ),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Save a draft on your server (or replace one with --id); prints its id."""
    text = body if body is not None else _stdin_text()
    wanted: dict[str, Any] = {
        "to": addresses(",".join(to)) if to else None,
        "cc": addresses(",".join(cc)) if cc else None,
        "bcc": addresses(",".join(bcc)) if bcc else None,
        "subject": subject,
        "body": text,
    }
    changes = {name: value for name, value in wanted.items() if value is not None}
    with session.open_client(server, user) as client:
        drafts = Drafts(client)
        base = drafts.get(draft_id) if draft_id else SavedDraft()
        saved = drafts.save(replace(base, **changes), draft_id=draft_id)
    typer.echo(json.dumps(saved.as_dict()) if as_json else saved.id)


@app.command("list")
def list_(
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one draft per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List your drafts, the most recently made first."""
    with session.open_client(server, user) as client:
        for draft in Drafts(client).list():
            if as_json:
                found = draft.as_dict()
                found.pop("body", None)
                typer.echo(json.dumps(found))
                continue
            to = ", ".join(draft.recipients) or "(no recipient)"
            typer.echo(f"{draft.id:16}  {draft.saved}  {to:28.28}  {draft.subject}")


def editor_command() -> list[str]:
    return shlex.split(os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi")


@app.command("edit")
def edit(
    draft_id: str = typer.Argument(..., metavar="ID", help="the draft's id (wsemail draft list)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Edit a draft in $VISUAL / $EDITOR and save it back.

    The text: To:, Cc:, Bcc: and Subject: lines, an empty line, the body."""
    with session.open_client(server, user) as client:
        drafts = Drafts(client)
        draft = drafts.get(draft_id)
        before = to_text(draft)
        folder = Path(tempfile.mkdtemp(prefix="wsemail-draft-"))
        path = folder / "draft.txt"
        path.write_text(before, encoding="utf-8")
        try:
            code = subprocess.run([*editor_command(), str(path)], check=False).returncode
        except OSError as exc:
            raise UsageError(f"cannot start the editor: {exc}") from exc
        if code != 0:
            path.unlink()
            folder.rmdir()
            raise UsageError(f"the editor exited with {code}: the draft is unchanged")
        after = path.read_text(encoding="utf-8")
        if after == before:
            path.unlink()
            folder.rmdir()
            typer.echo(f"unchanged: {draft_id}")
            return
        try:
            new = from_text(after, draft)
        except UsageError as exc:
            raise UsageError(f"{exc}; not saved, your text is in {path}") from exc
        drafts.save(new, draft_id=draft_id)
        path.unlink()
        folder.rmdir()
    typer.echo(f"saved: {draft_id}")


@app.command("send")
def send(
    draft_id: str = typer.Argument(..., metavar="ID", help="the draft's id"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Send a draft: it leaves Drafts; its sent copy keeps the id."""
    with session.open_client(server, user) as client:
        result = Drafts(client).send(draft_id)
    if as_json:
        typer.echo(json.dumps({"id": result.id, "message_id": result.message_id}))
    else:
        typer.echo(result.id)


@app.command("delete")
def delete(
    draft_id: str = typer.Argument(..., metavar="ID", help="the draft's id"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Delete a draft for good."""
    with session.open_client(server, user) as client:
        Drafts(client).delete(draft_id)
    typer.echo(f"deleted: {draft_id}")


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="draft")
