"""In charge of connections before any request runs (issue 16 "slow bodies", issue 24.6
"slow headers"): uvicorn's HTTP protocol with

- a header deadline: the request line and headers must arrive within `header_timeout`
  seconds of the connection, or of the request's first byte on a keep-alive connection
  (uvicorn itself has none: a peer trickling header bytes held its connection forever);
- a cap on the open connections of one peer address (`max_connections_per_peer`);
- a reserve of file descriptors: while fewer than `fd_reserve` are left (the store, its
  WAL, attachment files and the relay's sockets need them), new connections are refused.

A refused connection gets a one-off SOAP `Busy` fault (503, connection: close) and is
closed at once. Requests in flight per peer are counted here too (`Peers`), taken by the
endpoint once the body is read. Idle keep-alive connections are closed by uvicorn after
`keepalive_timeout` (see `controller.uvicorn_config`). What an answer may hold in the
server's buffers while the peer reads slowly is bounded per connection (`WRITE_HIGH_WATER`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import resource
from typing import TYPE_CHECKING, Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from wsemail.protocol import soap
from wsemail.protocol.errors import ServerBusy

if TYPE_CHECKING:
    from wsemail.server.config import ServerConfig

log = logging.getLogger("wsemail.server")


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 64  # a guess where /proc is absent


def _refusal(status: int, reason: str, text: str) -> bytes:
    body = soap.fault(ServerBusy(text))
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: {soap.CONTENT_TYPE}\r\n"
        f"content-length: {len(body)}\r\nretry-after: 5\r\nconnection: close\r\n\r\n"
    )
    return head.encode("ascii") + body


class Peers:
    """Open connections and requests in flight per peer address, and the connection budget
    the descriptor limit leaves. Used from the event loop thread only."""

    def __init__(self, config: ServerConfig) -> None:
        self.header_timeout = config.header_timeout
        self.max_connections_per_peer = config.max_connections_per_peer
        self.max_inflight_per_peer = config.max_inflight_per_peer
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            soft = 1 << 20
        # what is open now (store, listener, logs) stays; `fd_reserve` more stay free
        self.max_connections = max(1, soft - _open_descriptors() - config.fd_reserve)
        self.connections: dict[str, int] = {}
        self.inflight: dict[str, int] = {}
        self.total = 0
        self.refused = 0
        self.timed_out = 0

    def connect(self, peer: str) -> bytes | None:
        """Count a new connection; the refusal to write instead when over a limit."""
        if self.total >= self.max_connections:
            self.refused += 1
            log.warning("connection from %s refused: descriptors are kept for the store", peer)
            return BUSY
        if self.connections.get(peer, 0) >= self.max_connections_per_peer:
            self.refused += 1
            log.info("connection from %s refused: too many open connections", peer)
            return TOO_MANY
        self.connections[peer] = self.connections.get(peer, 0) + 1
        self.total += 1
        return None

    def disconnect(self, peer: str) -> None:
        left = self.connections.get(peer, 0) - 1
        if left > 0:
            self.connections[peer] = left
        else:
            self.connections.pop(peer, None)
        self.total -= 1

    def enter(self, peer: str) -> bool:
        """Take a request slot of `peer`; False when it has its maximum in flight."""
        running = self.inflight.get(peer, 0)
        if running >= self.max_inflight_per_peer:
            return False
        self.inflight[peer] = running + 1
        return True

    def leave(self, peer: str) -> None:
        left = self.inflight.get(peer, 0) - 1
        if left > 0:
            self.inflight[peer] = left
        else:
            self.inflight.pop(peer, None)


# how much of an answer the peer has not taken yet waits in the server's own buffers before
# the answer's writer waits too: uvloop's plain TCP default, where its TLS transport allows
# 512 KB (with the TLS records of the last write beside it: a 1 GB download held ~0.6 MB
# more); answers of SOAP calls are smaller than this
WRITE_HIGH_WATER = 64 << 10
BUSY = _refusal(503, "Service Unavailable", "the server is out of connections; try again")
TOO_MANY = _refusal(503, "Service Unavailable", "too many connections from your address")
TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


class OneWrite:
    """The transport uvicorn's cycle writes one answer through: the head of an answer of
    known length (Content-Length) goes out with the first piece of its body, in one write
    — one system call, one TLS record (uvicorn writes them apart: two of each). Anything
    else goes at once: a `100 Continue` (the client waits for it before it sends the body),
    a streamed answer's head (an event stream's first event may be minutes away)."""

    __slots__ = ("_transport", "_head", "_started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = b""
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started:
            if data.startswith(b"HTTP/1.1 100 "):
                self._transport.write(data)
                return
            self._started = True
            if data.find(b"\r\ncontent-length:") != -1:
                self._head = data
                return
        elif self._head:
            data, self._head = self._head + data, b""
        if data:
            self._transport.write(data)

    def flush(self) -> None:
        """Send a head still held (an answer that ended without a body)."""
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, …
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits above (`guarded(peers)` binds them)."""

    peers: Peers

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._peer = ""
        self._counted = False
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._peer = self.client[0] if self.client else ""
        refusal = self.peers.connect(self._peer)
        if refusal is not None:
            transport.write(refusal)
            transport.close()
            return
        self._counted = True
        transport.set_write_buffer_limits(high=WRITE_HIGH_WATER)
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self._counted:
            self._counted = False
            self.peers.disconnect(self._peer)
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()
        if self.cycle is not None:  # (None: an upgrade uvicorn refused)
            self.cycle.transport = OneWrite(self.transport)  # type: ignore[assignment]

    def on_response_complete(self) -> None:
        # idle from here on: uvicorn's keep-alive timer closes the connection
        self._disarm()
        if self.cycle is not None and isinstance(self.cycle.transport, OneWrite):
            self.cycle.transport.flush()
        super().on_response_complete()

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.peers.header_timeout, self._too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.transport.is_closing():
            return
        self.peers.timed_out += 1
        log.info("connection from %s closed: headers not complete in time", self._peer)
        if self.cycle is None or self.cycle.response_complete:
            self.transport.write(TIMEOUT)
        self.transport.close()


class Pace:
    """When the next chunk of a request body must have arrived: within `total` seconds of
    the start for the whole body (None: within `read_timeout` of the previous chunk, for
    uploads of any size), and — after `body_grace` seconds — no later than the bytes so
    far allow at `body_min_rate` bytes a second (what has arrived buys time)."""

    def __init__(self, config: ServerConfig, *, total: float | None) -> None:
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.total = total
        self.idle = config.read_timeout
        self.grace = config.body_grace
        self.rate = config.body_min_rate

    def deadline(self, size: int) -> float:
        """For the next chunk, `size` bytes having arrived (a `loop.time()` value)."""
        if self.total is None:
            limit = self.loop.time() + self.idle
        else:
            limit = self.start + self.total
        if self.rate > 0:
            limit = min(limit, self.start + self.grace + size / self.rate)
        return limit


def guarded(peers: Peers) -> type[GuardedProtocol]:
    """The protocol class for uvicorn's `http=`, bound to one server's `Peers`."""
    return type("Guarded", (GuardedProtocol,), {"peers": peers})
