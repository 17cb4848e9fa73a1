"""In charge of the client's side of instant messaging (paper §4.1, DESIGN.md §8): sending
instant messages through the own server or directly to the recipient's server, holding a
live push stream (server-sent events) and reading what it brings, presence, allow / block
lists, history and the messages that fell back to the mailbox, and the way into the party line
(`open_channel`, `find_invitation`, `join`; the channel itself is `wsemail.client.partyline`).
Used by `wsemail im` and the TUI.

    with Client(url, "bob@b.test", password) as client:
        im = InstantMessenger(client)
        with im.listen() as stream:          # live once this returns
            for message in stream:
                print(message.sender, message.body)

Each instant message the stream brings is acknowledged to the server by its id once the
loop body has handled it (when the next one is asked for, or the loop ends): one not
acknowledged in time goes to the mailbox instead, so a listener that dies or hangs loses
nothing. The server may send one again (on a new session after a reconnect): repeats are
dropped by id. A stream silent for three heartbeats is taken for dead (`TransportError`);
`InstantMessenger.follow` reconnects by itself.

A stream may follow new mail as well (`listen(mail="now")`, issue 18): `mail` events, each
with a cursor; `follow(mail=True)` reconnects with the last cursor handed out, so what
arrived meanwhile comes then, and nothing twice (`wsemail.client.newmail`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import random
import socket
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

import httpx
from lxml import etree

from wsemail.client.attachments import Attachments, Token, _answer
from wsemail.client.mail import Client, SendResult
from wsemail.client.partyline import Invitation, Opened, PartyLine
from wsemail.protocol import soap
from wsemail.protocol.auth import timestamp
from wsemail.protocol.errors import (
    NotFound,
    RequestInvalid,
    ServerBusy,
    ServerError,
    TransportError,
    WsemailError,
)
from wsemail.protocol.message import Draft, Message, domain_of, new_message_id, normalize_address
from wsemail.protocol.soap import WSSE, WSU, element, int_of, parse_int, q, text_of

if TYPE_CHECKING:
    from wsemail.core.provenance import Provenance

_log = logging.getLogger("wsemail.im")
EXTENSION_ID = "im"
# a push stream silent this long is given up (the server sends a keep-alive at least every
# 30 s; a server that cannot accept the stream, e.g. out of descriptors, is noticed too);
# a server that names its heartbeat is given up after SILENT_BEATS of them
STREAM_SILENCE = 60.0
SILENT_BEATS = 3
SEEN_MAX = 4096  # push ids remembered to drop repeats
RECONNECT_TRIES = 5  # `follow`: reconnections in a row before giving up
RETRYABLE = (TransportError, ServerBusy)  # a reconnection that may work later (a restart)


class Seen:
    """The push ids of the instant messages already handed out (the last SEEN_MAX)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, push_id: str) -> bool:
        """Remember `push_id`; False if it was seen already (a repeat)."""
        with self._lock:
            if push_id in self._ids:
                return False
            self._ids[push_id] = None
            while len(self._ids) > SEEN_MAX:
                self._ids.popitem(last=False)
            return True


@dataclass(frozen=True)
class Incoming:
    """One pushed event: an instant message (`kind` "message") or a notice."""

    kind: str
    data: dict[str, Any]

    @property
    def sender(self) -> str:
        return str(self.data.get("from", ""))

    @property
    def body(self) -> str:
        return str(self.data.get("body", ""))

    def message(self) -> Message:
        signed = self.data.get("signed")
        return Message(
            id=str(self.data.get("id", "")),
            message_id=str(self.data.get("message_id", "")),
            folder="inbox",
            sender=self.sender,
            to=list(self.data.get("to", [])),
            cc=list(self.data.get("cc", [])),
            subject=str(self.data.get("subject", "")),
            date=str(self.data.get("date", "")),
            size=len(self.body.encode()),
            seen=False,
            body=self.body,
            origin=self.data.get("origin"),
            signed_xml=signed.encode() if isinstance(signed, str) else None,
            instant=True,
        )


@dataclass(frozen=True)
class Contact:
    address: str
    status: str  # online | offline | unknown
    sessions: int = 0


@dataclass(frozen=True)
class DirectResult:
    message_id: str
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # recipient → (status, why)


class Stream:
    """A live push session; iterate for events, `close()` from any thread to stop. Messages
    are acknowledged with `ack` after the loop body handled them and repeats are dropped
    (by push id, in `seen`)."""

    def __init__(
        self,
        http: httpx.Client,
        url: httpx.URL,
        extensions: dict[str, Any],
        *,
        ack: Callable[[list[str]], object] | None = None,
        seen: Seen | None = None,
        silence: float = STREAM_SILENCE,
    ) -> None:
        self._closed = threading.Event()
        self._ack = ack
        self._seen = seen if seen is not None else Seen()
        self.duplicates = 0
        self._context = http.stream(
            "GET", url, extensions=extensions, timeout=httpx.Timeout(10, read=silence)
        )
        try:
            self._response = self._context.__enter__()
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot open the push stream: {exc}") from exc
        if self._response.status_code != 200:
            self._response.read()
            self._context.__exit__(None, None, None)
            _answer(self._response, str(url))
            raise ServerError(f"HTTP {self._response.status_code} opening the push stream")
        self._lines = self._response.iter_lines()
        ready = self._next()
        if ready is None or ready.kind != "ready":
            self.close()
            raise ServerError("the push stream did not start")
        self.session = str(ready.data.get("session", ""))
        mail = ready.data.get("mail")  # the new-mail cursor, when asked for and pushed
        self.mail_cursor = mail if isinstance(mail, int) and not isinstance(mail, bool) else None

    def _next(self) -> Incoming | None:
        kind, data = "message", ""
        try:
            for line in self._lines:
                if line == "":
                    if data:
                        return Incoming(kind, json.loads(data))
                    kind, data = "message", ""
                elif line.startswith(":"):
                    continue
                elif line.startswith("event:"):
                    kind = line[6:].strip()
                elif line.startswith("data:"):
                    data += line[5:].strip()
        except (httpx.HTTPError, OSError, ValueError, RuntimeError):
            if not self._closed.is_set():
                raise TransportError("the push stream broke off") from None
        return None

    def __iter__(self) -> Iterator[Incoming]:
        while not self._closed.is_set():
            item = self._next()
            if item is None:
                return
            push_id = str(item.data.get("id", "")) if item.kind == "message" else ""
            if push_id and not self._seen.add(push_id):
                self.duplicates += 1  # handled before: acknowledge again, show once
                self.ack([push_id])
                continue
            try:
                yield item
            finally:  # handled (or the loop ended after handling it)
                if push_id:
                    self.ack([push_id])

    def ack(self, push_ids: list[str]) -> None:
        """Tell the server these messages were taken; a failure only means they also
        reach the mailbox."""
        if self._ack is None or not push_ids:
            return
        try:
            self._ack(push_ids)
        except WsemailError as exc:
            _log.info("acknowledging %s failed: %s", push_ids, exc)

    def close(self) -> None:
        if self._closed.is_set():
            return
        self._closed.set()
        # a reader blocked in recv() on another thread wakes only when the socket is shut
        # down; closing the response alone would leave it waiting for the next keep-alive
        stream = self._response.extensions.get("network_stream")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        try:
            self._response.close()
        except (httpx.HTTPError, OSError, RuntimeError):
            pass

    def __enter__(self) -> Stream:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class InstantMessenger:
    def __init__(self, client: Client) -> None:
        self.client = client
        self._attachments = Attachments(client)  # its federated identity tokens
        self.seen = Seen()  # across this messenger's streams: a repeat is dropped

    # sending ----------------------------------------------------------------------------
    def send(
        self,
        to: list[str] | str,
        text: str,
        *,
        subject: str = "Instant message",
        delete_if_undeliverable: bool = False,
    ) -> SendResult:
        """Through the own server (which relays to other domains, signed)."""
        return self.client.send(
            [to] if isinstance(to, str) else list(to),
            subject,
            text,
            instant=True,
            delete_if_undeliverable=delete_if_undeliverable,
        )

    def send_direct(
        self,
        to: list[str] | str,
        text: str,
        server_url: str,
        *,
        subject: str = "Instant message",
        delete_if_undeliverable: bool = False,
    ) -> DirectResult:
        """Straight to the recipients' server, signed with a federated identity from the
        own server; all recipients must be in that server's domain."""
        recipients = [normalize_address(a) for a in ([to] if isinstance(to, str) else to)]
        domains = {domain_of(r) for r in recipients}
        if len(domains) != 1:
            raise TransportError("a direct instant message goes to one domain")
        draft = Draft(
            to=recipients,
            subject=subject,
            body=text,
            message_id=new_message_id(domain_of(self.client.username)),
            delete_if_undeliverable=delete_if_undeliverable,
        )
        domain = domains.pop()
        data = direct_request(draft, domain, self._attachments.token())
        try:
            response = self.client.http.post(
                server_url,
                content=data,
                headers={"content-type": soap.CONTENT_TYPE},
                extensions={"sni_hostname": domain},
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {server_url}: {exc}") from exc
        answer = _answer(response, server_url)
        outcomes = {
            n.get("Recipient", ""): (n.get("Status", ""), n.get("Reason", ""))
            for n in answer.findall(q("Result"))
        }
        return DirectResult(text_of(answer, "MessageId", "") or "", outcomes)

    # receiving --------------------------------------------------------------------------
    def listen(
        self, *, ack: bool = True, mail: int | str | None = None, instant: bool = True
    ) -> Stream:
        """Open a live push session (the caller is online while it is open); `ack=False`
        leaves acknowledging to the caller (`Stream.ack`). `mail` ("now", or a cursor to
        resume after) asks for new-mail events too (`Stream.mail_cursor` is then where
        they start, None from a server that does not push them); `instant=False` takes no
        instant messages (the session follows new mail only and is not online)."""
        answer = self._call(etree.Element(q("OpenStream")))
        ticket = text_of(answer, "Ticket", "") or ""
        path = text_of(answer, "Path", "") or ""
        silence = STREAM_SILENCE
        with contextlib.suppress(ValueError):  # an older server names no heartbeat
            silence = SILENT_BEATS * float(text_of(answer, "Heartbeat", "") or "x") + 1
        query = f"ticket={ticket}"
        if mail is not None:
            query += f"&mail={mail}"
        if not instant:
            query += "&im=0"
        url = httpx.URL(self.client.server).copy_with(path=path, query=query.encode())
        return Stream(
            self.client.http,
            url,
            self.client.extensions,
            ack=self.ack if ack else None,
            seen=self.seen,
            silence=silence,
        )

    def follow(
        self,
        stop: threading.Event,
        on_stream: Callable[[Stream | None], object] = lambda s: None,
        *,
        mail: bool = False,
        instant: bool = True,
        tries: int | None = RECONNECT_TRIES,
        max_delay: float = 5.0,
    ) -> Generator[Incoming, None, None]:
        """Events of a push session that reconnects when its stream breaks off, falls
        silent or the server stops (`tries` times in a row, None: for ever; with backoff
        up to `max_delay` s), until `stop` is set. `on_stream` is told each stream opened
        (to close it from another thread) and None at the end. An error opening the first
        stream propagates. With `mail`, new-mail events come too, resumed after the last
        one handed out on each reconnection (never one twice); `instant=False` takes no
        instant messages (`listen`)."""
        failures = 0
        first = True
        cursor: int | None = None

        def backoff(base: float) -> None:
            delay = min(max_delay, base * 2 ** min(failures, 16))
            stop.wait(delay * random.uniform(0.75, 1.0))  # noqa: S311 -- spreads reconnections

        def exhausted() -> bool:
            return tries is not None and failures >= tries

        try:
            while not stop.is_set():
                since: int | str | None = None
                if mail:
                    since = "now" if cursor is None else cursor
                try:
                    stream = self.listen(mail=since, instant=instant)
                except RETRYABLE:
                    if first or exhausted():
                        raise
                    failures += 1
                    backoff(0.5)
                    continue
                first = False
                if mail and stream.mail_cursor is not None:
                    cursor = stream.mail_cursor  # ours, or the server's newest if it started over
                on_stream(stream)
                try:
                    with stream:
                        if stop.is_set():
                            return
                        for item in stream:
                            failures = 0
                            if item.kind == "mail":
                                at = item.data.get("cursor")
                                if not isinstance(at, int) or (cursor is not None and at <= cursor):
                                    continue  # not a cursor, or handed out already
                                cursor = at
                            yield item
                except TransportError:
                    failures += 1
                    if tries is not None and failures > tries:
                        raise
                    backoff(0.2)
                else:
                    if not stop.is_set():  # the server ended it (stopping): try again
                        failures += 1
                        backoff(0.2)
        finally:
            on_stream(None)

    def ack(self, push_ids: list[str]) -> dict[str, str]:
        """Acknowledge pushed messages by id: id → acked, or what became of it instead
        (mailbox | dropped: acknowledged too late; unknown)."""
        op = etree.Element(q("Ack"))
        for push_id in push_ids:
            element(op, "Id", push_id)
        answer = self._call(op)
        return {n.text or "": n.get("status", "") for n in answer.findall(q("Id"))}

    def verify(self, incoming: Incoming) -> tuple[Provenance, Message]:
        """The pushed message checked like mail (signed by the sending server, or local)."""
        return self.client.verify(incoming.message())

    # presence, access lists, history ----------------------------------------------------
    def who(self, addresses: list[str] | None = None) -> list[Contact]:
        op = etree.Element(q("Who"))
        for address in addresses or []:
            element(op, "Address", address)
        answer = self._call(op)
        return [
            Contact(
                n.get("address", ""),
                n.get("status", ""),
                parse_int(n.get("sessions") or "0", "sessions", 0, 2**31),
            )
            for n in answer.findall(q("Contact"))
        ]

    def acl(self) -> dict[str, list[str]]:
        return self._acl(self._call(etree.Element(q("GetAcl"))))

    def set_acl(self, kind: str, pattern: str, present: bool = True) -> dict[str, list[str]]:
        op = etree.Element(q("SetAcl"))
        element(op, "List", kind)
        element(op, "Pattern", pattern)
        element(op, "Present", "true" if present else "false")
        return self._acl(self._call(op))

    def allow(self, pattern: str) -> dict[str, list[str]]:
        return self.set_acl("allow", pattern)

    def block(self, pattern: str) -> dict[str, list[str]]:
        return self.set_acl("block", pattern)

    def history(self, peer: str | None = None, limit: int = 50) -> list[dict[str, object]]:
        op = etree.Element(q("History"))
        if peer:
            element(op, "Peer", peer)
        element(op, "Limit", str(limit))
        return [
            {
                "from": n.get("from", ""),
                "message_id": n.get("message-id", ""),
                "at": float(n.get("at", "0") or 0),
                "outcome": n.get("outcome", ""),
                "body": n.text or "",
            }
            for n in self._call(op).findall(q("Entry"))
        ]

    def missed(self) -> list[str]:
        """Ids of mailbox messages that were meant as instant messages."""
        answer = self._call(etree.Element(q("Missed")))
        return [n.text or "" for n in answer.findall(q("Id"))]

    # the party line ---------------------------------------------------------------------
    def open_channel(self, addresses: list[str], idle_timeout: int | None = None) -> Opened:
        """Ask the own server to open a party line and invite `addresses` (and you)."""
        op = etree.Element(q("OpenChannel"))
        for address in addresses:
            element(op, "Address", address)
        if idle_timeout is not None:
            element(op, "IdleTimeout", str(idle_timeout))
        answer = self._call(op)
        try:
            invitation = Invitation(
                channel=text_of(answer, "Id", "") or "",
                host=text_of(answer, "Host", "") or "",
                port=int_of(answer, "Port", 1, 65535, 0),
                fingerprint=text_of(answer, "Fingerprint", "") or "",
                domain=text_of(answer, "Domain", "") or "",
                sender=self.client.username,
            )
        except (ValueError, RequestInvalid) as exc:
            raise ServerError("unreadable OpenChannel answer") from exc
        invited = {n.text or "": n.get("status", "") for n in answer.findall(q("Invited"))}
        return Opened(invitation, invited)

    def find_invitation(self, channel: str) -> Invitation:
        """The invitation to `channel` among the instant messages received (pushed or kept
        in the mailbox); it must come from an address of the channel's domain."""
        bodies = [(str(e["from"]), str(e["body"])) for e in self.history(limit=500)]
        for public_id in self.missed():
            with contextlib.suppress(WsemailError):
                message = self.client.retrieve(public_id)
                bodies.append((message.sender, message.body))
        for sender, body in bodies:
            found = Invitation.parse(body, sender)
            if found is not None and found.channel == channel:
                return found
        raise NotFound(f"no invitation to channel {channel} among your instant messages")

    def join(self, invitation: Invitation | str) -> PartyLine:
        """Join a party line with a federated identity certificate from the own server."""
        if isinstance(invitation, str):
            invitation = self.find_invitation(invitation)
        return PartyLine(invitation, self._attachments.token())

    def _call(self, request: etree._Element) -> etree._Element:
        answer = self.client.extension(EXTENSION_ID, request)
        if answer is None:
            raise ServerError("the im extension gave no answer")
        return answer

    @staticmethod
    def _acl(answer: etree._Element) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {"allow": [], "block": []}
        for node in answer.findall(q("Entry")):
            found.setdefault(node.get("list", ""), []).append(node.text or "")
        return found


def direct_request(
    draft: Draft,
    server: str,
    token: Token,
    *,
    now: datetime | None = None,
    nonce: bytes | None = None,
) -> bytes:
    """DirectInstant(Server, Nonce, IssuerCertificate, Message) signed with the token's key
    (XMLDSIG over Body and Timestamp, the user certificate in KeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    from wsemail.protocol.dsig import Signer, add_timestamp

    env, header, body = soap.new_envelope()
    security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
    now = now or datetime.now(UTC)
    add_timestamp(security, timestamp(now), timestamp(now + timedelta(minutes=5)))
    op = etree.SubElement(body, q("DirectInstant"))
    element(op, "Server", server)
    element(op, "Nonce", base64.b64encode(nonce or os.urandom(16)).decode("ascii"))
    issuer = token.issuer.public_bytes(serialization.Encoding.DER)
    element(op, "IssuerCertificate", base64.b64encode(issuer).decode("ascii"))
    draft.to_xml(op)
    Signer(token.key, token.cert).sign_envelope(env)
    return soap.serialize(env)
