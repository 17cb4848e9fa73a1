"""Bad input on the IMAP port (issue 19): oversized and unterminated literals, deep
nesting, bad modified UTF-7, commands before LOGIN, huge UID sets, pipelined garbage. Each
is answered with a tagged BAD/NO or the connection is closed; nothing in the store changes
and the server goes on serving others (a fresh imaplib session and a SOAP client)."""

from __future__ import annotations

import imaplib
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_imap import imap_plugin, with_imap

from conftest import PASSWORD, Running, start_server, wait_for


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    server = start_server(tmp_path_factory.mktemp("imap") / "s", plugins=with_imap())
    alice = server.client("alice@localhost")
    for n in range(3):
        alice.send(["bob@localhost"], f"keep {n}", f"body {n}")
    yield server
    server.stop()


def state(running: Running) -> tuple[object, ...]:
    return running.controller.server.store.transact_sync(  # type: ignore[no-any-return]
        lambda tx: (
            tx.conn.execute(
                "SELECT count(*), total(seen), total(flagged), total(answered), "
                "group_concat(folder) FROM messages"
            ).fetchone(),
            tx.conn.execute("SELECT group_concat(name) FROM folders").fetchone(),
            tx.conn.execute(
                "SELECT count(*), total(deleted), total(draft) FROM imap_uids"
            ).fetchone(),
        )
    )


class Wire:
    """A raw connection: exactly the bytes a test sends, every line the server answers."""

    def __init__(self, running: Running) -> None:
        self.sock = socket.create_connection(imap_plugin(running).address, timeout=10)
        self.stream = self.sock.makefile("rb")
        assert self.stream.readline().startswith(b"* OK")

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def until(self, tag: bytes) -> list[bytes]:
        """Lines up to the tagged answer for `tag` (or up to the close: then ends in b"")."""
        lines = []
        while True:
            try:
                line = self.stream.readline()
            except (ConnectionResetError, TimeoutError):
                line = b""
            lines.append(line)
            if not line or line.startswith(tag + b" "):
                return lines

    def login(self) -> None:
        self.send(b'l LOGIN bob@localhost "%s"\r\n' % PASSWORD.encode())
        assert self.until(b"l")[-1].startswith(b"l OK")
        self.send(b"s SELECT INBOX\r\n")
        assert self.until(b"s")[-1].startswith(b"s OK")

    def close(self) -> None:
        self.stream.close()
        self.sock.close()


def still_serves(running: Running) -> None:
    host, port = imap_plugin(running).address
    with imaplib.IMAP4(host, port, timeout=10) as imap:
        imap.login("bob@localhost", PASSWORD)
        assert imap.select("INBOX") == ("OK", [b"3"])
    assert len(running.client("bob@localhost").list_headers().headers) == 3


def refused(lines: list[bytes], tag: bytes) -> bool:
    last = lines[-1]
    return last == b"" or last.startswith(tag + b" BAD") or last.startswith(tag + b" NO")


MAIL = b"From: bob@localhost\r\nSubject: x\r\n\r\nhi\r\n"
CASES: dict[str, tuple[bool, bytes, bytes]] = {
    # name: (log in first, bytes sent, tag whose answer ends it)
    "oversized-literal": (True, b"a APPEND Drafts {999999999}\r\n", b"a"),
    "oversized-literal-before-login": (False, b"a LOGIN {100000}\r\n", b"a"),
    "append-before-login-is-small": (False, b"a APPEND Drafts {1000000}\r\n", b"a"),
    "oversized-nonsync-literal": (True, b"a APPEND Drafts {999999999+}\r\nFrom: x\r\n", b"a"),
    "nested-parentheses": (True, b"a FETCH 1 " + b"(" * 10_000 + b"\r\n", b"a"),
    "nested-balanced-parentheses": (True, b"a FETCH 1 " + b"(" * 10_000 + b")" * 10_000, b"a"),
    "search-nesting": (True, b"a SEARCH " + b"NOT " * 2000 + b"ALL\r\n", b"a"),
    "bad-utf7-unterminated": (True, b'a CREATE "&Jjo"\r\n', b"a"),
    "bad-utf7-shifted-ascii": (True, b'a CREATE "&AGE-"\r\n', b"a"),
    "bad-utf7-base64": (True, b'a SELECT "&Jj!o-"\r\n', b"a"),
    "select-before-login": (False, b"a SELECT INBOX\r\n", b"a"),
    "fetch-before-login": (False, b"a FETCH 1:* (FLAGS)\r\n", b"a"),
    "store-before-login": (False, b"a STORE 1 +FLAGS (\\Deleted)\r\n", b"a"),
    "create-before-login": (False, b"a CREATE Evil\r\n", b"a"),
    "uid-beyond-32-bits": (True, b"a UID STORE 1:4294967296 +FLAGS (\\Deleted)\r\n", b"a"),
    "seq-beyond-folder": (True, b"a STORE 4294967295 +FLAGS (\\Deleted)\r\n", b"a"),
    "unknown-flag": (True, b"a STORE 1:* +FLAGS (\\Recent)\r\n", b"a"),
    "bad-fetch-item": (True, b"a FETCH 1 (BODY[HEADER.FIELDS ()])\r\n", b"a"),
    "bad-section": (True, b"a FETCH 1 (BODY[9999.HEADER.NOPE])\r\n", b"a"),
    "tag-missing": (True, b"NOOP\r\n", b"NOOP"),
    "quoted-with-nul": (False, b'a LOGIN "bob\x00" "x"\r\n', b"a"),
    "8bit-atom": (True, b"a SELECT IN\xffBOX\r\n", b"a"),
    "long-line": (True, b"a NOOP " + b"x" * 70_000 + b"\r\n", b"a"),
    "append-to-inbox": (True, b"a APPEND INBOX {%d+}\r\n%s\r\n" % (len(MAIL), MAIL), b"a"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_and_nothing_changes(running: Running, name: str) -> None:
    log_in, data, tag = CASES[name]
    wire = Wire(running)
    try:
        if log_in:
            wire.login()
        before = state(running)
        wire.send(data)
        lines = wire.until(tag)
        assert refused(lines, tag), lines[-3:]
        assert not any(line.startswith(b"+ ") for line in lines), "a literal was invited"
    finally:
        wire.close()
    assert state(running) == before
    still_serves(running)


def test_unterminated_literal_ends_the_connection(running: Running) -> None:
    wire = Wire(running)
    try:
        wire.login()
        before = state(running)
        wire.send(b"a APPEND Drafts {200}\r\n")
        assert wire.until(b"+")[-1].startswith(b"+ ")
        wire.send(b"From: bob@localhost\r\nSubject: half\r\n")
        wire.sock.shutdown(socket.SHUT_WR)
        lines = wire.until(b"a")
        assert lines[-1] == b""  # closed, never answered OK
    finally:
        wire.close()
    assert state(running) == before
    still_serves(running)


def test_uid_set_to_the_largest_uid_is_read_but_examine_changes_nothing(
    running: Running,
) -> None:
    wire = Wire(running)
    try:
        wire.login()
        before = state(running)
        wire.send(b"a UID FETCH 1:4294967295 (FLAGS)\r\n")
        lines = wire.until(b"a")
        assert lines[-1].startswith(b"a OK") and len(lines) == 4
        wire.send(b"e EXAMINE INBOX\r\n")
        assert wire.until(b"e")[-1].startswith(b"e OK [READ-ONLY]")
        wire.send(b"b UID STORE 1:4294967295 +FLAGS (\\Deleted)\r\nc EXPUNGE\r\n")
        assert wire.until(b"b")[-1].startswith(b"b NO")
        assert wire.until(b"c")[-1].startswith(b"c NO")
        wire.send(b"d FETCH 1:* (BODY[])\r\n")  # EXAMINE: reading does not set \\Seen
        assert wire.until(b"d")[-1].startswith(b"d OK")
    finally:
        wire.close()
    assert state(running) == before
    still_serves(running)


def test_pipelined_garbage_is_answered_line_by_line(running: Running) -> None:
    before = state(running)
    wire = Wire(running)
    try:
        garbage = [
            b"\x00\x01\x02",
            b"* OK not from a client",
            b"+ continuation",
            b"a1 BOGUS",
            b'a2 LOGIN "unterminated',
            b"a3 LOGIN ) (",
            b"a4  NOOP",
            b"a5 UID",
            b"a6 UID FROB 1",
        ] * 20
        wire.send(b"\r\n".join(garbage) + b"\r\nzz NOOP\r\n")
        lines = wire.until(b"zz")
        assert lines[-1].startswith(b"zz OK")
        answers = [line for line in lines[:-1] if line]
        assert len(answers) == len(garbage)
        assert all(b" BAD " in line for line in answers)
    finally:
        wire.close()
    assert state(running) == before
    still_serves(running)


def test_many_connections_from_one_peer_do_not_stop_the_others(running: Running) -> None:
    wires = [Wire(running) for _ in range(20)]
    try:
        for wire in wires:
            wire.send(b"a LOGIN {99999999+}\r\n")
        still_serves(running)
    finally:
        for wire in wires:
            wire.close()


def test_connections_per_peer_are_capped(tmp_path: Path) -> None:
    capped = start_server(tmp_path / "s", plugins=with_imap(max_connections_per_peer=3))
    try:
        held = [Wire(capped) for _ in range(3)]
        sock = socket.create_connection(imap_plugin(capped).address, timeout=10)
        with sock, sock.makefile("rb") as stream:
            assert stream.readline().startswith(b"* BYE too many connections")
            assert stream.readline() == b""
        held.pop().close()  # once the server has seen it go, there is room again

        def logged_in() -> bool:
            try:
                with imaplib.IMAP4(*imap_plugin(capped).address, timeout=10) as imap:
                    return imap.login("bob@localhost", PASSWORD)[0] == "OK"
            except imaplib.IMAP4.error:  # BYE while the server has not yet seen it go
                return False

        wait_for(logged_in, "room for one more connection")
        for wire in held:
            wire.close()
    finally:
        capped.stop()
