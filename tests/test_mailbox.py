"""Folders, moving, flags and Trash (issue 17), through the real server and the CLI."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest

from wsemail.server.mailbox import maintenance
from wsemail.server.store import MIGRATIONS, SqliteStore, Tx, statements

from conftest import Cli, Running, sqlite_steps, start_server

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL

DAY = 86400.0


def _inbox_of_bob(server: Running, subjects: list[str]) -> list[str]:
    alice = server.client()
    for subject in subjects:
        alice.send(["bob@localhost"], subject, f"text of {subject}")
    return [h.id for h in server.client("bob@localhost").list_headers().headers]


def test_every_user_has_the_system_folders_and_folders_of_their_own(server: Running) -> None:
    bob = server.client("bob@localhost")
    ids = _inbox_of_bob(server, ["one", "two"])
    names = [f.name for f in bob.folders()]
    assert names == ["inbox", "sent", "Archive", "Drafts", "Trash"]
    assert bob.create_folder("Projects") == "Projects"
    assert bob.move(ids, "projects") == 2  # any case names the folder
    assert bob.rename_folder("Projects", "Work 2026") == "Work 2026"
    folders = {f.name: f for f in bob.folders()}
    assert "Projects" not in folders and folders["Work 2026"].total == 2
    assert folders["Work 2026"].unread == 2 and not folders["Work 2026"].system
    assert folders["inbox"].total == 0
    listed = bob.list_headers("work 2026").headers  # the messages went with the rename
    assert {h.id for h in listed} == set(ids) and {h.folder for h in listed} == {"Work 2026"}
    bob.move(ids, "Archive")
    assert bob.delete_folder("Work 2026") == "Work 2026"
    assert [f.name for f in bob.folders()] == ["inbox", "sent", "Archive", "Drafts", "Trash"]
    assert len(bob.list_headers("archive").headers) == 2
    # folders are per user
    assert [f.name for f in server.client("carol@localhost").folders()][-1] == "Trash"


def test_delete_moves_to_trash_and_a_delete_in_trash_is_final(server: Running) -> None:
    bob = server.client("bob@localhost")
    first, second = _inbox_of_bob(server, ["keep", "drop"])
    assert bob.delete(first) == "trashed"
    assert [h.id for h in bob.list_headers("Trash").headers] == [first]
    assert bob.move([first], "inbox") == 1  # out of Trash again
    assert {h.id for h in bob.list_headers().headers} == {first, second}
    assert bob.delete(second) == "trashed"
    assert bob.delete(second) == "deleted"
    assert bob.list_headers("Trash").headers == []
    assert server.count("SELECT count(*) FROM messages WHERE owner='bob@localhost'") == 1


def test_trash_older_than_its_age_is_emptied(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", store_url=store_url, trash_days=30.0)
    try:
        bob = running.client("bob@localhost")
        old, recent, kept = _inbox_of_bob(running, ["old", "recent", "kept"])
        bob.delete(old)
        server = running.controller.server
        now = time.time()
        # the sweep with a clock 10 days on: nothing is old enough yet
        assert asyncio.run(maintenance.sweep(server, now=now + 10 * DAY)) == 0
        running.count(f"UPDATE messages SET trashed_at=trashed_at-{40 * DAY} RETURNING 1")
        bob.delete(recent)
        # `old` went to Trash 40 days ago: the delete of `recent` emptied it on the way
        assert [h.id for h in bob.list_headers("Trash").headers] == [recent]
        assert asyncio.run(maintenance.sweep(server, now=now + 29 * DAY)) == 0
        assert asyncio.run(maintenance.sweep(server, now=now + 31 * DAY)) == 1
        assert bob.list_headers("Trash").headers == []
        assert [h.id for h in bob.list_headers().headers] == [kept]
    finally:
        running.stop()


def test_trash_days_zero_keeps_trash_until_deleted(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", store_url=store_url, trash_days=0.0)
    try:
        bob = running.client("bob@localhost")
        (only,) = _inbox_of_bob(running, ["x"])
        bob.delete(only)
        server = running.controller.server
        assert asyncio.run(maintenance.sweep(server, now=time.time() + 1000 * DAY)) == 0
        assert [h.id for h in bob.list_headers("Trash").headers] == [only]
    finally:
        running.stop()


def test_flags_and_retrieve_peek(server: Running) -> None:
    bob = server.client("bob@localhost")
    first, second = _inbox_of_bob(server, ["a", "b"])
    assert bob.retrieve(first, peek=True).seen is False
    assert [h.seen for h in bob.list_headers().headers] == [False, False]
    assert bob.retrieve(first).seen is True
    assert bob.set_flags([first, second], flagged=True, answered=True) == 2
    assert bob.set_flags([first], seen=False) == 1
    headers = {h.id: h for h in bob.list_headers().headers}
    assert headers[first].flagged and headers[first].answered and not headers[first].seen
    assert headers[second].flagged and not headers[second].seen
    bob.set_flags([second], flagged=False, seen=True)
    headers = {h.id: h for h in bob.list_headers().headers}
    assert not headers[second].flagged and headers[second].seen
    assert [h.id for h in bob.list_headers(unread_only=True).headers] == [first]


def test_a_moved_copy_still_makes_a_retried_send_store_once(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    first = alice.send(["bob@localhost"], "once", message_id="<moved-1@localhost>")
    bob.move([bob.list_headers().headers[0].id], "Archive")
    alice.delete(first.id)  # the sender's copy is in Trash now
    again = alice.send(["bob@localhost"], "once", message_id="<moved-1@localhost>")
    assert again == first
    assert server.count("SELECT count(*) FROM messages") == 2


def test_a_version_5_store_is_migrated_with_its_mail(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for number, script in enumerate(MIGRATIONS[:5], start=1):
        for statement in statements(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={number}")
    for public_id, body in (
        ("old1", "the harvest report"),
        ("old2", '<e2e:Sealed xmlns:e2e="urn:wsemail:e2e">harvest</e2e:Sealed>'),
    ):
        conn.execute(
            "INSERT INTO messages(id, owner, folder, message_id, sender, to_json, cc_json, "
            "subject, date, size, body) VALUES (?, 'bob@localhost', 'inbox', ?, "
            "'alice@localhost', '[]', '[]', 'from before', '2026-01-01T00:00:00Z', 1, ?)",
            (public_id, f"<{public_id}@x>", body),
        )
    conn.close()
    store = SqliteStore(path)
    try:
        rows = store.transact_sync(
            lambda tx: tx.conn.execute(
                "SELECT id, arrival, sealed FROM messages ORDER BY seq"
            ).fetchall()
        )
        assert rows == [("old1", "inbox", 0), ("old2", "inbox", 1)]
        found = store.transact_sync(
            lambda tx: tx.conn.execute(
                "SELECT rowid FROM messages_fts WHERE messages_fts MATCH 'harvest'"
            ).fetchall()
        )
        assert found == [(1,)]  # the sealed body was left out of the index
    finally:
        store.close()


def test_cli_folders_move_flag_peek_and_delete(cli: Cli) -> None:
    bob = "bob@localhost"
    ids = _inbox_of_bob(cli.server, ["first", "second"])
    assert cli("folder", "create", "Receipts", user=bob).stdout == "created Receipts\n"
    moved = cli("move", "receipts", user=bob, input="\n".join(ids) + "\n")  # ids on stdin
    assert moved.stdout == "moved 2 message(s) to receipts\n"
    cli("flag", ids[0], "--star", "--answered", user=bob)
    peeked = json.loads(cli("retrieve", "--peek", "--json", ids[0], user=bob).stdout)
    assert peeked["seen"] is False and peeked["flagged"] is True
    listed = cli("list", "--folder", "Receipts", user=bob).stdout.splitlines()
    assert listed[0].startswith(f"N*A {ids[0]}") and listed[1].startswith(f"N   {ids[1]}")
    assert cli("delete", ids[0], user=bob).stdout == f"moved to Trash: {ids[0]}\n"
    folders = [json.loads(x) for x in cli("folders", "--json", user=bob).stdout.splitlines()]
    assert {"name": "Receipts", "total": 1, "unread": 1, "system": False} in folders
    assert {"name": "Trash", "total": 1, "unread": 1, "system": True} in folders


def test_the_sweep_on_a_delete_reads_only_expired_trash(tmp_path: Path) -> None:
    """A delete empties expired Trash on the way: through the trashed-by-time index, so a
    Trash of 2,000 recent copies is not read at every delete (the owner's folder index
    read them all: ~12,000 SQLite steps a delete here, now a few hundred)."""
    from dataclasses import replace

    from wsemail.protocol.message import Message
    from wsemail.server.mailbox import records

    store = SqliteStore(tmp_path / "s.db")
    copy = Message("", "", "inbox", "a@localhost", ["b@localhost"], [], "s", "d", 1, False, "b")

    def fill(tx: Tx) -> None:
        for n in range(2000):
            tx.add_message("b@localhost", "inbox", replace(copy, message_id=f"<{n}@x>"))
        tx.conn.execute("UPDATE messages SET folder='Trash', trashed_at=?", (time.time(),))

    def sweep(tx: Tx) -> tuple[int, int]:
        cutoff = time.time() - 30 * DAY
        return sqlite_steps(tx.conn, lambda: records.sweep_trash(tx, cutoff, "b@localhost"))

    try:
        store.transact_sync(fill)
        gone, steps = store.transact_sync(sweep)
        assert gone == 0
        assert steps < 1000, steps
    finally:
        store.close()
