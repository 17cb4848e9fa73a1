"""The store's writer thread survives callers that give up (a cancelled request)."""

from __future__ import annotations

import threading
from pathlib import Path

from wsemail.server.store import SqliteStore, Tx


def test_a_cancelled_unit_is_skipped_and_the_writer_goes_on(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db")
    gate, started = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> int:
        started.set()
        gate.wait(10)
        return 1

    def create(tx: Tx) -> None:
        tx.conn.execute("CREATE TABLE t (x INTEGER)")

    def insert(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES (1)")

    def count(tx: Tx) -> int:
        return int(tx.conn.execute("SELECT count(*) FROM t").fetchone()[0])

    try:
        store.transact_sync(create)
        first = store.submit(blocker)
        assert started.wait(10)
        given_up = store.submit(insert)  # queued behind the blocker
        assert given_up.cancel()
        gate.set()
        assert first.result(10) == 1
        assert store.submit(count).result(10) == 0  # the cancelled unit did nothing
        store.transact_sync(insert)
        assert store.transact_sync(count) == 1  # and the writer still works
    finally:
        gate.set()
        store.close()


def test_migrations_with_triggers_and_semicolons_in_literals_apply_whole(tmp_path: Path) -> None:
    """A plug-in's migration with a trigger body and ';' inside literals and comments runs as
    SQLite reads it (split by sqlite3.complete_statement, not on every ';')."""
    script = """
    CREATE TABLE notes(body TEXT NOT NULL DEFAULT 'a;b', n INTEGER NOT NULL DEFAULT 0);
    -- a comment; with a semicolon
    CREATE TABLE log(what TEXT NOT NULL);
    CREATE TRIGGER notes_logged AFTER INSERT ON notes BEGIN
        INSERT INTO log(what) VALUES ('added; ' || new.body);
        UPDATE notes SET n = n + 1 WHERE rowid = new.rowid;
    END;
    INSERT INTO notes(body) VALUES ('x;y')
    """
    store = SqliteStore(tmp_path / "s.db")
    try:
        store.ensure_schema("notes-plugin", [script])
        store.ensure_schema("notes-plugin", [script])  # once only

        def read(tx: Tx) -> tuple[list[tuple[str, int]], list[str]]:
            notes = tx.conn.execute("SELECT body, n FROM notes").fetchall()
            log = [r[0] for r in tx.conn.execute("SELECT what FROM log")]
            return notes, log

        assert store.transact_sync(read) == ([("x;y", 1)], ["added; x;y"])
    finally:
        store.close()


def test_a_fact_is_remembered_only_when_the_unit_that_learned_it_did_its_work(
    tmp_path: Path,
) -> None:
    """Tx.learn: a component's tables made and seen by a unit that then fails are rolled
    back with it, so the store must not remember them as there."""
    store = SqliteStore(tmp_path / "s.db")

    def made_then_failed(tx: Tx) -> None:
        tx.conn.execute("CREATE TABLE extra (x INTEGER)")
        tx.learn("table:extra")
        assert tx.known("table:extra")
        raise RuntimeError("the unit fails after seeing its own table")

    def made(tx: Tx) -> None:
        tx.conn.execute("CREATE TABLE extra (x INTEGER)")
        tx.learn("table:extra")

    try:
        try:
            store.transact_sync(made_then_failed)
        except RuntimeError:
            pass
        assert not store.transact_sync(lambda tx: tx.known("table:extra"))
        store.transact_sync(made)  # the table could not have been there: CREATE succeeds
        assert store.transact_sync(lambda tx: tx.known("table:extra"))
    finally:
        store.close()


def test_a_unit_that_fails_after_many_pages_rolls_back_alone_without_a_temporary_file(
    tmp_path: Path,
) -> None:
    """Units share a batch's transaction, each in a savepoint: a failing unit that wrote
    hundreds of pages is undone alone, the unit before it commits; the pages to undo it
    are kept in memory (no temporary sub-journal file: it cost two writes a page)."""
    import os

    from wsemail.protocol.errors import RequestInvalid

    store = SqliteStore(tmp_path / "s.db")
    gate, started = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> None:
        started.set()
        gate.wait(10)

    def fill(tx: Tx, tag: str) -> None:
        tx.conn.executemany(
            "INSERT INTO t VALUES (?, ?)", [(f"{tag}{n}", "x" * 900) for n in range(400)]
        )

    def failing(tx: Tx) -> None:
        fill(tx, "b")
        raise RequestInvalid("refused after writing")

    def temporary_files() -> list[str]:
        names = []
        for fd in os.listdir("/proc/self/fd"):
            try:
                names.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:
                continue
        return [n for n in names if "etilqs" in n]

    try:
        store.transact_sync(lambda tx: tx.conn.execute("CREATE TABLE t (k TEXT UNIQUE, v TEXT)"))
        first = store.submit(blocker)
        assert started.wait(10)
        ok = store.submit(lambda tx: fill(tx, "a"))  # these three share one batch
        bad = store.submit(failing)
        seen: list[list[str]] = []  # temporary files open while a unit's savepoint is live

        def third(tx: Tx) -> None:
            fill(tx, "c")
            tx.conn.execute("UPDATE t SET v=upper(v) WHERE k LIKE 'a%'")  # pages of before
            seen.append(temporary_files())

        after = store.submit(third)
        gate.set()
        first.result(10)
        ok.result(10)
        after.result(10)
        try:
            bad.result(10)
            raise AssertionError("the failing unit succeeded")
        except RequestInvalid:
            pass
        keys = store.transact_sync(
            lambda tx: {r[0][0] for r in tx.conn.execute("SELECT k FROM t").fetchall()}
        )
        assert keys == {"a", "c"}
        count = store.transact_sync(lambda tx: tx.conn.execute("SELECT count(*) FROM t").fetchone())
        assert count[0] == 800
        assert seen == [[]]
    finally:
        gate.set()
        store.close()
