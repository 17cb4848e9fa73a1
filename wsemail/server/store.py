"""In charge of durable state: the SQLite store, the embedded default of the `store` role.

`SqliteStore` opens the data dir's SQLite file (WAL, synchronous=FULL: an answer is sent
only after its commit reached the disk) and migrates it (`schema.py`, counted by `PRAGMA
user_version`). How units of work are batched, committed and answered is `batches.py`'s
(`BatchStore`, shared with the PostgreSQL store): on SQLite a request's unit runs on the
event loop that serves it, with the other units its loop turn gathered; anything else in the
writer thread. What a unit reads and writes through is `tx.py`'s `Tx`. The names other
modules import from here (`Tx`, `BatchStore`, the records) are re-exported.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from wsemail.protocol.errors import StorageFull, StoreError, WsemailError
from wsemail.server.batches import BatchStore
from wsemail.server.schema import FTS_FLUSH, MIGRATIONS
from wsemail.server.sql import statements
from wsemail.server.storage import (
    FULL_REASON,
    check_database,
    checkpoint_pages,
    explain,
    is_full,
)
from wsemail.server.tx import (
    HEADER_COLUMNS,
    MESSAGE_COLUMNS,
    QueueRow,
    Tx,
    UserRecord,
    header,
    message,
    new_public_id,
)

__all__ = [
    "HEADER_COLUMNS",
    "MESSAGE_COLUMNS",
    "MIGRATIONS",
    "BatchStore",
    "QueueRow",
    "SqliteStore",
    "Tx",
    "UserRecord",
    "connect",
    "header",
    "message",
    "migrate",
    "new_public_id",
    "statements",
]

log = logging.getLogger("wsemail.store")
# how long a statement waits for another process's write lock (the writer thread's batches)
BUSY_TIMEOUT_MS = 10_000


def connect(path: Path) -> sqlite3.Connection:
    """Open the database with the pragmas every connection needs."""
    try:
        conn = sqlite3.connect(
            path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StoreError(explain(exc, f"cannot open database {path}: {exc}", path)) from exc
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    """Apply the migrations this database has not seen yet, in order."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements(script):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


class SqliteStore(BatchStore):
    """The embedded default store: one SQLite file in WAL mode, group-committed writes
    (synchronous=FULL: an answer is sent only after the commit reached the disk)."""

    name = "sqlite-store"
    finishing = FTS_FLUSH  # the batch's full-text entries (schema.py, migration 10)
    runs_on_loop = True

    def __init__(
        self, path: Path | str, *, batch_max: int = 256, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(batch_max=batch_max, clock=clock)
        self.path = Path(path)
        check_database(self.path, len(MIGRATIONS))
        conn = connect(self.path)
        try:
            migrate(conn)
        except sqlite3.Error as exc:
            message = f"cannot migrate {self.path}: {exc}"
            raise StoreError(explain(exc, message, self.path)) from exc
        finally:
            conn.close()

    def _open(self) -> sqlite3.Connection:
        conn = connect(self.path)
        # each unit of work runs in a savepoint, so SQLite keeps the first-modified pages of
        # a unit in a sub-journal to roll it back to; held in memory, not in a temporary file
        # (a unit touches ~30 pages; on a file that was two-thirds of the writes per send)
        conn.execute("PRAGMA temp_store=MEMORY")
        if self.space is not None and self.space.size > 0:  # reads go on in the reserve
            page_size = conn.execute("PRAGMA page_size").fetchone()[0]
            pages = checkpoint_pages(self.space.size, page_size)
            conn.execute(f"PRAGMA wal_autocheckpoint={pages}")
        return conn

    def _begin(self, conn: sqlite3.Connection) -> None:
        if conn.in_transaction:  # begun by `_claim`
            self._control(conn, "SAVEPOINT unit")
        else:
            self._control(conn, "BEGIN IMMEDIATE", "SAVEPOINT unit")

    def _claim(self, conn: sqlite3.Connection) -> bool:
        # the write lock without the busy handler: a loop must not sleep in it while
        # another process (a `wsemail user` command, say) writes
        try:
            conn.execute("PRAGMA busy_timeout=0")
            try:
                conn.execute("BEGIN IMMEDIATE")
            finally:
                conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        except sqlite3.Error:
            return False
        return True

    def _tx(self, conn: sqlite3.Connection, now: float) -> Tx:
        full = self.space is not None and self.space.still_full()
        return Tx(conn, now, full=full, lasting=self._lasting)

    def _failed(self, what: str, exc: BaseException) -> WsemailError:
        """The error a failed unit or commit answers: StorageFull (one log line, and full
        mode) when the disk is full, else a StoreError with the traceback logged."""
        if is_full(exc):
            if self.space is not None:
                self.space.disk_full()
            else:
                log.error("%s: %s is full", what, self.path.parent)
            return StorageFull(FULL_REASON)
        return super()._failed(what, exc)
