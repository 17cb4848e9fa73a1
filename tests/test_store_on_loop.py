"""Quick units of work on SQLite run on the event loop that asks for them (one batch per
loop turn), everything else in the writer thread; one batch at a time either way."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from wsemail.protocol.errors import RequestInvalid
from wsemail.server.store import SqliteStore, Tx


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "s.db")
    store.transact_sync(lambda tx: tx.conn.execute("CREATE TABLE t (k TEXT UNIQUE)"))
    return store


def _rows(store: SqliteStore) -> list[str]:
    return [
        r[0]
        for r in store.transact_sync(
            lambda tx: tx.conn.execute("SELECT k FROM t ORDER BY k").fetchall()
        )
    ]


def _insert(key: str):  # type: ignore[no-untyped-def]
    def work(tx: Tx) -> int:
        tx.conn.execute("INSERT INTO t VALUES (?)", (key,))
        return threading.get_ident()

    return work


def test_quick_units_of_one_turn_share_a_commit_on_the_loop_and_fail_alone(
    store: SqliteStore,
) -> None:
    def failing(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES ('bad')")
        raise RequestInvalid("refused after writing")

    async def main() -> list[object]:
        before = store.commits
        results = await asyncio.gather(
            *(store.transact(_insert(f"k{n}"), quick=True) for n in range(5)),
            store.transact(failing, quick=True),
            store.transact(_insert("k5"), quick=True),
            return_exceptions=True,
        )
        assert store.commits == before + 1  # one transaction, one fsync, for all seven
        return [*results, threading.get_ident()]

    try:
        *results, loop_thread = asyncio.run(main())
        assert isinstance(results[5], RequestInvalid)
        assert [r for i, r in enumerate(results) if i != 5] == [loop_thread] * 6  # on the loop
        assert _rows(store) == [f"k{n}" for n in range(6)]  # the failing unit undone alone
    finally:
        store.close()


def test_a_unit_not_quick_runs_in_the_writer_thread(store: SqliteStore) -> None:
    async def main() -> tuple[int, int]:
        return await store.transact(_insert("slow")), threading.get_ident()

    try:
        ran_in, loop_thread = asyncio.run(main())
        assert ran_in != loop_thread
        assert _rows(store) == ["slow"]
    finally:
        store.close()


def test_the_loop_does_not_wait_for_a_batch_of_the_writer_thread(store: SqliteStore) -> None:
    """While the writer thread is in a long batch, quick units wait without blocking the
    loop (its timers fire); the thread's end of the batch sends the loop back to them."""
    gate, started = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES ('long')")
        started.set()
        gate.wait(10)

    def after(tx: Tx) -> tuple[int, int]:
        tx.conn.execute("INSERT INTO t VALUES ('quick')")
        return threading.get_ident(), tx.conn.execute("SELECT count(*) FROM t").fetchone()[0]

    async def main() -> tuple[tuple[int, int], int, int]:
        long = store.submit(blocker)
        assert started.wait(10)
        quick = asyncio.ensure_future(store.transact(after, quick=True))
        ticks = 0
        for _ in range(5):  # the loop is not blocked by the writer thread's batch
            await asyncio.sleep(0.01)
            ticks += 1
        assert not quick.done()
        gate.set()
        answer = await asyncio.wait_for(quick, 10)
        long.result(10)
        return answer, ticks, threading.get_ident()

    try:
        (ran_in, seen), ticks, loop_thread = asyncio.run(main())
        assert ticks == 5
        assert (ran_in, seen) == (loop_thread, 2)  # on the loop, after the long batch
        assert _rows(store) == ["long", "quick"]
    finally:
        gate.set()
        store.close()


def test_a_quick_unit_that_needs_the_store_again_joins_its_own_transaction(
    store: SqliteStore,
) -> None:
    def outer(tx: Tx) -> int:
        tx.conn.execute("INSERT INTO t VALUES ('outer')")
        return store.transact_sync(
            lambda inner: inner.conn.execute("SELECT count(*) FROM t").fetchone()[0]
        )

    async def main() -> int:
        return await asyncio.wait_for(store.transact(outer, quick=True), 10)

    try:
        assert asyncio.run(main()) == 1  # it saw its own row: the same transaction
        assert _rows(store) == ["outer"]
    finally:
        store.close()


def test_a_cancelled_quick_caller_is_skipped_and_the_others_commit(store: SqliteStore) -> None:
    async def main() -> None:
        kept = asyncio.ensure_future(store.transact(_insert("kept"), quick=True))
        given_up = asyncio.ensure_future(store.transact(_insert("given-up"), quick=True))
        await asyncio.sleep(0)  # both queued for the loop's turn
        given_up.cancel()
        await kept
        with pytest.raises(asyncio.CancelledError):
            await given_up

    try:
        asyncio.run(main())
        assert _rows(store) == ["kept"]
    finally:
        store.close()


def test_close_ends_the_writer_thread_and_the_connection_after_units_on_both(
    store: SqliteStore,
) -> None:
    async def main() -> None:
        await store.transact(_insert("a"), quick=True)
        await store.transact(_insert("b"))

    asyncio.run(main())
    writer = store._thread  # noqa: SLF001
    assert writer is not None and writer.is_alive()
    store.close()
    assert not writer.is_alive()
    assert store._conn is None  # noqa: SLF001 -- the one connection both used is closed


def test_a_loop_whose_units_found_another_loops_batch_running_is_sent_back_to_them(
    store: SqliteStore,
) -> None:
    """Two event loops (threads) with quick units: the one that finds the other's batch
    running waits without blocking, and is woken when that batch is done."""
    gate, started = threading.Event(), threading.Event()

    def blocker(tx: Tx) -> None:
        tx.conn.execute("INSERT INTO t VALUES ('first')")
        started.set()
        gate.wait(10)

    other = threading.Thread(target=lambda: asyncio.run(store.transact(blocker, quick=True)))
    other.start()

    async def main() -> None:
        assert started.wait(10)
        mine = asyncio.ensure_future(store.transact(_insert("second"), quick=True))
        await asyncio.sleep(0.05)
        assert not mine.done()  # the other loop's batch holds the store
        gate.set()
        await asyncio.wait_for(mine, 10)

    try:
        asyncio.run(main())
        other.join(10)
        assert _rows(store) == ["first", "second"]
    finally:
        gate.set()
        store.close()


def test_a_loop_does_not_sleep_in_the_lock_another_process_holds(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Another process writing (a `wsemail user` command while the server runs): the loop's
    batch goes to the writer thread, which waits for the lock; the loop goes on serving."""
    import sqlite3

    other = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES ('other')")

    async def main() -> tuple[int, int, int]:
        quick = asyncio.ensure_future(store.transact(_insert("mine"), quick=True))
        ticks = 0
        for _ in range(5):  # the loop is not blocked by the other process's lock
            await asyncio.sleep(0.01)
            ticks += 1
        assert not quick.done()
        other.execute("COMMIT")
        return await asyncio.wait_for(quick, 10), ticks, threading.get_ident()

    try:
        ran_in, ticks, loop_thread = asyncio.run(main())
        assert ticks == 5 and ran_in != loop_thread  # it waited in the writer thread
        assert _rows(store) == ["mine", "other"]

        async def again() -> int:  # and the next quick unit is back on the loop
            return await store.transact(_insert("next"), quick=True)

        assert asyncio.run(again()) == threading.get_ident()
    finally:
        other.close()
        store.close()


def test_the_minutely_sweep_runs_when_every_unit_is_quick(tmp_path: Path) -> None:
    now = [1000.0]
    store = SqliteStore(tmp_path / "s.db", clock=lambda: now[0])

    def nonces(tx: Tx) -> int:
        return int(tx.conn.execute("SELECT count(*) FROM nonces").fetchone()[0])

    try:
        store.transact_sync(lambda tx: tx.remember_nonce("a@x.test", "n1", 500))  # until 1500
        now[0] = 2000.0  # a minute later: the sweep is due, the nonce expired

        async def main() -> tuple[int, int]:
            return await store.transact(lambda tx: threading.get_ident(), quick=True), (
                threading.get_ident()
            )

        ran_in, loop_thread = asyncio.run(main())
        assert ran_in == loop_thread  # the request's unit on the loop
        assert store.transact_sync(nonces) == 0  # swept, in the writer thread (queued first)
    finally:
        store.close()


def test_a_store_that_cannot_be_opened_answers_its_callers(tmp_path: Path) -> None:
    """The database file gone and a directory in its place: every caller, on a loop or in
    a thread, gets StoreError at once (no unit hangs, no callback dies on the loop); once
    the file can be opened again the store serves."""
    import shutil

    from wsemail.protocol.errors import StoreError

    path = tmp_path / "s.db"
    store = SqliteStore(path)
    store.close()  # the connection goes; the next batch opens it again
    saved = tmp_path / "saved.db"
    shutil.move(path, saved)
    path.mkdir()

    async def main() -> list[object]:
        return await asyncio.wait_for(
            asyncio.gather(
                store.transact(lambda tx: 1, quick=True),
                store.transact(lambda tx: 2),
                return_exceptions=True,
            ),
            10,
        )

    try:
        answers = asyncio.run(main())
        assert all(isinstance(a, StoreError) for a in answers), answers
        path.rmdir()
        shutil.move(saved, path)
        assert asyncio.run(asyncio.wait_for(store.transact(lambda tx: 3, quick=True), 10)) == 3
    finally:
        store.close()
