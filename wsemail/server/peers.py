"""In charge of this server's HTTP requests to peer servers: one POST at a time per
connection, connections kept alive per (host, port, TLS name) and reused.

The relay sends every Deliver through it. It speaks only what a peer's answer needs —
HTTP/1.1, a Content-Length or chunked body, keep-alive or close — over asyncio's own TLS
(httpx carried its general machinery into every relayed batch: about 7 % of the local
server's active Python in the test bed). A request on a kept connection that the peer closed
meanwhile (its keep-alive ran out) is sent once more on a new one, which is safe for what
goes through here: a peer recognises a Deliver it already took and answers as before.
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

MAX_HEAD = 64 << 10  # status line and headers of an answer
KEEP_IDLE = 8  # idle connections kept per peer


class PeerError(Exception):
    """A request to a peer server that got no usable answer: not reachable, TLS refused,
    timed out, or an answer that is not HTTP/1.1 or too large."""


@dataclass(frozen=True)
class PeerAnswer:
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps the last value
    content: bytes


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def usable(self) -> bool:
        return not (self.reader.at_eof() or self.writer.is_closing())

    def close(self) -> None:
        """Drop it at once (the peer closed it, or will: no TLS close to wait for)."""
        self.writer.transport.abort()

    async def shut(self) -> None:
        self.writer.close()
        try:
            async with asyncio.timeout(1.0):
                await self.writer.wait_closed()
        except (TimeoutError, OSError):
            self.writer.transport.abort()


class PeerClient:
    """POSTs to peer servers. `tls`: the context for https URLs (False: no certificate
    check, for test set-ups that turn verification off). `max_answer`: the largest answer
    body read."""

    def __init__(
        self,
        tls: ssl.SSLContext | bool,
        *,
        timeout: float = 30.0,
        max_answer: int = 16 << 20,
    ) -> None:
        if isinstance(tls, ssl.SSLContext):
            self.tls = tls
        else:
            self.tls = ssl.create_default_context()
            if not tls:
                self.tls.check_hostname = False
                self.tls.verify_mode = ssl.CERT_NONE
        self.timeout = timeout
        self.max_answer = max_answer
        self._idle: dict[tuple[str, int, str | None], list[_Connection]] = {}
        self.opened = 0  # connections opened, for tests and the benchmark

    async def post(
        self, url: str, content: bytes, *, content_type: str, server_hostname: str | None = None
    ) -> PeerAnswer:
        """POST `content` to `url`; `server_hostname`: the name the peer's certificate must
        carry (and the TLS SNI), if not the URL's host."""
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise PeerError(f"not an http(s) URL: {url}")
        secure = parts.scheme == "https"
        host = parts.hostname
        try:
            port = parts.port or (443 if secure else 80)
        except ValueError as exc:
            raise PeerError(f"bad port in {url}") from exc
        name = (server_hostname or host) if secure else None
        key = (host, port, name)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        head = (
            f"POST {target} HTTP/1.1\r\nhost: {parts.netloc}\r\n"
            f"content-type: {content_type}\r\ncontent-length: {len(content)}\r\n"
            "accept: */*\r\n\r\n"
        ).encode("latin-1")
        request = head + content
        try:
            async with asyncio.timeout(self.timeout):
                while (kept := self._take(key)) is not None:
                    try:
                        answer, reusable = await self._exchange(kept, request)
                    except _Closed:  # the peer closed it while it was idle: next one
                        kept.close()
                        continue
                    except BaseException:
                        kept.close()
                        raise
                    self._give_back(key, kept, reusable)
                    return answer
                fresh = await self._connect(host, port, name if secure else None, secure)
                try:
                    answer, reusable = await self._exchange(fresh, request)
                except _Closed as exc:
                    fresh.close()
                    raise PeerError("the peer closed the connection without answering") from exc
                except BaseException:
                    fresh.close()
                    raise
                self._give_back(key, fresh, reusable)
                return answer
        except TimeoutError as exc:
            raise PeerError(f"no answer within {self.timeout:g} s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise PeerError(repr(exc)) from exc

    async def aclose(self) -> None:
        """Close the kept connections (a TLS close takes the peer's reply: up to a second,
        then the connection is dropped)."""
        idle, self._idle = self._idle, {}
        kept = [connection for connections in idle.values() for connection in connections]
        await asyncio.gather(*(connection.shut() for connection in kept))

    # connections ------------------------------------------------------------------------
    def _take(self, key: tuple[str, int, str | None]) -> _Connection | None:
        connections = self._idle.get(key)
        while connections:
            connection = connections.pop()
            if connection.usable():
                return connection
            connection.close()
        return None

    def _give_back(
        self, key: tuple[str, int, str | None], connection: _Connection, reusable: bool
    ) -> None:
        kept = self._idle.setdefault(key, [])
        if reusable and connection.usable() and len(kept) < KEEP_IDLE:
            kept.append(connection)
        else:
            connection.close()

    async def _connect(self, host: str, port: int, name: str | None, secure: bool) -> _Connection:
        reader, writer = await asyncio.open_connection(
            host,
            port,
            ssl=self.tls if secure else None,
            server_hostname=name,
            limit=MAX_HEAD,
        )
        self.opened += 1
        return _Connection(reader, writer)

    # one exchange -----------------------------------------------------------------------
    async def _exchange(self, connection: _Connection, request: bytes) -> tuple[PeerAnswer, bool]:
        """Send `request`, read its answer; returns it and whether the connection may carry
        another. Raises _Closed when the peer closed the connection before answering."""
        reader = connection.reader
        try:
            connection.writer.write(request)
            await connection.writer.drain()
            head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Closed from exc
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Closed from exc
            raise
        lines = head[:-4].decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code = rest[:3]
        if version not in ("HTTP/1.1", "HTTP/1.0") or not code.isdigit():
            raise PeerError(f"not an HTTP/1.1 answer: {lines[0][:80]!r}")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            field, sep, value = line.partition(":")
            if not sep:
                raise PeerError("a malformed header line in the answer")
            headers[field.strip().lower()] = value.strip()
        keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            content = await self._chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit():
                raise PeerError("a malformed Content-Length in the answer")
            if int(length) > self.max_answer:
                raise PeerError(f"an answer of {length} bytes is too large")
            content = await reader.readexactly(int(length))
        else:  # the body runs to the end of the connection
            content = await reader.read(self.max_answer + 1)
            while len(content) <= self.max_answer and not reader.at_eof():
                more = await reader.read(self.max_answer + 1 - len(content))
                if not more:
                    break
                content += more
            if len(content) > self.max_answer:
                raise PeerError("the answer is too large")
            keep = False
        return PeerAnswer(int(code), headers, content), keep

    async def _chunked(self, reader: asyncio.StreamReader) -> bytes:
        parts: list[bytes] = []
        total = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            size_text = line.split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError as exc:
                raise PeerError("a malformed chunk in the answer") from exc
            if size == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(parts)
            total += size
            if total > self.max_answer:
                raise PeerError("the answer is too large")
            parts.append(await reader.readexactly(size))
            if await reader.readexactly(2) != b"\r\n":
                raise PeerError("a malformed chunk in the answer")


class _Closed(Exception):
    """The peer closed a connection before answering on it."""
