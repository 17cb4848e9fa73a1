"""`wsemail thread / reply / forward`: conversations from the command line (the library
side: wsemail/client/replies.py; `wsemail list --threads` is in cli/mail.py)."""

from __future__ import annotations

import json
import sys

import click
import typer

from wsemail.cli.mail import (
    BccOpt,
    ServerOpt,
    UserOpt,
    _answer_line,
    _e2e_line,
    _instant_line,
)
from wsemail.client import replies, session
from wsemail.client.mail import SendResult
from wsemail.protocol.errors import SignatureInvalid, UsageError

HIDDEN = "(content hidden: its signature check FAILED; --show-unverified shows it anyway)"
RULE = "─" * 72


def thread(
    message_id: str = typer.Argument(..., metavar="ID", help="any message of the conversation"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one message per line"),
    peek: bool = typer.Option(False, "--peek", help="do not mark them seen"),
    show_unverified: bool = typer.Option(
        False, "--show-unverified", help="also print a message whose signature check FAILED"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Print a whole conversation, oldest first, each message checked as `retrieve` does
    (one whose signature check fails is hidden unless --show-unverified; exit 2)."""
    from wsemail.client.usercerts.device import open_messages

    failed: list[str] = []
    with session.open_client(server, user) as client:
        messages = client.thread(message_id, peek=peek)
        for n, raw in enumerate(messages):
            proof, message = client.verify(raw)
            message, sealed = open_messages(client, message)
            if proof.status == "failed":
                failed.append(message.id)
                if not show_unverified:
                    message.subject, message.body = "(hidden)", HIDDEN
            if as_json:
                typer.echo(json.dumps({**message.as_dict(), "provenance": proof.as_dict()}))
                continue
            if n:
                typer.echo(RULE)
            typer.echo(f"Id: {message.id}  ({message.folder})\nFrom: {message.sender}")
            typer.echo(f"To: {', '.join(message.to)}")
            if message.cc:
                typer.echo(f"Cc: {', '.join(message.cc)}")
            if message.bcc:
                typer.echo(f"Bcc: {', '.join(message.bcc)}")
            if message.instant:
                typer.echo(f"Sent as: {_instant_line(message)}")
            typer.echo(
                f"Date: {message.date}\nSubject: {message.subject}\nProvenance: {proof}"
                f"{_e2e_line(sealed)}\n\n{message.body}"
            )
        answer_line = _answer_line(client.answer_check).strip()
        if answer_line and not as_json:
            typer.echo(f"\n{answer_line}")
    if failed:
        raise SignatureInvalid(
            f"the signature check FAILED for {len(failed)} message(s): {', '.join(failed)}"
        )


def _text(body: str | None, edit: bool, below: str, what: str) -> tuple[str, bool]:
    """(text, whole): the text from --body, stdin or $EDITOR; `whole` when it is the whole
    body (written in the editor around the quote), else it goes above `below`."""
    if body is not None and not edit:
        return body, False
    if not edit and not sys.stdin.isatty():
        return sys.stdin.read(), False
    start = (body or "") + "\n\n" + below
    try:
        written = click.edit(start, extension=".txt", require_save=True)
    except click.ClickException as exc:
        raise UsageError(f"cannot run the editor: {exc.format_message()}") from exc
    if written is None or not written.strip() or written.strip() == below.strip():
        raise UsageError(f"nothing written: the {what} was not sent")
    return written, True


def _echo(result: SendResult, as_json: bool) -> None:
    typer.echo(
        json.dumps({"id": result.id, "message_id": result.message_id}) if as_json else result.id
    )


def reply(
    message_id: str = typer.Argument(..., metavar="ID", help="the message to answer"),
    to_all: bool = typer.Option(False, "--all", help="also to everyone else on To and Cc"),
    body: str | None = typer.Option(
        None, "--body", help="the text above the quote (else stdin, or $EDITOR on a terminal)"
    ),
    edit: bool = typer.Option(False, "--edit", help="write it in $VISUAL / $EDITOR"),
    bcc: list[str] = BccOpt,
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Reply to the sender (--all: to everyone on it): "Re: " subject, your text above the
    quoted original, in the same conversation; the original is marked answered."""
    with session.open_client(server, user) as client:
        _, original = replies.original(client, message_id)
        answer = replies.reply_to(original, client.username, to_all=to_all)
        text, whole = _text(body, edit, answer.below, "reply")
        if not whole and not text.strip():
            raise UsageError("nothing to say: give --body, text on stdin, or --edit")
        full = text if whole else answer.body(text)
        result = replies.send_reply(client, answer, full, bcc=bcc)
    _echo(result, as_json)


def forward(
    message_id: str = typer.Argument(..., metavar="ID", help="the message to forward"),
    to: list[str] = typer.Option([], "--to", help="recipient (repeatable)"),
    cc: list[str] = typer.Option([], "--cc", help="copy to (repeatable)"),
    bcc: list[str] = BccOpt,
    body: str | None = typer.Option(
        None, "--body", help="a text above the forwarded message (else stdin, if piped)"
    ),
    edit: bool = typer.Option(False, "--edit", help="write it in $VISUAL / $EDITOR"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Forward a message with its attachments (fetched, checked and uploaded again to your
    server): "Fwd: " subject, your text above the original's headers and body."""
    if not to:
        raise UsageError("no recipient: give --to (repeatable)")
    with session.open_client(server, user) as client:
        proof, original = replies.original(client, message_id)
        refs = replies.attachments_of(client, message_id, proof, original)
        answer = replies.forward_of(original, refs)
        if body is None and not edit and sys.stdin.isatty():
            text, whole = "", False
        else:
            text, whole = _text(body, edit, answer.below, "forward")
        full = text if whole else answer.body(text)
        result = replies.send_forward(client, answer, to, full, cc=cc, bcc=bcc)
    _echo(result, as_json)


def register(app: typer.Typer) -> None:
    app.command()(thread)
    app.command()(reply)
    app.command()(forward)
