"""`wsemail send / list / retrieve / delete`: the scriptable client (login: cli/login.py)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import typer

from wsemail.client import session
from wsemail.client.admin import storage_usage
from wsemail.client.mail import Conversation
from wsemail.protocol.errors import SignatureInvalid, UsageError
from wsemail.protocol.message import MessageHeader

ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")
BccOpt = typer.Option(
    [], "--bcc", help="blind copy to (repeatable): no other recipient sees it, signed or not"
)


def _ids(ids: list[str] | None) -> list[str]:
    """Ids from the arguments, or one per line on stdin (`wsemail list --json | jq …`)."""
    if ids:
        return ids
    if sys.stdin.isatty():
        raise UsageError("give message ids as arguments or one per line on stdin")
    found = [line.strip() for line in sys.stdin if line.strip()]
    if not found:
        raise UsageError("no message ids on stdin")
    return found


def flags(header: MessageHeader) -> str:
    """N unread, * flagged (starred), A answered."""
    return (
        ("N" if not header.seen else " ")
        + ("*" if header.flagged else " ")
        + ("A" if header.answered else " ")
    )


def _line(header: MessageHeader) -> str:
    return f"{flags(header)} {header.id:16}  {header.date}  {header.sender:28.28}  {header.subject}"


def _conversation(conversation: Conversation) -> str:
    """A conversation: its subject, size and unread count, then its latest messages."""
    first = conversation.headers[0] if conversation.headers else None
    unread = f", {conversation.unread} unread" if conversation.unread else ""
    count = f"{conversation.count} message{'' if conversation.count == 1 else 's'}"
    title = f"== {first.subject if first else ''}  ({count}{unread})"
    more = conversation.count - len(conversation.headers)
    lines = [title, *(f"  {_line(h)}" for h in conversation.headers)]
    if more > 0:
        lines.insert(1, f"  … {more} older")
    return "\n".join(lines)


def send(
    to: list[str] = typer.Option(
        [], "--to", help="recipient (repeatable; with --form: default the route's first step)"
    ),
    cc: list[str] = typer.Option([], "--cc", help="copy to (repeatable)"),
    bcc: list[str] = BccOpt,
    subject: str = typer.Option("", "--subject", "-s"),
    body: str | None = typer.Option(None, "--body", help="the text (else --body-file or stdin)"),
    body_file: Path | None = typer.Option(None, "--body-file", help="read the text from a file"),
    attach: list[Path] = typer.Option(
        [],
        "--attach",
        help="attach a file (repeatable); with --encrypt it is encrypted on this device and "
        "always left on your server on demand",
    ),
    on_demand: bool = typer.Option(
        True,
        "--on-demand/--inline",
        help="attachments stay on your server until fetched (inline: not supported yet)",
    ),
    as_json: bool = typer.Option(False, "--json"),
    encrypt: bool = typer.Option(
        False, "--encrypt", help="end to end to every recipient's certificate (wsemail keys)"
    ),
    sign: bool = typer.Option(True, "--sign/--no-sign", help="with --encrypt: sign as well"),
    form: Path | None = typer.Option(
        None, "--form", help="send a form from a JSON draft (wsemail forms)"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Send a message; the text comes from --body, --body-file or stdin."""
    if bcc and (form is not None or encrypt):
        raise UsageError("--bcc does not go with --form or --encrypt (they name every recipient)")
    if form is not None:
        from wsemail.cli.forms import send_form

        typer.echo(send_form(form, to, subject, server, user))
        return
    if not to:
        raise UsageError("no recipient: give --to (repeatable)")
    if body is None:
        if body_file is not None:
            try:
                body = body_file.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise UsageError(f"cannot read {body_file}: {exc}") from exc
        elif not sys.stdin.isatty():
            body = sys.stdin.read()
        else:
            body = ""
    if attach and not on_demand:
        raise UsageError("inline attachments are not supported yet; use --on-demand")
    with session.open_client(server, user) as client:
        if encrypt:
            from wsemail.client.usercerts import keystore, send_encrypted
            from wsemail.client.usercerts.device import open_directory

            own = keystore.load(client.username)
            with open_directory() as directory:
                result = send_encrypted(
                    client,
                    own,
                    directory,
                    to,
                    subject,
                    body,
                    cc=cc,
                    sign=sign,
                    attachments=attach,
                    progress=_upload_bar,
                )
            typer.echo(
                json.dumps({"id": result.id, "message_id": result.message_id})
                if as_json
                else result.id
            )
            return
        uploads: list[str] = []
        if attach:
            from wsemail.cli.attachments import progress_bar
            from wsemail.client.attachments import Attachments

            box = Attachments(client)
            for path in attach:
                size = path.stat().st_size if path.is_file() else 0
                with progress_bar(path.name, size) as callback:
                    uploads.append(box.upload(path, progress=callback).guid)
        result = client.send(to, subject, body, cc=cc, bcc=bcc, attachments=uploads)
    if as_json:
        typer.echo(json.dumps({"id": result.id, "message_id": result.message_id}))
    else:
        typer.echo(result.id)


def _upload_bar(path: Path) -> AbstractContextManager[Callable[[int, int], None] | None]:
    from wsemail.cli.attachments import progress_bar

    return progress_bar(path.name, path.stat().st_size)


def list_(
    folder: str = typer.Option(
        "inbox",
        "--folder",
        help="inbox, sent, Archive, Drafts, Trash or your own (wsemail folders)",
    ),
    unread: bool = typer.Option(False, "--unread", help="only unread messages"),
    limit: int = typer.Option(0, "--limit", help="at most this many (0: all)"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one header per line"),
    threads: bool = typer.Option(
        False, "--threads", help="by conversation (--json: one conversation per line)"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List message headers, newest first (pages through large mailboxes). Flags: N unread,
    * flagged, A answered. With --threads, conversations: the one with the newest message
    in the folder first, then its latest messages (`wsemail thread ID` shows it all)."""
    if limit < 0:
        raise UsageError("--limit must not be negative")
    with session.open_client(server, user) as client:
        if threads:
            for count, conversation in enumerate(
                client.iter_threads(folder, unread_only=unread), 1
            ):
                typer.echo(
                    json.dumps(conversation.as_dict()) if as_json else _conversation(conversation)
                )
                if count == limit:
                    break
            return
        for count, header in enumerate(client.iter_headers(folder, unread_only=unread), 1):
            typer.echo(json.dumps(header.as_dict()) if as_json else _line(header))
            if count == limit:
                break
        if not as_json:  # NDJSON stays one header per line
            usage = storage_usage(client)
            if usage is not None:
                typer.echo(usage.describe())


def retrieve(
    ids: list[str] = typer.Argument(None, help="message ids (else read from stdin)"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one message per line"),
    peek: bool = typer.Option(False, "--peek", help="do not mark them seen"),
    show_unverified: bool = typer.Option(
        False, "--show-unverified", help="also print a message whose signature check FAILED"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Print messages (and mark them seen, unless --peek). A message whose provenance check
    fails is shown without its content unless --show-unverified; the exit is non-zero."""
    unopened: list[str] = []
    failed: list[str] = []
    with session.open_client(server, user) as client:
        for message_id in _ids(ids):
            proof, message = client.verify(client.retrieve(message_id, peek=peek))
            from wsemail.client.usercerts.device import open_messages

            message, sealed = open_messages(client, message)
            if proof.status == "failed":
                failed.append(message.id)
                if not show_unverified:  # never shown as if it were verified
                    message.subject, message.body = (
                        "(hidden)",
                        (
                            "(content hidden: its signature check FAILED; "
                            "--show-unverified shows it anyway)"
                        ),
                    )
            if "error" in sealed:  # ciphertext is no use to anyone: say why, in one line
                unopened.append(f"{message.id} ({sealed['error']})")
                if as_json:
                    typer.echo(json.dumps({**message.as_dict(), "body": None, "e2e": sealed}))
                continue
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            **message.as_dict(),
                            "provenance": proof.as_dict(),
                            "e2e": sealed,
                            "answer": client.answer_check,
                        }
                    )
                )
                continue
            typer.echo(
                f"Id: {message.id}\nMessage-Id: {message.message_id}\n"
                f"From: {message.sender}\nTo: {', '.join(message.to)}"
            )
            if message.instant:
                typer.echo(f"Sent as: {_instant_line(message)}")
            if message.cc:
                typer.echo(f"Cc: {', '.join(message.cc)}")
            typer.echo(
                f"Date: {message.date}\nSubject: {message.subject}\nProvenance: {proof}"
                f"{_e2e_line(sealed)}{_answer_line(client.answer_check)}\n\n{message.body}"
            )
    if unopened:
        raise UsageError(f"cannot decrypt {len(unopened)} message(s) here: {'; '.join(unopened)}")
    if failed:
        raise SignatureInvalid(
            f"the signature check FAILED for {len(failed)} message(s): {', '.join(failed)}"
        )


def _instant_line(message: MessageHeader) -> str:
    if message.delete_if_undeliverable:
        return "instant message (delete if undeliverable)"
    return "instant message"


def _answer_line(check: str | None) -> str:
    """Whether the server's answer was signed and checked (needs trust roots)."""
    if check == "verified":
        return "\nServer answer: signed by your server ✓"
    return "\nServer answer: not checked (no trust roots configured)" if check else ""


def _e2e_line(sealed: dict[str, object]) -> str:
    from wsemail.client.usercerts.sealed import status_line

    line = status_line(sealed)
    return f"\nEncrypted: {line}" if line else ""


def delete(
    ids: list[str] = typer.Argument(None, help="message ids (else read from stdin)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Move messages to Trash; deleting a message in Trash is final."""
    with session.open_client(server, user) as client:
        for message_id in _ids(ids):
            outcome = client.delete(message_id)
            done = "moved to Trash" if outcome == "trashed" else "deleted"
            typer.echo(f"{done}: {message_id}")


def register(app: typer.Typer) -> None:
    app.command()(send)
    app.command("list")(list_)
    app.command()(retrieve)
    app.command()(delete)
