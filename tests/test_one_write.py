"""An answer of known length goes out in one write, head and body together
(`connguard.OneWrite`, the transport uvicorn's request cycle writes through): one system
call and one TLS record instead of two of each. What must not wait does not: a `100
Continue`, the head of a streamed answer, a head whose body never comes."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import Running, start_server
from wsemail.server.connguard import OneWrite

HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\n\r\n"
STREAMED = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
)


class Recorder:
    """A transport that records what it was given (the socket's side is not ours here)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


def _one_write() -> tuple[OneWrite, Recorder]:
    recorder = Recorder()
    return OneWrite(recorder), recorder  # type: ignore[arg-type]


def test_the_head_of_an_answer_of_known_length_goes_with_its_body() -> None:
    out, seen = _one_write()
    out.write(HEAD)
    assert seen.writes == []
    out.write(b"hello")
    assert seen.writes == [HEAD + b"hello"]
    out.flush()  # the answer completes: nothing left
    assert seen.writes == [HEAD + b"hello"]
    assert out.is_closing() is False  # the rest is the transport's


def test_what_must_not_wait_goes_at_once() -> None:
    out, seen = _one_write()  # Expect: 100-continue
    out.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    assert seen.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    out.write(HEAD)
    out.write(b"hello")
    assert seen.writes[1:] == [HEAD + b"hello"]

    out, seen = _one_write()  # a stream: its first event may be long in coming
    out.write(STREAMED)
    assert seen.writes == [STREAMED]
    out.write(b"5\r\nhello\r\n")
    assert seen.writes == [STREAMED, b"5\r\nhello\r\n"]

    out, seen = _one_write()  # a head whose body never comes: sent when the answer ends
    out.write(HEAD.replace(b"content-length: 5", b"content-length: 0"))
    out.flush()
    assert len(seen.writes) == 1

    out, seen = _one_write()  # or when the connection is closed
    out.write(HEAD)
    out.close()
    assert seen.writes == [HEAD] and seen.closed


@pytest.fixture
def running(tmp_path: Path) -> Iterator[Running]:
    server = start_server(tmp_path / "s")
    yield server
    server.stop()


def _connect(server: Running) -> socket.socket:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return socket.create_connection((parts.hostname, parts.port), timeout=10)


def _read_answer(sock: socket.socket, data: bytes = b"") -> tuple[bytes, bytes]:
    """One HTTP answer of known length: (head, body)."""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (x.partition(": ") for x in lines) if k == "content-length")
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def test_a_real_server_answers_whole_and_keeps_expect_100_continue(running: Running) -> None:
    with _connect(running) as sock:
        for _ in range(3):  # kept alive: each answer whole, in turn
            sock.sendall(b"GET /wsemail HTTP/1.1\r\nHost: localhost\r\n\r\n")
            head, body = _read_answer(sock)
            assert head.startswith(b"HTTP/1.1 200 ") and b"POST SOAP 1.2" in body
        body_bytes = b"<not-soap/>"
        sock.sendall(
            b"POST /wsemail HTTP/1.1\r\nHost: localhost\r\nExpect: 100-continue\r\n"
            b"Content-Type: application/soap+xml\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body_bytes)
        )
        first = sock.recv(65536)  # the server asks for the body before it has it
        assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first
        sock.sendall(body_bytes)
        head, body = _read_answer(sock, first[len(b"HTTP/1.1 100 Continue\r\n\r\n") :])
        assert head.startswith(b"HTTP/1.1 400 ") and b"Fault" in body, (head, body)
