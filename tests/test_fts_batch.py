"""The full-text entries of a commit batch are written once, at its end (schema.py migration
10, `SqliteStore.finishing`): copies stored, changed, deleted and rolled back inside one
batch leave an index that FTS5's own integrity check accepts and that finds exactly the
committed text; a batch of many copies writes the index a few times, not a few times per
copy; rows noted but not indexed by an earlier process are indexed by the next batch."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import Message, new_message_id
from wsemail.server.store import SqliteStore, Tx

OWNER = "alice@localhost"


def message(subject: str, body: str = "plain words") -> Message:
    return Message(
        id="",
        message_id=new_message_id("localhost"),
        folder="inbox",
        sender="bob@localhost",
        to=[OWNER],
        cc=[],
        subject=subject,
        date="2026-12-06T00:00:00Z",
        size=len(body),
        seen=False,
        body=body,
    )


def one_batch(store: SqliteStore, units: list[Callable[[Tx], Any]]) -> list[object]:
    """Run `units` in one commit batch (the writer is held until all are queued); returns
    each one's result or the exception it raised."""
    gate, started = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> None:
        started.set()
        gate.wait(10)

    first = store.submit(blocker)
    assert started.wait(10)
    futures = [store.submit(unit) for unit in units]
    gate.set()
    first.result(10)
    outcomes: list[object] = []
    for future in futures:
        try:
            outcomes.append(future.result(10))
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            outcomes.append(exc)
    return outcomes


def found(store: SqliteStore, words: str) -> list[str]:
    return store.transact_sync(
        lambda tx: [
            r[0]
            for r in tx.conn.execute(
                "SELECT m.subject FROM messages_fts f JOIN messages m ON m.seq=f.rowid "
                "WHERE messages_fts MATCH ? ORDER BY m.seq",
                (words,),
            )
        ]
    )


def check(store: SqliteStore) -> None:
    """FTS5's integrity check against the messages (raises if an entry is missing, extra or
    stale), and nothing left noted."""
    store.transact_sync(
        lambda tx: tx.conn.execute(
            "INSERT INTO messages_fts(messages_fts, rank) VALUES ('integrity-check', 1)"
        )
    )
    assert (
        store.transact_sync(
            lambda tx: tx.conn.execute("SELECT count(*) FROM messages_fts_pending").fetchone()[0]
        )
        == 0
    )


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SqliteStore(tmp_path / "fts.db")
    yield s
    s.close()


def test_copies_changed_deleted_and_rolled_back_in_one_batch_leave_a_true_index(
    store: SqliteStore,
) -> None:
    older = store.transact_sync(lambda tx: tx.add_message(OWNER, "inbox", message("kiwi old")))

    def refused(tx: Tx) -> None:
        tx.add_message(OWNER, "inbox", message("mango refused"))
        raise RequestInvalid("undone with its savepoint")

    def add_change(tx: Tx) -> None:
        _, seq = tx.add_message(OWNER, "inbox", message("apple draft"))
        tx.conn.execute("UPDATE messages SET subject='banana final' WHERE seq=?", (seq,))

    def add_delete(tx: Tx) -> None:
        _, seq = tx.add_message(OWNER, "inbox", message("cherry gone"))
        tx.conn.execute("DELETE FROM messages WHERE seq=?", (seq,))

    def change_older(tx: Tx) -> None:  # an indexed row changed in the batch
        tx.conn.execute("UPDATE messages SET subject='kiwi new' WHERE seq=?", (older[1],))

    def reuse_seq(tx: Tx) -> None:  # the top row deleted: the next copy gets its seq again
        _, seq = tx.add_message(OWNER, "inbox", message("plum first"))
        tx.conn.execute("DELETE FROM messages WHERE seq=?", (seq,))
        _, again = tx.add_message(OWNER, "inbox", message("pear second"))
        assert again == seq

    outcomes = one_batch(
        store,
        [
            add_change,
            refused,
            add_delete,
            change_older,
            reuse_seq,
            lambda tx: tx.add_message(OWNER, "sent", message("grape sealed", "-----BEGIN")),
        ],
    )
    assert isinstance(outcomes[1], RequestInvalid)
    assert [o for o in outcomes if isinstance(o, Exception)] == [outcomes[1]]
    check(store)
    assert found(store, "banana") == ["banana final"]
    assert found(store, "apple") == []
    assert found(store, "cherry") == []
    assert found(store, "mango") == []
    assert found(store, "kiwi") == ["kiwi new"]
    assert found(store, "old") == []
    assert found(store, "plum") == []
    assert found(store, "pear") == ["pear second"]
    # and later changes of rows indexed at a batch's end are followed too
    store.transact_sync(
        lambda tx: tx.conn.execute("DELETE FROM messages WHERE subject='banana final'")
    )
    check(store)
    assert found(store, "banana") == []


def test_a_batch_of_many_copies_writes_the_index_a_few_times(store: SqliteStore) -> None:
    """FTS5 writes a segment at every savepoint; a unit of work runs in one. Counted with
    SQLite's trace of the statements FTS5 runs on its own tables (was ~6 writes a copy)."""
    writes: list[str] = []

    def trace(tx: Tx) -> None:
        tx.conn.set_trace_callback(
            lambda sql: writes.append(sql) if "messages_fts_data" in sql else None
        )

    def untrace(tx: Tx) -> None:
        tx.conn.set_trace_callback(None)

    store.transact_sync(lambda tx: tx.add_message(OWNER, "inbox", message("warm up")))
    one_batch(
        store,
        [trace]
        + [
            (lambda tx, n=n: tx.add_message(OWNER, "inbox", message(f"copy {n}", f"text {n}")))
            for n in range(40)
        ],
    )
    store.transact_sync(untrace)
    check(store)
    assert len(found(store, "copy")) == 40
    assert len(writes) <= 8, writes


def test_rows_noted_by_an_earlier_process_are_indexed_by_the_next_batch(tmp_path: Path) -> None:
    path = tmp_path / "fts.db"
    first = SqliteStore(path)
    first.close()
    raw = sqlite3.connect(path, isolation_level=None)  # a process that stopped before commit
    raw.execute("BEGIN")
    Tx(raw, 0.0).add_message(OWNER, "inbox", message("lychee left over"))
    raw.execute("COMMIT")
    assert raw.execute("SELECT count(*) FROM messages_fts_pending").fetchone()[0] == 1
    raw.close()
    store = SqliteStore(path)
    try:
        store.transact_sync(lambda tx: tx.add_message(OWNER, "inbox", message("another one")))
        check(store)
        assert found(store, "lychee") == ["lychee left over"]
    finally:
        store.close()


def test_a_database_indexed_before_migration_10_stays_true(tmp_path: Path) -> None:
    """Copies indexed by the old per-row trigger, then the store upgraded: changing and
    deleting them keeps the index true."""
    from wsemail.server.schema import MIGRATIONS
    from wsemail.server.store import statements

    path = tmp_path / "old.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("BEGIN")
    for number, script in enumerate(MIGRATIONS[:9], start=1):
        for statement in statements(script):
            raw.execute(statement)
        raw.execute(f"PRAGMA user_version={number}")
    for word in ("fig", "date", "lime"):
        Tx(raw, 0.0).add_message(OWNER, "inbox", message(f"{word} before"))
    raw.execute("COMMIT")
    raw.close()
    store = SqliteStore(path)
    try:
        assert found(store, "fig") == ["fig before"]
        store.transact_sync(
            lambda tx: tx.conn.execute(
                "UPDATE messages SET subject='fig after' WHERE subject='fig before'"
            )
        )
        store.transact_sync(
            lambda tx: tx.conn.execute("DELETE FROM messages WHERE subject='date before'")
        )
        store.transact_sync(lambda tx: tx.add_message(OWNER, "inbox", message("lime again")))
        check(store)
        assert found(store, "fig") == ["fig after"]
        assert found(store, "date") == []
        assert found(store, "lime") == ["lime before", "lime again"]
    finally:
        store.close()
