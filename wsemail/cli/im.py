"""`wsemail im …`: instant messages on the mail identity — `send ADDRESS TEXT`, `listen`
(prints messages as they are pushed; `--json` NDJSON), `who`, `allow` / `block`,
`history`; `channel open ADDRESS…` / `channel join ID` (the TLS party line)."""

from __future__ import annotations

import contextlib
import json
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime

import typer

from wsemail.client import session
from wsemail.client.im import InstantMessenger
from wsemail.client.partyline import PartyLine
from wsemail.protocol.errors import WsemailError

ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")

app = typer.Typer(help="Instant messages: send, listen, presence.", no_args_is_help=True)
channel_app = typer.Typer(help="The secure party-line channel (TLS).", no_args_is_help=True)
app.add_typer(channel_app, name="channel")


@app.command()
def send(
    address: str = typer.Argument(..., help="recipient"),
    text: str = typer.Argument(..., help="the message"),
    delete: bool = typer.Option(
        False, "--delete-if-undeliverable", help="drop it (and be told) if they are offline"
    ),
    direct: str | None = typer.Option(
        None, "--direct", help="the recipient server's URL: send straight there, signed"
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Send an instant message."""
    with session.open_client(server, user) as client:
        im = InstantMessenger(client)
        if direct:
            result = im.send_direct(address, text, direct, delete_if_undeliverable=delete)
            for recipient, (status, reason) in result.outcomes.items():
                typer.echo(f"{recipient}: {status}" + (f" ({reason})" if reason else ""))
            return
        sent = im.send(address, text, delete_if_undeliverable=delete)
        typer.echo(sent.message_id)


@app.command()
def listen(
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one event per line"),
    count: int = typer.Option(0, "--count", help="stop after this many messages (0: never)"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Print instant messages as they arrive (you are online while this runs)."""
    with session.open_client(server, user) as client:
        im = InstantMessenger(client)
        seen = 0

        def opened(stream: object) -> None:
            if stream is not None and not as_json:
                typer.echo(f"listening as {client.username} …", err=True)

        # reconnects when the stream breaks off or falls silent; each message is
        # acknowledged once printed (one not acknowledged in time goes to the mailbox)
        events = im.follow(threading.Event(), opened)
        with contextlib.closing(events):  # the last one is acknowledged on the way out
            for incoming in events:
                if incoming.kind == "message":
                    proof, message = im.verify(incoming)
                    if as_json:
                        record = {
                            "event": "message",
                            **message.as_dict(),
                            "provenance": proof.as_dict(),
                        }
                        typer.echo(json.dumps(record))
                    else:
                        stamp = datetime.now(UTC).strftime("%H:%M:%S")
                        typer.echo(f"[{stamp}] {message.sender}: {message.body}  ({proof})")
                    seen += 1
                elif as_json:
                    typer.echo(json.dumps({"event": incoming.kind, **incoming.data}))
                else:
                    typer.echo(f"* {incoming.kind}: {json.dumps(incoming.data)}")
                if count and seen >= count:
                    return


@app.command()
def who(
    addresses: list[str] = typer.Argument(None, help="whom to ask about (default: all online)"),
    as_json: bool = typer.Option(False, "--json"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Presence: who is online on your server."""
    with session.open_client(server, user) as client:
        for contact in InstantMessenger(client).who(addresses or []):
            if as_json:
                typer.echo(json.dumps(vars(contact)))
            else:
                typer.echo(f"{contact.address}\t{contact.status}")


def _acl_command(kind: str) -> Callable[..., None]:
    def command(
        pattern: str = typer.Argument(..., help="user@domain, @domain or *"),
        remove: bool = typer.Option(False, "--remove", help="take it off the list"),
        server: str | None = ServerOpt,
        user: str | None = UserOpt,
    ) -> None:
        with session.open_client(server, user) as client:
            lists = InstantMessenger(client).set_acl(kind, pattern, present=not remove)
            typer.echo(json.dumps(lists))

    command.__doc__ = f"Add to (or --remove from) your instant-message {kind} list."
    return command


app.command("allow")(_acl_command("allow"))
app.command("block")(_acl_command("block"))


@app.command()
def history(
    peer: str | None = typer.Option(None, "--with", help="only messages from this address"),
    limit: int = typer.Option(50, "--limit"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Instant messages you received (NDJSON, newest first)."""
    with session.open_client(server, user) as client:
        for entry in InstantMessenger(client).history(peer, limit):
            typer.echo(json.dumps(entry))


@channel_app.command("open")
def channel_open(
    addresses: list[str] = typer.Argument(..., help="participants"),
    idle: int | None = typer.Option(
        None, "--idle-timeout", help="close after this many quiet seconds (server maximum)"
    ),
    join: bool = typer.Option(False, "--join", help="join it at once and chat (stdin lines)"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Open a TLS party line on your server and invite ADDRESS… by instant message."""
    with session.open_client(server, user) as client:
        im = InstantMessenger(client)
        opened = im.open_channel(addresses, idle)
        invitation = opened.invitation
        if as_json:
            record = {"event": "opened", **vars(invitation), "invited": opened.invited}
            typer.echo(json.dumps(record))
        else:
            typer.echo(invitation.channel)
            typer.echo(
                f"listening on {invitation.host}:{invitation.port}, "
                f"certificate SHA-256 {invitation.fingerprint}",
                err=True,
            )
            for address, status in opened.invited.items():
                typer.echo(f"  {address}: {status}", err=True)
        if join:
            with im.join(invitation) as party:
                _chat(party, as_json)


@channel_app.command("join")
def channel_join(
    channel: str = typer.Argument(..., help="the channel id from the invitation"),
    as_json: bool = typer.Option(False, "--json", help="NDJSON, one event per line"),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Join a party line you were invited to: lines on stdin are sent, what the channel
    relays is printed; end of input leaves."""
    with session.open_client(server, user) as client:
        with InstantMessenger(client).join(channel) as party:
            _chat(party, as_json)


def _chat(party: PartyLine, as_json: bool) -> None:
    if not as_json:
        typer.echo(
            f"joined {party.invitation.channel} as {party.address} with "
            f"{', '.join(party.participants)}; end of input leaves",
            err=True,
        )

    def send_stdin() -> None:
        try:
            for raw in sys.stdin:
                text = raw.rstrip("\r\n")
                if text:
                    party.send(text)
        except WsemailError as exc:
            typer.echo(f"error: {exc}", err=True)
        party.close()

    threading.Thread(target=send_stdin, name="wsemail-channel-stdin", daemon=True).start()
    for event in party:
        if as_json:
            typer.echo(json.dumps(event))
            continue
        kind = event.get("event")
        stamp = datetime.now(UTC).strftime("%H:%M:%S")
        if kind == "line":
            typer.echo(f"[{stamp}] {event.get('from')}: {event.get('text')}")
        elif kind in ("joined", "left"):
            typer.echo(f"* {event.get('address')} {kind}", err=True)
        elif kind == "closed":
            typer.echo(f"* channel closed: {event.get('reason')}", err=True)


def register(root: typer.Typer) -> None:
    root.add_typer(app, name="im")
