"""Bad input to the mailbox operations (issue 17): each a clear fault, nothing changes,
nothing of another user's is revealed, and the server still answers."""

from __future__ import annotations

from typing import Any

import pytest
from lxml import etree

from wsemail.protocol.errors import NotFound, RemoteFault, RequestInvalid
from wsemail.protocol.soap import element, q

from conftest import Cli, Running

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL


def _state(server: Running) -> Any:
    def read(tx: Any) -> Any:
        messages = tx.conn.execute(
            "SELECT id, owner, folder, seen, flagged, answered, trashed_at FROM messages "
            "ORDER BY seq"
        ).fetchall()
        folders = tx.conn.execute("SELECT owner, name FROM folders ORDER BY 1, 2").fetchall()
        return messages, folders

    return server.controller.server.store.transact_sync(read)


def _refused(server: Running, call: Any, fault: type[RemoteFault]) -> str:
    before = _state(server)
    with pytest.raises(fault) as caught:
        call()
    assert type(caught.value) is fault, caught.value
    assert _state(server) == before
    assert server.client("carol@localhost").list_headers().headers is not None  # still serving
    return str(caught.value)


def _setup(server: Running) -> tuple[Any, list[str], str]:
    alice, bob = server.client(), server.client("bob@localhost")
    for subject in ("one", "two"):
        alice.send(["bob@localhost"], subject, "x")
    alice.send(["carol@localhost"], "carol's", "y")
    carols = server.client("carol@localhost").list_headers().headers[0].id
    bob.create_folder("Projects")
    return bob, [h.id for h in bob.list_headers().headers], carols


BAD_NAMES = [
    "a/b",
    "back\\slash",
    "..",
    "x..y",
    ".",
    "tab\there",
    "line\nbreak",
    "\u202eevil",  # right-to-left override
    "z" * 201,
    "x" * 1000,
    "",
    " padded",
]


def test_bad_folder_names_are_refused(server: Running) -> None:
    bob, ids, _ = _setup(server)
    for name in BAD_NAMES:
        _refused(server, lambda n=name: bob.create_folder(n), RequestInvalid)
        _refused(server, lambda n=name: bob.rename_folder("Projects", n), RequestInvalid)
        _refused(server, lambda n=name: bob.move(ids, n), RequestInvalid)
        _refused(server, lambda n=name: bob.list_headers(n or "."), RequestInvalid)
    assert bob.create_folder("z" * 200) == "z" * 200  # the longest name is fine


def test_folder_rules(server: Running) -> None:
    bob, ids, _ = _setup(server)
    bob.move(ids[:1], "Projects")
    _refused(server, lambda: bob.create_folder("projects"), RequestInvalid)  # exists (any case)
    _refused(server, lambda: bob.create_folder("TRASH"), RequestInvalid)
    _refused(server, lambda: bob.rename_folder("inbox", "Old"), RequestInvalid)
    _refused(server, lambda: bob.rename_folder("Projects", "Archive"), RequestInvalid)
    _refused(server, lambda: bob.delete_folder("Trash"), RequestInvalid)
    reason = _refused(server, lambda: bob.delete_folder("Projects"), RequestInvalid)
    assert "not empty" in reason
    _refused(server, lambda: bob.delete_folder("Nope"), NotFound)
    _refused(server, lambda: bob.rename_folder("Nope", "Other"), NotFound)
    _refused(server, lambda: bob.list_headers("Nope"), NotFound)
    assert bob.rename_folder("Projects", "PROJECTS") == "PROJECTS"  # a change of case is fine


def test_another_users_message_is_answered_as_a_missing_one(server: Running) -> None:
    bob, ids, carols = _setup(server)
    missing = "AAAAAAAAAAAAAAAA"
    answers = []
    for target in (carols, missing):
        answers.append(
            [
                _refused(server, lambda t=target: bob.move([ids[0], t], "Archive"), NotFound),
                _refused(
                    server, lambda t=target: bob.set_flags([t, ids[1]], flagged=True), NotFound
                ),
                _refused(server, lambda t=target: bob.retrieve(t, peek=True), NotFound),
                _refused(server, lambda t=target: bob.delete(t), NotFound),
            ]
        )
    assert [a.replace(carols, "ID") for a in answers[0]] == [
        a.replace(missing, "ID") for a in answers[1]
    ]
    _refused(server, lambda: bob.move(ids, "Nowhere"), NotFound)  # a missing folder


def test_bad_move_and_flag_requests(server: Running) -> None:
    bob, ids, _ = _setup(server)
    none = etree.Element(q("Move"))
    element(none, "Folder", "Archive")
    _refused(server, lambda: bob.call(none), RequestInvalid)
    _refused(server, lambda: bob.move(["x" * 65], "Archive"), RequestInvalid)
    too_many = etree.Element(q("Move"))
    for n in range(1001):
        element(too_many, "Id", f"id{n}")
    element(too_many, "Folder", "Archive")
    _refused(server, lambda: bob.call(too_many), RequestInvalid)
    no_flags = etree.Element(q("SetFlags"))
    element(no_flags, "Id", ids[0])
    _refused(server, lambda: bob.call(no_flags), RequestInvalid)
    bad_flag = etree.Element(q("SetFlags"))
    element(bad_flag, "Id", ids[0])
    element(bad_flag, "Seen", "maybe")
    _refused(server, lambda: bob.call(bad_flag), RequestInvalid)


BAD_QUERIES = [
    '"unbalanced',
    'subject:"open',
    'wo"rd',
    '"a"b',
    "foo:bar",
    "re: hello",
    "http://example.org",
    "is:bogus",
    "has:pdf",
    "in:",
    "from:",
    "from:@@",
    "before:2026-13-01",
    "after:2026-1-1",
    "before:yesterday",
    "in:a in:b",
    "is:read is:unread",
    "",
    "   ",
    "x" * 1025,
    "word " * 300,  # 1.5 KB
    "budget " * 33,  # too many terms, under 1 KB
    "budget\x7f",  # a control character XML lets through
]


def test_bad_queries_are_refused_with_a_reason(server: Running) -> None:
    bob, _, _ = _setup(server)
    reasons = {q: _refused(server, lambda q=q: bob.search(q), RequestInvalid) for q in BAD_QUERIES}
    assert "unbalanced quotes" in reasons['"unbalanced']
    assert "unknown search operator foo:" in reasons["foo:bar"]
    assert "1024 bytes" in reasons["x" * 1025]
    ten_kb = "budget " * 1500
    _refused(server, lambda: bob.search(ten_kb), RequestInvalid)
    _refused(server, lambda: bob.search("in:Nowhere budget"), NotFound)
    _refused(server, lambda: bob.search("budget", limit=501), RequestInvalid)
    _refused(server, lambda: bob.search("budget", cursor="-1"), RequestInvalid)


def test_cli_refusals_are_one_line_with_exit_4(cli: Cli) -> None:
    bob, ids, carols = _setup(cli.server)
    before = _state(cli.server)
    for args in (
        ("folder", "create", "a/b"),
        ("move", ids[0], "Nowhere"),
        ("flag", carols, "--star"),
        ("search", 'subject:"open'),
    ):
        result = cli(*args, user="bob@localhost", check=False)
        assert result.returncode == 4, (args, result.stderr)
        assert result.stdout == "" and len(result.stderr.splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    usage = cli("flag", ids[0], user="bob@localhost", check=False)
    assert usage.returncode == 1 and len(usage.stderr.splitlines()) == 1
    assert _state(cli.server) == before
