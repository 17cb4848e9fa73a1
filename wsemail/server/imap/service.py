"""In charge of the IMAP listener: a socket bound when the plug-in attaches, served by an
asyncio loop on a thread of its own (as the SMTP listeners are), implicit TLS (IMAPS) or
STARTTLS with the server's certificate, plain only on a loopback address. It holds what
sessions share: the store, the failed-login limits (the server's `Authenticator`), the
live sessions of each user (woken when their mail changes), and the renderings cache."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import uvloop

from wsemail.protocol.errors import PluginError
from wsemail.protocol.message import AttachmentRef
from wsemail.server.attachments.records import Blob
from wsemail.server.controller import bind
from wsemail.server.imap import render
from wsemail.server.imap.parser import Limits
from wsemail.server.imap.records import Row
from wsemail.server.ratelimit import peer_key

if TYPE_CHECKING:
    from wsemail.server.app import Server


class Session(Protocol):
    """What the listener needs of a connection (`session.Session`, given by the plug-in)."""

    account: Any
    peer: str
    wake: asyncio.Event

    async def run(self) -> None: ...


SessionFactory = Callable[["Service", asyncio.StreamReader, asyncio.StreamWriter, bool], Session]

log = logging.getLogger("wsemail.imap")
CACHE_BYTES = 32 << 20
TLS_MODES = ("implicit", "starttls", "none")


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


class Service:
    def __init__(
        self,
        server: Server,
        factory: SessionFactory,
        host: str,
        port: int,
        *,
        tls: str,
        context: ssl.SSLContext | None,
        loopback_plain_login: bool,
        limits: Limits,
        idle_poll: float,
        max_connections: int,
        max_connections_per_peer: int = 64,
        login_timeout: float = 60.0,
        autologout: float = 30 * 60.0,
    ) -> None:
        if tls not in TLS_MODES:
            raise PluginError(f"imap: tls must be one of {', '.join(TLS_MODES)}")
        if tls != "none" and context is None:
            raise PluginError("imap needs the server's TLS certificate (tls_cert), or tls none")
        if tls == "none" and not is_loopback(host):
            raise PluginError("imap: plain IMAP (tls none) only on a loopback address")
        self.server = server
        self.factory = factory
        self.domain = server.config.domain
        self.tls_mode = tls
        self.context = context
        self.starttls = context if tls == "starttls" else None
        self.loopback_plain_login = loopback_plain_login
        self.limits = limits
        self.idle_poll = idle_poll
        self.max_connections = max_connections
        self.max_connections_per_peer = max_connections_per_peer
        self.per_peer: dict[str, int] = {}
        self.login_timeout, self.autologout = login_timeout, autologout
        self.sessions: dict[str, set[Session]] = {}
        self.connections = 0
        self.auth_failed = 0
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached_bytes = 0
        self._lock = threading.Lock()
        self.sock: socket.socket = bind(host, port)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @staticmethod
    def is_loopback(host: str) -> bool:
        return is_loopback(host)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    # life --------------------------------------------------------------------------------
    def start(self) -> Service:
        self._thread = threading.Thread(target=self._run, name="wsemail-imap", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise PluginError("the IMAP listener did not start")
        log.info("IMAP (%s) listening on %s:%d", self.tls_mode, *self.address)
        return self

    def _run(self) -> None:
        loop = uvloop.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        implicit = self.context if self.tls_mode == "implicit" else None
        listener = await asyncio.start_server(
            self._accept,
            sock=self.sock,
            ssl=implicit,
            limit=self.limits.max_line + 2,
            ssl_handshake_timeout=30 if implicit else None,
        )
        self._ready.set()
        await self._stop.wait()
        listener.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(listener.wait_closed(), 5)

    def stop(self) -> None:
        loop, stop = self.loop, self._stop
        if loop is not None and stop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.sock.close()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peername = writer.get_extra_info("peername")
        peer = peer_key(str(peername[0]) if isinstance(peername, tuple) and peername else "")
        if (
            self.connections >= self.max_connections
            or self.per_peer.get(peer, 0) >= self.max_connections_per_peer
        ):
            writer.write(b"* BYE too many connections\r\n")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()
            return
        self.connections += 1
        self.per_peer[peer] = self.per_peer.get(peer, 0) + 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = self.factory(self, reader, writer, self.tls_mode == "implicit")
        try:
            await session.run()
        except asyncio.CancelledError:
            writer.transport.abort()  # the listener is stopping
        except Exception:
            log.exception("IMAP session from %s failed", session.peer)
            writer.transport.abort()
        finally:
            self.connections -= 1
            left = self.per_peer.pop(peer, 1) - 1
            if left:
                self.per_peer[peer] = left
            self._tasks.discard(task)

    # sessions and wake-ups ---------------------------------------------------------------
    def register(self, session: Session) -> None:
        assert session.account is not None
        self.sessions.setdefault(session.account.address, set()).add(session)

    def forget(self, session: Session) -> None:
        if session.account is not None:
            found = self.sessions.get(session.account.address)
            if found is not None:
                found.discard(session)
                if not found:
                    del self.sessions[session.account.address]

    def wake_owner(self, owner: str, but: object = None) -> None:
        """On this loop: the user's other sessions look for changes (IDLE answers now)."""
        for session in self.sessions.get(owner, set()):
            if session is not but:
                session.wake.set()

    def wake_threadsafe(self, owner: str) -> None:
        """From any thread (a delivery committed): wake the user's sessions."""
        loop = self.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self.wake_owner, owner)

    # renderings --------------------------------------------------------------------------
    def reference(self, blob: Blob) -> AttachmentRef:
        return AttachmentRef(
            server=self.domain,
            url=blob.base_url,
            guid=blob.guid,
            name=blob.name,
            size=blob.size,
            media_type=blob.media_type,
            sha256=blob.sha256 or "",
        )

    def rendered(self, row: Row, owner: str, refs: list[Any]) -> bytes:
        with self._lock:
            data = self._cache.get(row.seq)
            if data is not None:
                self._cache.move_to_end(row.seq)
                return data
        if row.signed_xml is not None and row.has_attachment:
            refs = render.attachment_refs(row)
        data = render.render(row, owner, self.domain, refs)
        with self._lock:
            self._cache[row.seq] = data
            self._cached_bytes += len(data)
            while self._cached_bytes > CACHE_BYTES and self._cache:
                _, old = self._cache.popitem(last=False)
                self._cached_bytes -= len(old)
        return data
