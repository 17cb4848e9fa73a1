"""The client servers use to post to peer servers (wsemail/server/peers.py; the relay's
Deliver goes through it): keep-alive against a real TLS wsemail server, the certificate
checked against the peer's domain, and the answers a peer may give — chunked, to the end of
the connection, too large, none at all, a kept connection the peer closed meanwhile — from
a scripted HTTP peer on loopback."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
from test_federation import start_domain

from wsemail.pki import create_root, write_crl
from wsemail.protocol import soap
from wsemail.server.peers import PeerClient, PeerError

from conftest import Running

CONTENT_TYPE = soap.CONTENT_TYPE


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[tuple[Running, ssl.SSLContext]]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    running = start_domain(tmp_path, ca, "b.test")
    yield running, ssl.create_default_context(cafile=str(ca / "root.pem"))
    running.stop()


def test_posts_to_a_wsemail_peer_share_one_tls_connection(
    peer: tuple[Running, ssl.SSLContext],
) -> None:
    running, trust = peer

    async def go() -> tuple[list[int], list[bytes], int]:
        client = PeerClient(trust, timeout=10)
        answers = [
            await client.post(
                running.url, b"<not-soap/>", content_type=CONTENT_TYPE, server_hostname="b.test"
            )
            for _ in range(3)
        ]
        await client.aclose()
        return [a.status for a in answers], [a.content for a in answers], client.opened

    statuses, contents, opened = asyncio.run(go())
    assert statuses == [400, 400, 400]  # the peer's SOAP fault for a body that is not SOAP
    assert all(b"Fault" in c for c in contents)
    assert opened == 1
    assert running.stored() == (0, 0)


def test_a_peer_whose_certificate_names_another_domain_is_refused(
    peer: tuple[Running, ssl.SSLContext],
) -> None:
    running, trust = peer

    async def go() -> str:
        client = PeerClient(trust, timeout=10)
        try:
            await client.post(
                running.url, b"<x/>", content_type=CONTENT_TYPE, server_hostname="a.test"
            )
        except PeerError as exc:
            return str(exc)
        finally:
            await client.aclose()
        return "answered"

    assert "CERTIFICATE_VERIFY_FAILED" in asyncio.run(go())

    # an untrusted root is refused too
    async def untrusted() -> str:
        client = PeerClient(ssl.create_default_context(), timeout=10)
        try:
            await client.post(
                running.url, b"<x/>", content_type=CONTENT_TYPE, server_hostname="b.test"
            )
        except PeerError as exc:
            return str(exc)
        return "answered"

    assert "CERTIFICATE_VERIFY_FAILED" in asyncio.run(untrusted())


# a scripted peer ------------------------------------------------------------------------
Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def with_peer(script: Script, posts: int, **client: float) -> tuple[list[object], int]:
    """Run `posts` POSTs against a plain-HTTP peer that answers each connection's requests
    by `script` (given the connection's number); returns each post's answer body or error,
    and the connections the client opened."""

    async def go() -> tuple[list[object], int]:
        connections = 0

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal connections
            connections += 1
            try:
                await script(reader, writer, connections)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        peer_client = PeerClient(False, **client)
        results: list[object] = []
        for _ in range(posts):
            try:
                answer = await peer_client.post(
                    f"http://127.0.0.1:{port}/wsemail", b"<Deliver/>", content_type=CONTENT_TYPE
                )
                results.append(answer.content)
            except PeerError as exc:
                results.append(exc)
            await asyncio.sleep(0.05)
        await peer_client.aclose()
        server.close()
        await server.wait_closed()
        return results, peer_client.opened

    return asyncio.run(go())


def test_a_kept_connection_the_peer_closed_is_replaced_without_an_error() -> None:
    async def one_answer_then_close(
        r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int
    ) -> None:
        await read_request(r)
        w.write(
            b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfirst"
            if n == 1
            else b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nsecond"
        )
        await w.drain()  # then closes, without saying so: the keep-alive ran out

    results, opened = with_peer(one_answer_then_close, 2)
    assert results == [b"first", b"second"]
    assert opened == 2


def test_chunked_and_to_the_end_answers_are_read_whole() -> None:
    async def chunked(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
            b"4;x=y\r\n<ok \r\n3\r\n/>!\r\n0\r\ntrailer: 1\r\n\r\n"
        )
        await read_request(r)  # kept alive: a second request on the same connection
        w.write(b"HTTP/1.0 200 OK\r\n\r\nuntil the end")
        await w.drain()

    results, opened = with_peer(chunked, 2)
    assert results == [b"<ok />!", b"until the end"]
    assert opened == 1


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"HTTP/1.1 200 OK\r\ncontent-length: 99999999\r\n\r\n", "too large"),
        (b"SMTP 220 hello\r\n\r\n", "not an HTTP/1.1 answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header"),
        (b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n", "malformed chunk"),
        (b"", "closed the connection without answering"),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", "IncompleteReadError"),
    ],
)
def test_a_bad_answer_is_a_peer_error(answer: bytes, error: str) -> None:
    async def bad(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        w.write(answer)
        await w.drain()

    results, _ = with_peer(bad, 1, max_answer=1 << 20)
    assert isinstance(results[0], PeerError)
    assert error in str(results[0])


def test_a_silent_peer_times_out() -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, n: int) -> None:
        await read_request(r)
        await asyncio.sleep(5)

    results, _ = with_peer(silent, 1, timeout=0.3)
    assert isinstance(results[0], PeerError)
    assert "no answer within 0.3 s" in str(results[0])


def test_an_unreachable_peer_is_a_peer_error() -> None:
    async def go() -> str:
        client = PeerClient(False, timeout=5)
        try:
            await client.post("https://127.0.0.1:1/wsemail", b"<x/>", content_type=CONTENT_TYPE)
        except PeerError as exc:
            return str(exc)
        return "answered"

    error = asyncio.run(go())
    assert "refused" in error.lower()
