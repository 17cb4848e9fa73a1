"""Units of work, group-committed: `BatchStore`, what both stores share.

A unit of work is a function of a `Tx`. The units that arrive together run in one
transaction (one fsync), one batch at a time on one connection, each inside its own
SAVEPOINT, so one that fails is rolled back alone and the others still commit; a caller is
answered only after COMMIT returned. Quick units (`transact(quick=True)`) of a store that
`runs_on_loop` (SQLite) run on the event loop that asked, the units of one loop turn in one
batch; the rest in the writer thread (docs/ARCHITECTURE.md, "The two stores").
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from wsemail.protocol.errors import StoreError, WsemailError
from wsemail.server.sql import POSTGRESQL, SCHEMA_LOCK, SQLITE, pick, statements
from wsemail.server.storage import SpaceReserve
from wsemail.server.tx import Tx

log = logging.getLogger("wsemail.store")
# passes over an event loop's ready callbacks that a batch of quick units waits for more
# (BatchStore._turn)
GATHER_PASSES = 4
T = TypeVar("T")


class LoopAnswer:
    """The caller of a unit of work on an event loop (`BatchStore.transact`). A batch
    answers all of its callers on one loop at once after the commit (`answer`: directly on
    that loop, or one call into it from elsewhere), not one wake-up per unit. It has the
    parts of a concurrent.futures.Future a batch uses."""

    __slots__ = ("future", "loop", "taken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.taken = False

    def running(self) -> bool:
        return self.taken

    def set_running_or_notify_cancel(self) -> bool:
        """False when the caller gave up (its request was cancelled): skip the unit."""
        if self.future.cancelled():  # maybe read from the writer thread: one flag, no harm
            return False
        self.taken = True
        return True


_Waiter = concurrent.futures.Future[Any] | LoopAnswer
_Job = tuple[Callable[[Tx], Any], _Waiter]
_Outcome = tuple[_Waiter, Any, BaseException | None]


def answer(outcomes: list[_Outcome]) -> None:
    """Answer the callers of a batch: futures at once, loop callers one call per loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Outcome]] = {}
    for outcome in outcomes:
        waiter, result, error = outcome
        if isinstance(waiter, LoopAnswer):
            by_loop.setdefault(waiter.loop, []).append(outcome)
        elif error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    for loop, answers in by_loop.items():
        if loop is running:  # a batch run on its callers' loop
            _settle(answers)
            continue
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle, answers)


def _settle(answers: list[_Outcome]) -> None:
    """(On the callers' loop.) Set each answer its caller still waits for."""
    for waiter, result, error in answers:
        assert isinstance(waiter, LoopAnswer)
        if waiter.future.done():  # cancelled meanwhile
            continue
        if error is not None:
            waiter.future.set_exception(error)
        else:
            waiter.future.set_result(result)


class BatchStore:
    """What every store shares: units of work group-committed, one batch at a time, on the
    event loop that asked (quick units on a store that `runs_on_loop`) or in the writer
    thread (the rest).

    Units that arrive together share one transaction and one commit; each runs inside its
    own SAVEPOINT, so one that fails is rolled back alone and the others still commit. A
    subclass opens the connection (`_open`), says which errors are the database's
    (`db_errors`) and how it begins a transaction (`_begin`).
    """

    name = "store"
    dialect = SQLITE
    db_errors: tuple[type[BaseException], ...] = (sqlite3.Error,)
    # statements a batch runs after its last unit, before COMMIT (part of the transaction:
    # if one fails, the batch fails)
    finishing: tuple[str, ...] = ()
    # whether quick units may run on the loop that asks for them: for a store whose
    # statements take microseconds (SQLite), not one whose statements cross the network
    runs_on_loop = False

    def __init__(self, *, batch_max: int = 256, clock: Callable[[], float] = time.time) -> None:
        self.batch_max = batch_max
        self.clock = clock
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.commits = 0  # transactions committed, for the benchmark's figures
        # told how long each commit took (seconds from BEGIN to COMMIT) and how many units
        # it carried; set by the metrics (runs where the batch runs: keep it cheap)
        self.on_commit: Callable[[float, int], None] | None = None
        self._current: Tx | None = None  # the transaction a batch is in
        self._current_thread: int | None = None  # the thread running that batch
        # one batch at a time, on a loop or in the writer thread, on one connection
        self._batch_lock = threading.Lock()
        self._conn: Any = None
        self._connected = False
        self._last_sweep = 0.0
        self._on_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}  # quick units waiting
        self._lasting: set[str] = set()  # Tx.lasting
        # units that lost a conflict with another process, by how often (run again later)
        self._tries: dict[_Waiter, int] = {}
        # the data dir's reserve and full-disk mode (set by the server; None: no reserve)
        self.space: SpaceReserve | None = None
        # which process this is among the nodes and workers sharing a store (set by the
        # server: data dir and worker), for the outbound queue's leases
        self.node = ""

    # public ------------------------------------------------------------------------------
    def ensure_schema(self, component: str, migrations: dict[str, list[str]] | list[str]) -> None:
        """Apply a plug-in's own migrations (each a ;-separated script) that this database
        has not seen yet, in order, once. `migrations` is SQLite's list, or a list per
        dialect (wsemail.server.sql); a component without this store's dialect is refused
        (StoreError)."""
        mine = pick(self.dialect, migrations)
        if mine is None:
            raise StoreError(
                f"{component} does not run on the {self.dialect} store yet: "
                "leave it out of [plugins], or use the SQLite store"
            )

        def work(tx: Tx) -> None:
            if tx.dialect == POSTGRESQL:  # nodes starting at once: one migrates, others wait
                tx.conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
            row = tx.conn.execute(
                "SELECT version FROM components WHERE name=?", (component,)
            ).fetchone()
            version = row[0] if row else 0
            for number, script in enumerate(mine[version:], start=version + 1):
                for statement in self.statements(script):
                    tx.conn.execute(statement)
                tx.conn.execute(
                    "INSERT INTO components(name, version) VALUES (?,?) "
                    "ON CONFLICT(name) DO UPDATE SET version=excluded.version",
                    (component, number),
                )

        self.transact_sync(work)

    @staticmethod
    def statements(script: str) -> list[str]:
        return statements(script)

    async def transact(self, work: Callable[[Tx], T], *, quick: bool = False) -> T:
        """Run `work` in a transaction; resolves after it committed.

        A `quick` unit (a request's few statements) on a store that `runs_on_loop` runs on
        this event loop, in one transaction with the other quick units the loop gathered
        in the same turn: handing each unit to the writer thread and back cost two thread
        switches and the GIL passed between the threads at every statement (~20 % of the
        server's CPU per request, measured). The loop is busy while the batch runs (its
        statements and one fsync), so a unit that may take long is not quick: it runs in
        the writer thread. While a batch runs elsewhere (the writer thread, another loop)
        quick units wait for it without blocking their loop."""
        loop = asyncio.get_running_loop()
        waiter = LoopAnswer(loop)
        if quick and self.runs_on_loop:
            waiting = self._on_loop.setdefault(loop, [])
            waiting.append((work, waiter))
            if len(waiting) == 1:
                loop.call_soon(self._turn, loop, 1)
            return cast(T, await waiter.future)
        self._ensure_thread()
        self._jobs.put((work, waiter))
        return cast(T, await waiter.future)

    def _turn(self, loop: asyncio.AbstractEventLoop, seen: int, passes: int = 0) -> None:
        """(On `loop`.) Run the quick units the loop gathered once a pass over its ready
        callbacks added none (or after GATHER_PASSES passes: under a steady stream the
        first units would wait ever longer): the requests read in one turn reach their
        units a few callbacks apart, and one commit for all of them is what makes the
        batch pay."""
        waiting = self._on_loop.get(loop, [])
        if seen < len(waiting) < self.batch_max and passes < GATHER_PASSES:
            loop.call_soon(self._turn, loop, len(waiting), passes + 1)
            return
        if not waiting:
            return
        if not self._batch_lock.acquire(blocking=False):
            # a batch runs elsewhere (the writer thread: work from another thread, a long
            # unit; or another loop): this loop does not wait for it; whoever runs it calls
            # this again when done (`_wake_waiting`, after it let go of the lock)
            return
        try:
            self._on_loop.pop(loop, None)
            self._batch(waiting, on_loop=True)
        finally:
            self._batch_lock.release()
        if self._on_loop:  # other loops' units that found the lock taken
            self._wake_waiting(done=loop)

    def _wake_waiting(self, done: asyncio.AbstractEventLoop | None = None) -> None:
        """(After a batch, the lock let go.) Send each other loop with quick units waiting
        back to them; forget the units of a loop that closed (nobody waits for them)."""
        for loop in list(self._on_loop):
            if loop is done:
                continue
            if loop.is_closed():
                self._on_loop.pop(loop, None)
                continue
            with contextlib.suppress(RuntimeError):  # closed just now
                loop.call_soon_threadsafe(self._turn, loop, 0)

    def transact_sync(self, work: Callable[[Tx], T]) -> T:
        current = self._current
        if current is not None and self._current_thread == threading.get_ident():
            # a unit of work that needs the store again (a plug-in loaded at run time through
            # the admin extension creates its tables in `attach`): it is already in a
            # transaction, so `work` joins it; waiting for the writer thread would wait for
            # itself
            return work(current)
        return self.submit(work).result()

    def submit(self, work: Callable[[Tx], T]) -> concurrent.futures.Future[T]:
        self._ensure_thread()
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._jobs.put((work, future))
        return future

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None:
            self._jobs.put(None)
            thread.join()
        with self._batch_lock:
            conn, self._conn, self._connected = self._conn, None, False
            if conn is not None:
                conn.close()

    # what a subclass provides -----------------------------------------------------------
    def _open(self) -> Any:
        raise NotImplementedError

    def _begin(self, conn: Any) -> None:
        """Begin the batch's transaction and its first unit's savepoint."""
        self._control(conn, "BEGIN", "SAVEPOINT unit")

    def _claim(self, conn: Any) -> bool:
        """(On a loop, before its batch.) Begin the batch's transaction if that needs no
        waiting; False if another process holds the store (or it failed: the writer thread
        meets the error again and answers it)."""
        return True

    def _control(self, conn: Any, *statements: str) -> None:
        """Transaction control statements, in order (a subclass may send them at once)."""
        for statement in statements:
            conn.execute(statement)

    def _usable(self, conn: Any) -> Any:
        """The connection to run the next batch on (a subclass may reconnect)."""
        return conn

    def _tx(self, conn: Any, now: float) -> Tx:
        return Tx(conn, now, dialect=self.dialect, lasting=self._lasting)

    def _failed(self, what: str, exc: BaseException) -> WsemailError:
        log.exception(what)
        return StoreError(f"{what}: {exc}")

    def _retryable(self, exc: BaseException) -> bool:
        """A conflict with another process's transaction that running the unit again may
        not meet (a deadlock's victim, a serialization failure)."""
        return False

    # writer thread ----------------------------------------------------------------------
    def _ensure_thread(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="wsemail-store", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.batch_max:
                try:
                    item = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._jobs.put(None)
                    break
                batch.append(item)
            with self._batch_lock:
                self._batch(batch)
            if self._on_loop:  # quick units that found the lock taken
                self._wake_waiting()

    def _again(self, job: _Job) -> None:
        """Run a unit again in a later batch (in the writer thread)."""
        self._ensure_thread()
        self._jobs.put(job)

    def _batch(self, batch: list[_Job], *, on_loop: bool = False) -> None:
        """(Holding the batch lock, in the writer thread or on a loop.) Commit `batch`; once
        a minute the sweep of expired nonces goes first (in the writer thread). On a loop, a
        store another process holds (`_claim`) sends the batch to the writer thread, which
        waits for it."""
        now = self.clock()
        if now - self._last_sweep > 60:
            self._last_sweep = now
            sweep: _Job = (_sweep, concurrent.futures.Future())
            if on_loop:  # a minute's expired nonces: not on a loop (tens of ms at 1,000/s)
                self._again(sweep)
            else:
                batch.insert(0, sweep)
        try:
            if not self._connected:
                self._conn, self._connected = self._open(), True
            self._conn = self._usable(self._conn)
        except Exception as exc:  # the store cannot be opened: the callers get the error
            failed = self._failed("cannot open the store", exc)
            answer([(w, None, failed) for _, w in batch if w.set_running_or_notify_cancel()])
            return  # (not connected: the next batch tries again)
        if on_loop and not self._claim(self._conn):
            for job in batch:
                self._again(job)
            return
        self._current_thread = threading.get_ident()
        try:
            self._commit(self._conn, batch, now)
        finally:
            self._current_thread = None

    def _commit(self, conn: Any, batch: list[_Job], now: float) -> None:
        outcomes: list[_Outcome] = []
        began = time.perf_counter()
        try:
            if conn is None:  # the subclass could not connect: the whole batch fails
                raise TransactionLost(StoreError("the store is not reachable"))
            tx = self._current = self._tx(conn, now)
            opened = False  # BEGIN is sent with the first unit's SAVEPOINT
            learned: set[str] = set()  # Tx.learn of the units that did their work
            again: list[_Job] = []  # units that lost a conflict: run in the next batch
            for work, future in batch:
                if not (future.running() or future.set_running_or_notify_cancel()):
                    continue  # the caller gave up (request cancelled): do not do its work
                if opened:
                    self._control(conn, "RELEASE unit", "SAVEPOINT unit")
                else:
                    self._begin(conn)
                    opened = True
                tx.learned = set()
                try:
                    result = work(tx)
                except WsemailError as exc:  # an answer, not a bug
                    _undo_unit(conn, exc)
                    outcomes.append((future, None, exc))
                except self.db_errors as exc:
                    _undo_unit(conn, exc)
                    if self._retryable(exc) and self._tries.get(future, 0) < 2:
                        # another process's transaction waits for a lock an earlier unit
                        # of this batch holds: after this commit the unit meets none
                        self._tries[future] = self._tries.get(future, 0) + 1
                        again.append((work, future))
                        continue
                    outcomes.append((future, None, self._failed("unit of work failed", exc)))
                except Exception as exc:  # a plug-in's bug must not take the batch down
                    _undo_unit(conn, exc)
                    log.exception("unit of work failed")
                    outcomes.append((future, None, exc))
                else:
                    if not conn.in_transaction:  # it swallowed the error that ended it
                        raise TransactionLost(StoreError("a unit of work hid a database error"))
                    learned |= tx.learned
                    outcomes.append((future, result, None))
            self._current = None
            if not opened:  # every caller gave up: nothing was done
                if conn.in_transaction:  # begun by `_claim`
                    conn.execute("ROLLBACK")
                return
            self._control(conn, "RELEASE unit", *self.finishing, "COMMIT")
            self._lasting |= learned
            for job in again:
                self._again(job)
            self.commits += 1
            if self.on_commit is not None:
                try:
                    self.on_commit(time.perf_counter() - began, len(batch))
                except Exception:
                    log.exception("commit observer failed")
        except (*self.db_errors, TransactionLost) as exc:  # type: ignore[misc]
            self._current = None
            if conn is not None:
                with contextlib.suppress(*self.db_errors):
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
            cause = self._database_cause(exc)
            failed = self._failed("commit failed", cause)
            outcomes = []
            for work, future in batch:
                if not (future.running() or future.set_running_or_notify_cancel()):
                    continue
                if self._retryable(cause) and self._tries.get(future, 0) < 2:
                    self._tries[future] = self._tries.get(future, 0) + 1
                    self._again((work, future))  # the whole batch lost: run it again
                else:
                    outcomes.append((future, None, failed))
        for future, _, _ in outcomes:
            self._tries.pop(future, None)
        answer(outcomes)

    def _database_cause(self, exc: BaseException) -> BaseException:
        """The database error behind a lost transaction (through the causes a unit's own
        error carries), so that a full disk is still answered as StorageFull."""
        seen: BaseException | None = exc.cause if isinstance(exc, TransactionLost) else exc
        while seen is not None:
            if isinstance(seen, self.db_errors):
                return seen
            seen = seen.__cause__ or seen.__context__
        return exc.cause if isinstance(exc, TransactionLost) else exc


class TransactionLost(Exception):
    """The database itself rolled the batch's whole transaction back inside a unit of work
    (SQLite may on SQLITE_FULL, SQLITE_IOERR, SQLITE_BUSY or SQLITE_NOMEM; PostgreSQL when
    the connection is lost), undoing the units before it too: the batch fails as a whole,
    answered by what caused it."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__(str(cause))
        self.cause = cause


def _undo_unit(conn: Any, exc: BaseException) -> None:
    """Roll one failed unit back to its savepoint, or raise TransactionLost when the
    database already rolled back everything (there is no savepoint left, and the units
    before this one are gone as well: none of them may be answered as done)."""
    if not conn.in_transaction:
        raise TransactionLost(exc) from exc
    try:
        conn.execute("ROLLBACK TO unit")
    except Exception as lost:  # the connection itself is gone
        raise TransactionLost(exc) from lost


def _sweep(tx: Tx) -> None:
    tx.conn.execute("DELETE FROM nonces WHERE expires<?", (tx.now,))
