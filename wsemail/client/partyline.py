"""In charge of the party line on the client (paper §4.1, DESIGN.md §8): the invitation an
instant message carries (host, port, channel id, the listener's certificate fingerprint),
and joining: mutual TLS 1.3 with a federated identity certificate from the own server, the
listener pinned by the fingerprint. `InstantMessenger.open_channel / find_invitation /
join` (`wsemail.client.im`) are the way in.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import os
import queue
import ssl
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from wsemail.protocol.errors import (
    Forbidden,
    RequestInvalid,
    TransportError,
    UntrustedSigner,
    UsageError,
    WsemailError,
)
from wsemail.protocol.message import domain_of
from wsemail.protocol.soap import parse_int

if TYPE_CHECKING:
    from wsemail.client.attachments import Token

_log = logging.getLogger("wsemail.im")
CHANNEL_MARK = "wsemail-channel:"  # see wsemail.server.im.channel.ChannelInfo.invitation
CHANNEL_LINE = 16 * 1024
CHANNEL_TIMEOUT = 10.0


@dataclass(frozen=True)
class Invitation:
    """Where a party line listens and the SHA-256 fingerprint its certificate must have."""

    channel: str
    host: str
    port: int
    fingerprint: str
    domain: str
    sender: str = ""

    @classmethod
    def parse(cls, body: str, sender: str = "") -> Invitation | None:
        """The invitation in an instant message's body, or None. One sent by an address of
        another domain than the channel's is ignored (only the channel's server invites)."""
        fields: dict[str, str] = {}
        started = False
        for line in body.splitlines():
            key, sep, value = line.partition(":")
            if line.startswith(CHANNEL_MARK):
                started, fields = True, {"id": value.strip()}
            elif started and sep:
                fields[key.strip().lower()] = value.strip()
        try:
            found = cls(
                channel=fields["id"],
                host=fields["host"],
                port=parse_int(fields["port"], "port", 1, 65535),
                fingerprint=fields["sha256"].upper(),
                domain=fields["domain"].lower(),
                sender=sender,
            )
        except (KeyError, RequestInvalid):
            return None
        if not found.channel or not 0 < found.port < 65536:
            return None
        if sender and domain_of(sender) != found.domain:
            return None
        return found


@dataclass(frozen=True)
class Opened:
    invitation: Invitation
    invited: dict[str, str]  # address → invited | queued | refused


def _client_context(token: Token | None) -> ssl.SSLContext:
    """TLS 1.3; the listener is checked by its pinned fingerprint, not by a CA."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if token is not None:  # ssl loads keys from files only: a private file, removed at once
        from cryptography.hazmat.primitives import serialization

        pem = (
            token.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            + token.cert.public_bytes(serialization.Encoding.PEM)
            + token.issuer.public_bytes(serialization.Encoding.PEM)
        )
        with tempfile.TemporaryDirectory(prefix="wsemail-channel-") as folder:
            path = os.path.join(folder, "identity.pem")
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(pem)
            context.load_cert_chain(path)
    return context


class PartyLine:
    """A joined party line: `send(text)`; iterate (or `next_event`) for what the channel
    relays — dicts with "event" line | joined | left | closed; `close()` to leave.

    The TLS connection lives in its own asyncio loop thread (one SSL object, one thread)."""

    def __init__(self, invitation: Invitation, token: Token | None) -> None:
        self.invitation = invitation
        self.participants: list[str] = []
        self.address = ""
        self._events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._context = _client_context(token)
        from cryptography.hazmat.primitives import serialization

        self._issuer = (
            base64.b64encode(token.issuer.public_bytes(serialization.Encoding.DER)).decode()
            if token is not None
            else ""
        )
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._closing = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="wsemail-party-line", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._connect())
        except BaseException:
            self.close()
            raise

    def _run(self, coro: Any, timeout: float = 3 * CHANNEL_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _connect(self) -> None:
        invitation = self.invitation
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    invitation.host,
                    invitation.port,
                    ssl=self._context,
                    server_hostname=invitation.domain,
                    limit=CHANNEL_LINE,
                ),
                CHANNEL_TIMEOUT,
            )
        except (OSError, TimeoutError) as exc:
            raise TransportError(
                f"cannot reach the channel at {invitation.host}:{invitation.port}: {exc}"
            ) from exc
        self._writer = writer
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        seen = hashlib.sha256(der or b"").hexdigest().upper()
        if not der or seen != invitation.fingerprint.replace(":", ""):
            raise UntrustedSigner("the channel's certificate is not the one in the invitation")
        hello = {"channel": invitation.channel, "issuer": self._issuer}
        try:
            writer.write(json.dumps(hello).encode() + b"\n")
            await writer.drain()
            raw = await asyncio.wait_for(reader.readline(), CHANNEL_TIMEOUT)
        except ssl.SSLError as exc:
            raise Forbidden(f"the channel refused the TLS connection: {exc.reason}") from exc
        except (OSError, TimeoutError, ValueError) as exc:
            raise Forbidden(f"the channel closed the connection: {exc}") from exc
        first = _event(raw)
        if first is None:
            raise Forbidden(
                "the channel closed the connection before admitting you (TLS refuses a "
                "missing or untrusted certificate)"
            )
        if first.get("event") != "welcome":
            raise Forbidden(f"the channel refused you: {first.get('reason', 'no reason given')}")
        self.address = str(first.get("you", ""))
        self.participants = [str(p) for p in first.get("participants", [])]
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                event = _event(await reader.readline())
                if event is None:
                    break
                self._events.put(event)
                if event.get("event") == "closed":
                    break
        except (OSError, ValueError):
            pass
        finally:
            self._events.put(None)

    def send(self, text: str) -> None:
        if "\n" in text or "\r" in text:
            raise UsageError("one line at a time")
        self._run(self._send(text))

    async def _send(self, text: str) -> None:
        writer = self._writer
        if writer is None or writer.is_closing():
            raise TransportError("the channel is closed")
        try:
            writer.write(json.dumps({"text": text}).encode() + b"\n")
            await writer.drain()
        except OSError as exc:
            raise TransportError(f"the channel broke off: {exc}") from exc

    def next_event(self, timeout: float | None = None) -> dict[str, Any] | None:
        """The next relayed event; None once the channel is closed (or on timeout)."""
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            return None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while (event := self.next_event()) is not None:
            yield event

    async def _close(self) -> None:
        writer = self._writer
        if writer is not None:
            if not writer.is_closing():
                writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), CHANNEL_TIMEOUT)
            except (OSError, TimeoutError):
                writer.transport.abort()
        task = self._reader_task
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def close(self) -> None:
        """Leave (from any thread, any number of times)."""
        with self._closing:
            if self._loop.is_closed():
                return
            if self._thread.is_alive():
                with contextlib.suppress(WsemailError, OSError, TimeoutError, RuntimeError):
                    self._run(self._close())
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(CHANNEL_TIMEOUT)
            if not self._thread.is_alive():
                self._loop.close()
            self._events.put(None)

    def __enter__(self) -> PartyLine:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _event(raw: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None
