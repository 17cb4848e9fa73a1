"""In charge of the party line (paper §4.1, DESIGN.md §8): per channel a TLS 1.3 listener on
an ephemeral port, presenting the server's federation certificate; admission of invited,
verified participants only; relaying each participant's lines to all; closing the channel
when the last participant leaves or when it has been idle too long.

Admission fails closed at two layers. The TLS handshake requires a client certificate that
chains to a federation root (OpenSSL: chain, validity, name constraints); then the
participant's first line names the channel and carries its domain's issuing CA, and
`TrustStore.verify_user` checks role, address, name constraints and revocation before the
certificate's address is compared with the invitation list.

Wire protocol after the handshake, one JSON object per line (UTF-8, at most `MAX_LINE`
bytes):

    participant → channel   {"channel": ID, "issuer": base64 DER}    then {"text": "…"}
    channel → participant   {"event": "welcome", "channel", "you", "participants"}
                            {"event": "refused", "reason"}            (then closes)
                            {"event": "line", "from", "text"}
                            {"event": "joined" | "left", "address"}
                            {"event": "closed", "reason"}

All channels of a server share one asyncio loop in one thread; the plug-in opens channels
from its extension handler (`Channels.open`) and stops them all in `Channels.close`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509

from wsemail.pki import ServerFiles, certificate_address, fingerprint
from wsemail.protocol.errors import (
    Forbidden,
    RequestInvalid,
    ServerBusy,
    UntrustedSigner,
    WsemailError,
)
from wsemail.protocol.message import normalize_address

log = logging.getLogger("wsemail.im.channel")

MAX_LINE = 16 * 1024
MAX_PARTICIPANTS = 50
HELLO_TIMEOUT = 10.0
HANDSHAKE_TIMEOUT = 10.0
SEND_TIMEOUT = 5.0
INVITATION_MARK = "wsemail-channel:"

Admit = Callable[[bytes | None, object], str]
"""(peer certificate DER or None, base64 issuing CA) → the verified address, or raise."""


@dataclass(frozen=True)
class ChannelInfo:
    """What an invitation tells: where the listener is and which certificate it shows."""

    id: str
    host: str
    port: int
    fingerprint: str
    domain: str
    opener: str
    invited: tuple[str, ...]
    idle_timeout: float

    def invitation(self) -> str:
        """The body of the invitation IM (the lines after the mark are read by clients)."""
        others = ", ".join(a for a in self.invited if a != self.opener) or "nobody else yet"
        return (
            f"{self.opener} invites you to a secure party line with {others}.\n"
            f"Join with: wsemail im channel join {self.id}\n\n"
            f"{INVITATION_MARK} {self.id}\n"
            f"host: {self.host}\n"
            f"port: {self.port}\n"
            f"sha256: {self.fingerprint}\n"
            f"domain: {self.domain}\n"
        )


WILDCARDS = ("", "0.0.0.0", "::")  # noqa: S104 -- only compared


def advertised_host(bind: str, advertise: str | None, domain: str) -> str:
    """The host invitations name: `advertise` when the operator set it; else the address
    the listeners bind; for a wildcard bind the domain's name, which reaches the listener
    only when the domain is served by this machine alone (a node of several must set
    `advertise`: see `shared_store_warning`)."""
    if advertise:
        return advertise
    return domain if bind in WILDCARDS else bind


def shared_store_warning(bind: str, advertise: str | None, domain: str) -> str | None:
    """For a node whose store other nodes may share: why its invitations could send
    participants to another node than the one holding the channel (None when they cannot)."""
    if advertise or bind not in WILDCARDS:
        return None
    return (
        f"party lines listen on a wildcard address and their invitations name {domain!r}, "
        "which may reach another node of the domain than the one holding the channel: set "
        "the im plug-in's channel_advertise (or channel_host) to this node's own name or "
        "address"
    )


def server_context(identity_dir: Path, root_files: Iterable[Path]) -> ssl.SSLContext:
    """TLS 1.3 only, the federation server certificate, client certificates required and
    chained to the federation roots (never the system store)."""
    files = ServerFiles.in_folder(identity_dir)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    context.load_cert_chain(files.server_cert, files.server_key)
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_verify_locations(cadata="".join(Path(p).read_text() for p in root_files))
    return context


def load_issuer(raw: object) -> x509.Certificate:
    if not isinstance(raw, str):
        raise UntrustedSigner("the hello carries no issuing CA certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError) as exc:
        raise UntrustedSigner("unreadable issuing CA certificate") from exc


def peer_address(der: bytes | None, issuer: x509.Certificate, verify: Callable[..., None]) -> str:
    """The address a participant's TLS certificate is verified for (`verify` is
    `TrustStore.verify_user`)."""
    if not der:
        raise UntrustedSigner("no client certificate")
    try:
        cert = x509.load_der_x509_certificate(der)
    except ValueError as exc:
        raise UntrustedSigner("unreadable client certificate") from exc
    address = certificate_address(cert)
    verify(cert, issuer, address)
    return address


@dataclass(eq=False)
class _Member:
    address: str
    writer: asyncio.StreamWriter


@dataclass(eq=False)
class Channel:
    """One party line: its listener, members and idle clock (lives in the channels loop)."""

    info: ChannelInfo
    admit: Admit
    on_closed: Callable[[Channel], None]
    members: list[_Member] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    server: asyncio.Server | None = None
    closed: bool = False
    joined_once: bool = False
    last_activity: float = 0.0

    async def start(self, sock: socket.socket, context: ssl.SSLContext) -> None:
        loop = asyncio.get_running_loop()
        self.last_activity = loop.time()
        self.server = await asyncio.start_server(
            self._connection,
            sock=sock,
            ssl=context,
            ssl_handshake_timeout=HANDSHAKE_TIMEOUT,
            limit=MAX_LINE,
        )
        self._spawn(self._watch_idle())

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _watch_idle(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            remaining = self.last_activity + self.info.idle_timeout - loop.time()
            if remaining <= 0:
                await self.close("idle timeout")
                return
            await asyncio.sleep(remaining)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        member: _Member | None = None
        peer = writer.get_extra_info("peername")
        try:
            member = await self._admit(reader, writer)
            if member is None:
                return
            while not self.closed:
                raw = await reader.readline()
                if not raw:
                    break
                text = _text_of(raw)
                if text is None:
                    await _send(writer, {"event": "refused", "reason": "not a line of text"})
                    break
                self.last_activity = asyncio.get_running_loop().time()
                await self.broadcast({"event": "line", "from": member.address, "text": text})
        except (OSError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            log.info("channel %s: connection from %r broke off", self.info.id, peer)
        except asyncio.CancelledError:
            pass
        finally:
            if member is not None:
                await self._leave(member)
            await _close_writer(writer)
            if task is not None:
                self.tasks.discard(task)

    async def _admit(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> _Member | None:
        ssl_object = writer.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        try:
            raw = await asyncio.wait_for(reader.readline(), HELLO_TIMEOUT)
            hello = json.loads(raw.decode("utf-8")) if raw else None
        except (TimeoutError, ValueError, UnicodeDecodeError):
            hello = None
        try:
            if not isinstance(hello, dict) or hello.get("channel") != self.info.id:
                raise RequestInvalid("the first line must name this channel")
            address = self.admit(der, hello.get("issuer"))
            if address not in self.info.invited:
                raise Forbidden(f"{address} is not invited to this channel")
        except WsemailError as exc:
            reason = exc.reason if hasattr(exc, "reason") else str(exc)
            log.info(
                "channel %s refused %r: %s", self.info.id, writer.get_extra_info("peername"), reason
            )
            await _send(writer, {"event": "refused", "reason": str(reason)})
            return None
        if self.closed:
            await _send(writer, {"event": "closed", "reason": "the channel is closed"})
            return None
        member = _Member(address, writer)
        self.members.append(member)
        self.joined_once = True
        self.last_activity = asyncio.get_running_loop().time()
        log.info("channel %s: %r joined", self.info.id, address)
        await _send(
            writer,
            {
                "event": "welcome",
                "channel": self.info.id,
                "you": address,
                "participants": sorted({m.address for m in self.members}),
            },
        )
        await self.broadcast({"event": "joined", "address": address}, skip=member)
        return member

    async def _leave(self, member: _Member) -> None:
        if member not in self.members:
            return
        self.members.remove(member)
        log.info("channel %s: %r left", self.info.id, member.address)
        if self.closed:
            return
        await self.broadcast({"event": "left", "address": member.address})
        if not self.members and self.joined_once:
            await self.close("everyone left")

    async def broadcast(self, event: dict[str, Any], skip: _Member | None = None) -> None:
        for member in list(self.members):
            if member is skip:
                continue
            try:
                await asyncio.wait_for(_send(member.writer, event), SEND_TIMEOUT)
            except (OSError, TimeoutError):
                log.info("channel %s: dropping %r (not reading)", self.info.id, member.address)
                if member in self.members:
                    self.members.remove(member)
                member.writer.transport.abort()

    async def close(self, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        log.info("channel %s closed: %s", self.info.id, reason)
        if self.server is not None:
            self.server.close()
        for member in list(self.members):
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(
                    _send(member.writer, {"event": "closed", "reason": reason}), SEND_TIMEOUT
                )
            await _close_writer(member.writer)
        self.members.clear()
        current = asyncio.current_task()
        pending = [t for t in self.tasks if t is not current]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        if self.server is not None:
            await self.server.wait_closed()
        self.on_closed(self)


def _text_of(raw: bytes) -> str | None:
    try:
        data = json.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str) or "\n" in text or "\r" in text:
        return None
    return text


async def _send(writer: asyncio.StreamWriter, event: dict[str, Any]) -> None:
    if writer.is_closing():
        raise ConnectionResetError("closed")
    writer.write(json.dumps(event).encode() + b"\n")
    await writer.drain()


async def _close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    try:
        await asyncio.wait_for(writer.wait_closed(), SEND_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError):
        writer.transport.abort()


class Channels:
    """The party lines of one server: opened by the `im` extension, all in one loop thread."""

    def __init__(
        self,
        *,
        domain: str,
        bind_host: str,
        advertise_host: str,
        context: Callable[[], ssl.SSLContext],
        certificate: x509.Certificate,
        admit: Admit,
        max_channels: int,
        max_idle: float,
    ) -> None:
        self.domain = domain
        self.bind_host = bind_host
        self.advertise_host = advertise_host
        self._context_factory = context
        self._context: ssl.SSLContext | None = None
        self.fingerprint = fingerprint(certificate)  # what invitees pin
        self.admit = admit
        self.max_channels = max_channels
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._open: dict[str, Channel] = {}
        self._stopped = False

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="wsemail-im-channels", daemon=True
            )
            self._thread.start()
        return self._loop

    def open(
        self, opener: str, addresses: Iterable[str], idle_timeout: float | None
    ) -> ChannelInfo:
        """Bind a listener and start the channel; the caller sends the invitations."""
        invited = sorted({normalize_address(a) for a in addresses} | {normalize_address(opener)})
        if len(invited) < 2:
            raise RequestInvalid("a channel needs at least one participant besides you")
        if len(invited) > MAX_PARTICIPANTS:
            raise RequestInvalid(f"a channel takes at most {MAX_PARTICIPANTS} participants")
        idle = self.max_idle if idle_timeout is None else idle_timeout
        if not 1 <= idle <= self.max_idle:
            raise RequestInvalid(f"IdleTimeout must be between 1 and {int(self.max_idle)} seconds")
        with self._lock:
            if self._stopped:
                raise ServerBusy("the server is stopping")
            if len(self._open) >= self.max_channels:
                raise ServerBusy("too many open channels; try again later")
            if self._context is None:
                self._context = self._context_factory()
            context = self._context
            loop = self._ensure_loop()
            sock = socket.create_server((self.bind_host, 0))
            port = int(sock.getsockname()[1])
            info = ChannelInfo(
                id="c" + secrets.token_urlsafe(12),  # a CLI argument: never starts with "-"
                host=self.advertise_host,
                port=port,
                fingerprint=self.fingerprint,
                domain=self.domain,
                opener=normalize_address(opener),
                invited=tuple(invited),
                idle_timeout=float(idle),
            )
            channel = Channel(info, self.admit, self._forget)
            self._open[info.id] = channel
        try:
            asyncio.run_coroutine_threadsafe(channel.start(sock, context), loop).result(10)
        except Exception as exc:
            sock.close()
            with self._lock:
                self._open.pop(info.id, None)
            raise ServerBusy("could not start the channel listener") from exc
        log.info("channel %s opened by %r on port %d for %s", info.id, opener, port, invited)
        return info

    def _forget(self, channel: Channel) -> None:
        with self._lock:
            self._open.pop(channel.info.id, None)

    def count(self) -> int:
        """Channels open now."""
        with self._lock:
            return len(self._open)

    def get(self, channel_id: str) -> ChannelInfo | None:
        with self._lock:
            channel = self._open.get(channel_id)
        return channel.info if channel is not None else None

    def close(self) -> None:
        with self._lock:
            self._stopped = True
            channels = list(self._open.values())
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(
                *(c.close("the server is stopping") for c in channels), return_exceptions=True
            )

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(stop_all(), loop).result(15)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(15)
        if not thread.is_alive():
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.close()
