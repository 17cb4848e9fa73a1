"""`wsemail attachments ID [--audit] [--revoke NAME]` and `wsemail fetch ID [--name N]
[-o PATH]`: on-demand attachments from the command line (a progress bar on a terminal).
Attachments of encrypted mail are listed under their sealed names and decrypted on fetch
with the key on this device (`wsemail keys`)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from wsemail.client import session
from wsemail.core.units import byte_size
from wsemail.protocol.errors import UsageError, WsemailError
from wsemail.protocol.message import AttachmentRef

if TYPE_CHECKING:
    from wsemail.client.attachments import Listing
    from wsemail.client.mail import Client
    from wsemail.client.usercerts import EncryptedAttachment

ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")


@contextmanager
def progress_bar(label: str, total: int) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on a terminal (stderr), nothing otherwise; yields a callback."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TransferSpeedColumn,
    )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        task = bar.add_task(escape(label), total=total)  # names come from senders
        yield lambda done, _total: bar.update(task, completed=done)


def attachments(
    message: str = typer.Argument(..., help="message id (from `wsemail list`)"),
    audit: bool = typer.Option(False, "--audit", help="who fetched what, when (sender only)"),
    revoke: str | None = typer.Option(None, "--revoke", help="revoke access to this name"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """List a message's on-demand attachments (or their fetch log with --audit)."""
    from wsemail.client.attachments import Attachments
    from wsemail.client.usercerts.device import open_attachments
    from wsemail.protocol.soap import q, text_of

    with session.open_client(server, user) as client:
        box = Attachments(client)
        if revoke is not None:
            listing = box.list(message)
            names = _names(client, listing)
            matches = [r for r in listing.refs if revoke in (names[r.guid], r.guid)]
            if not matches:
                raise UsageError(f"no attachment named {revoke!r} in that message")
            for ref in matches:
                box.revoke(ref.guid)
                typer.echo(f"revoked {names[ref.guid]} ({ref.guid})")
            return
        if audit:
            log = box.audit(message)
            names = _names(client, box.list(message))
            for node in log.findall(q("Attachment")):
                guid = text_of(node, "Guid", "") or ""
                name = names.get(guid) or text_of(node, "Name", "") or ""
                events = [dict(e.attrib) for e in node.findall(q("Event"))]
                if as_json:
                    typer.echo(json.dumps({"name": name, "events": events}))
                    continue
                typer.echo(f"{name}  ({text_of(node, 'State', '')})")
                for event in events:
                    when = datetime.fromtimestamp(float(event["at"]), UTC)
                    span = f"bytes {event['first-byte']}-{event['last-byte']}"
                    typer.echo(
                        f"  {when:%Y-%m-%d %H:%M:%S}Z  {event['address']:28}  {event['event']}"
                        + (f"  {span}" if event["event"] == "download" else "")
                    )
            return
        listing = box.list(message)
        encrypted = open_attachments(client, listing)
        if encrypted is not None:
            for item in encrypted:
                state = listing.states.get(item.ref.guid, "")
                if as_json:
                    typer.echo(json.dumps({**item.as_dict(), "state": state}))
                else:
                    typer.echo(
                        f"{item.name:32}  {byte_size(item.size):>9}  {item.media_type:24}  "
                        f"{item.ref.server}  [encrypted{', ' + state if state else ''}]"
                    )
            if not encrypted and not as_json:
                typer.echo("no on-demand attachments")
            return
        for ref in listing.refs:
            state = listing.states.get(ref.guid, "")
            if as_json:
                typer.echo(json.dumps({**ref.as_dict(), "state": state}))
            else:
                typer.echo(
                    f"{ref.name:32}  {byte_size(ref.size):>9}  {ref.media_type:24}  {ref.server}"
                    + (f"  [{state}]" if state and state != "bound" else "")
                )
        if not listing.refs and not as_json:
            typer.echo("no on-demand attachments")


def _names(client: Client, listing: Listing) -> dict[str, str]:
    """GUID → the name to show: for encrypted mail the sealed name if the key on this
    device opens it (else the server's neutral one, with the GUID still usable)."""
    from wsemail.client.usercerts.device import open_attachments

    try:
        opened = open_attachments(client, listing) or []
    except WsemailError:
        opened = []
    return {r.guid: r.name for r in listing.refs} | {e.ref.guid: e.name for e in opened}


def fetch(
    message: str = typer.Argument(..., help="message id (from `wsemail list`)"),
    name: str | None = typer.Option(None, "--name", help="only the attachment with this name"),
    output: Path | None = typer.Option(None, "-o", "--output", help="file or folder"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Fetch a message's on-demand attachments with a federated identity; each one is
    checked against the SHA-256 its sending server signed (resumes a partial download);
    those of encrypted mail are then decrypted, every chunk authenticated."""
    from wsemail.client.attachments import Attachments

    with session.open_client(server, user) as client:
        box = Attachments(client)
        listing = box.list(message)
        # the keys and certificates (cryptography) load after the sign-in's scrypt has
        # given its 16 MB back: loaded before, the process peaked 11 MB higher
        from wsemail.client.usercerts.device import open_attachments

        encrypted = open_attachments(client, listing)
        items: list[AttachmentRef | EncryptedAttachment] = [
            *(encrypted if encrypted is not None else listing.refs)
        ]
        if name is not None:
            items = [i for i in items if i.name == name]
        if not items:
            raise UsageError("no such attachment in that message" if name else "no attachments")
        if output is not None and len(items) > 1 and not output.is_dir():
            raise UsageError("-o must be a folder when fetching several attachments")
        for item in items:
            dest = _destination(output, item.name)
            if isinstance(item, AttachmentRef):
                with progress_bar(item.name, item.size) as callback:
                    box.fetch(item, dest, progress=callback)
                typer.echo(f"{dest}  {byte_size(item.size)}  sha256 {item.sha256} ✓")
                continue
            from wsemail.client.usercerts import fetch_encrypted

            with progress_bar(item.name, item.ref.size) as callback:
                fetch_encrypted(box, item, dest, progress=callback)
            typer.echo(f"{dest}  {byte_size(item.size)}  decrypted, end to end ✓")


def _destination(output: Path | None, name: str) -> Path:
    from wsemail.client.attachments import safe_file_name

    if output is None:
        return Path.cwd() / safe_file_name(name)
    if output.is_dir():
        return output / safe_file_name(name)
    return output


def register(app: typer.Typer) -> None:
    app.command()(attachments)
    app.command()(fetch)
