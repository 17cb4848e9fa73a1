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
