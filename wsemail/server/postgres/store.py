"""The PostgreSQL store (`[store] url = "postgresql://…"`, `wsemail serve --store URL`).

The same unit-of-work model as the SQLite store (wsemail/server/batches.py): one writer
connection per process runs the units that arrive together in one transaction, each in
its own SAVEPOINT, and answers only after COMMIT returned. Several processes (nodes of
one domain, workers on one machine) share the database: the replay cache, the
failed-login counters and the outbound queue's leases live in it, so a nonce accepted by
one node is refused by every other, and a queued message is relayed by one node only.

PostgreSQL unreachable: the batch in hand fails with the `Busy` fault (503) — nothing that
did not commit is acknowledged — and the next batch connects again, so the node serves
again as soon as the database is back, without a restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import psycopg

from wsemail.protocol.errors import ServerBusy, StoreError, StoreUnreachable, WsemailError
from wsemail.server.batches import BatchStore
from wsemail.server.postgres.connection import PgConnection
from wsemail.server.postgres.schema import MIGRATIONS
from wsemail.server.sql import POSTGRESQL, SCHEMA_LOCK
from wsemail.server.tx import Tx

log = logging.getLogger("wsemail.store")
UNREACHABLE = "the mail store (PostgreSQL) is not reachable: try again shortly"


def redacted(url: str) -> str:
    """`url` without its password, for messages and logs."""
    try:
        from psycopg.conninfo import conninfo_to_dict, make_conninfo

        parts = conninfo_to_dict(url)
    except psycopg.Error:
        return "the store URL"
    parts.pop("password", None)
    return make_conninfo(**{k: str(v) for k, v in parts.items() if v is not None})


class PostgresStore(BatchStore):
    """Mail and every plug-in's tables in one PostgreSQL database shared by several nodes."""

    name = "postgresql-store"
    dialect = POSTGRESQL
    db_errors = (psycopg.Error,)

    def __init__(
        self,
        url: str,
        *,
        batch_max: int = 256,
        clock: Callable[[], float] = time.time,
        connect_timeout: float = 5.0,
    ) -> None:
        super().__init__(batch_max=batch_max, clock=clock)
        self.url = url
        self.connect_timeout = connect_timeout
        self._broken_since = 0.0
        try:
            conn = PgConnection.open(url, timeout=connect_timeout)
        except psycopg.Error as exc:
            reason = " ".join(str(exc).split())[:200]
            raise StoreUnreachable(f"cannot open the store {redacted(url)}: {reason}") from exc
        try:
            migrate(conn)
        except psycopg.Error as exc:
            raise StoreError(f"cannot migrate the store {redacted(url)}: {exc}") from exc
        finally:
            conn.close()

    @staticmethod
    def statements(script: str) -> list[str]:
        return [script]  # taken whole (PL/pgSQL bodies hold ';' of their own)

    def _open(self) -> PgConnection | None:
        try:
            conn = PgConnection.open(self.url, timeout=self.connect_timeout)
        except psycopg.Error as exc:
            self._note_broken(exc)
            return None
        if self._broken_since:
            log.warning("the store is reachable again")
            self._broken_since = 0.0
        return conn

    def _usable(self, conn: Any) -> PgConnection | None:
        if conn is not None and not conn.broken:
            return conn  # type: ignore[no-any-return]
        if conn is not None:
            conn.close()
        return self._open()

    def _note_broken(self, exc: BaseException) -> None:
        if not self._broken_since:
            self._broken_since = time.monotonic()
            log.error("the store is not reachable: %s", " ".join(str(exc).split())[:200])

    def _control(self, conn: Any, *statements: str) -> None:
        conn.execute("; ".join(statements))  # one round trip (the simple query protocol)

    def shared_secret(self, proposed: bytes) -> bytes:
        """The domain's server secret (fake salts for unknown names, directory cursors),
        one for every node: the first node to ask stores `proposed` (its data dir's), every
        later one gets that. Nodes with secrets of their own would give different fake
        salts for the same unknown name, and so tell it apart from a real one."""

        def work(tx: Tx) -> bytes:
            tx.conn.execute(
                "INSERT INTO server_secret(one, secret) VALUES (1, ?) ON CONFLICT DO NOTHING",
                (proposed,),
            )
            return bytes(tx.conn.execute("SELECT secret FROM server_secret").fetchone()[0])

        return self.transact_sync(work)

    def _retryable(self, exc: BaseException) -> bool:
        return isinstance(
            exc, psycopg.errors.DeadlockDetected | psycopg.errors.SerializationFailure
        )

    def _tx(self, conn: Any, now: float) -> Tx:
        return Tx(conn, now, dialect=POSTGRESQL, lasting=self._lasting)

    def _failed(self, what: str, exc: BaseException) -> WsemailError:
        if self._retryable(exc):  # OperationalErrors too, but the database is there
            log.warning("%s: %s", what, " ".join(str(exc).split())[:200])
            return ServerBusy("the mail store is busy: try again")
        if isinstance(exc, psycopg.OperationalError) or (
            isinstance(exc, StoreError) and "not reachable" in str(exc)
        ):
            self._note_broken(exc)
            return ServerBusy(UNREACHABLE)
        return super()._failed(what, exc)


def migrate(conn: PgConnection) -> None:
    """Apply the core migrations this database has not seen yet, one node at a time."""
    conn.execute("BEGIN")
    try:
        conn.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS schema_version(version INTEGER NOT NULL)")
        row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
        version = int(row[0] or 0) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            conn.execute(script)
            conn.execute("INSERT INTO schema_version(version) VALUES (?)", (number,))
        conn.execute("COMMIT")
    except BaseException:
        if not conn.broken:
            conn.execute("ROLLBACK")
        raise
