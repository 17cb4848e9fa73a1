"""Slow and greedy peers on real loopback sockets (issue 16 "slow bodies", issue 24.6 "slow
headers"): bodies are read outside the concurrency slots and must keep a minimum rate,
headers have a deadline, idle keep-alive connections are closed, one peer address holds a
bounded number of connections and requests, and descriptors stay for the store."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from lxml import etree

from tests.conftest import Running, start_server
from wsemail.protocol.soap import element, q, text_of

BODY = 10_000
TIMEOUT_ANSWER = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def _address(running: Running) -> tuple[str, int]:
    parts = urlsplit(running.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _open(running: Running) -> socket.socket:
    sock = socket.create_connection(_address(running), timeout=10)
    return sock


def _post_head(length: int = BODY) -> bytes:
    return (
        "POST /wsemail HTTP/1.1\r\nHost: localhost\r\n"
        f"Content-Type: application/soap+xml\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def _answer(sock: socket.socket) -> bytes:
    """Everything the server writes until it closes the connection (or 10 s pass)."""
    data = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            return data
        if not chunk:
            return data
        data += chunk


@pytest.fixture
def slow(tmp_path: Path) -> Iterator[Running]:
    running = start_server(
        tmp_path / "s",
        max_concurrency=4,
        body_grace=1.0,
        body_min_rate=200.0,
        header_timeout=1.0,
        keepalive_timeout=1.0,
        max_connections_per_peer=1000,
    )
    yield running
    running.stop()


def test_trickling_bodies_do_not_stop_legitimate_requests(slow: Running) -> None:
    before = slow.stored()
    client = slow.client("carol@localhost")
    client.list_headers()  # salt and key before the attack
    tricklers = [_open(slow) for _ in range(60)]  # 15 times the concurrency slots
    try:
        for sock in tricklers:
            sock.sendall(_post_head() + b"<")
        for _ in range(3):  # still inside the grace: every trickler holds its connection
            assert client.list_headers().headers == []
            for sock in tricklers:
                sock.sendall(b"a")
        # after the grace they fall behind the minimum rate: answered 408 and closed
        for sock in tricklers:
            sock.settimeout(10)
            answer = _answer(sock)
            assert answer.startswith(b"HTTP/1.1 408"), answer[:80]
            assert b"timed out reading the request" in answer
    finally:
        for sock in tricklers:
            sock.close()
    assert slow.stored()[0] == before[0]
    assert client.list_headers().headers == []


def test_slow_headers_are_cut_off(slow: Running) -> None:
    sock = _open(slow)
    try:
        sock.sendall(b"POST /wsemail HTTP/1.1\r\nHost: localhost\r\n")
        closed = False
        for i in range(100):  # 20 s of trickling if nobody stopped it
            try:
                sock.sendall(f"X-Slow-{i}: a\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                closed = True
                break
            time.sleep(0.2)
            sock.setblocking(False)
            try:
                seen = sock.recv(4096)
            except BlockingIOError:
                continue  # nothing written: still open
            finally:
                sock.setblocking(True)
            assert seen in (b"", TIMEOUT_ANSWER)
            closed = True
            break
        assert closed, "a connection trickling its headers was never closed"
    finally:
        sock.close()
    slow.client("carol@localhost").list_headers()


def test_silent_and_idle_connections_are_closed(slow: Running) -> None:
    silent = _open(slow)
    try:
        assert _answer(silent) == TIMEOUT_ANSWER
    finally:
        silent.close()
    idle = _open(slow)
    try:
        idle.sendall(b"GET /wsemail HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = _answer(idle)  # the answer, then the keep-alive timeout closes it
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"?wsdl\n")
    finally:
        idle.close()


def test_connections_per_peer_are_capped(tmp_path: Path) -> None:
    capped = start_server(tmp_path / "s", max_connections_per_peer=4, header_timeout=30.0)
    held = [_open(capped) for _ in range(4)]
    try:
        before = capped.stored()
        extra = _open(capped)
        answer = _answer(extra)
        extra.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"Busy" in answer
        assert b"too many connections from your address" in answer
        assert capped.stored() == before
        for sock in held:
            sock.close()
        held = []
        # the count went down with them: the server serves again
        for _ in range(50):
            if not capped.controller.server.peers or not capped.controller.server.peers.total:
                break
            time.sleep(0.05)
        assert capped.client("carol@localhost").list_headers().headers == []
    finally:
        for sock in held:
            sock.close()
        capped.stop()


def test_requests_per_peer_are_capped(slow: Running) -> None:
    peers = slow.controller.server.peers
    assert peers is not None
    before = slow.stored()
    peers.inflight["127.0.0.1"] = peers.max_inflight_per_peer  # that many running already
    try:
        refused = slow.post(b"<x/>")
        assert refused.status_code == 503 and b"too many requests from your address" in (
            refused.content
        )
    finally:
        peers.inflight.pop("127.0.0.1")
    assert slow.stored() == before
    slow.client("carol@localhost").list_headers()


def test_descriptors_are_kept_for_the_store(slow: Running) -> None:
    peers = slow.controller.server.peers
    assert peers is not None
    limit = peers.max_connections
    peers.max_connections = peers.total + 1  # one more connection fits in the descriptors
    held = _open(slow)
    try:
        held.sendall(b"GET /wsemail HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert held.recv(4096).startswith(b"HTTP/1.1 200")
        refused = _open(slow)
        answer = _answer(refused)
        refused.close()
        assert answer.startswith(b"HTTP/1.1 503") and b"out of connections" in answer
    finally:
        held.close()
        peers.max_connections = limit
    slow.client("carol@localhost").list_headers()


def test_a_trickling_upload_is_cut_off(slow: Running) -> None:
    begin = etree.Element(q("BeginUpload"))
    element(begin, "Name", "slow.bin")
    element(begin, "Size", "1000")
    ticket = slow.client("alice@localhost").extension("attachments", begin)
    assert ticket is not None
    path = f"{text_of(ticket, 'Path')}?ticket={text_of(ticket, 'Ticket')}"
    sock = _open(slow)
    try:
        sock.sendall(
            f"PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 1000\r\n\r\n".encode()
        )
        answer = b""
        for _ in range(100):  # 1 byte / 0.1 s: below the minimum rate, never a stall
            try:
                sock.sendall(b"x")
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.1)
            sock.setblocking(False)
            try:
                answer = sock.recv(65536)
            except BlockingIOError:
                continue
            finally:
                sock.setblocking(True)
            break
        answer += _answer(sock)
    finally:
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408") and b"too slow" in answer, answer[:200]
    assert slow.count("SELECT count(*) FROM attachment_blobs") == 0
    slow.client("carol@localhost").list_headers()
