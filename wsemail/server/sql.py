"""The SQL dialects the stores speak, for the records modules that hold a feature's SQL.

Each feature keeps all of its SQL in its records module. Most statements are written once
in the subset both engines take (`?` parameters, `ON CONFLICT ... DO NOTHING/UPDATE`,
`RETURNING`, `CASE`, `coalesce`); the PostgreSQL store's connection turns `?` into its own
placeholders. Where the engines differ (full-text search, JSON functions, sequences,
triggers, partial-index hints, schema migrations) a records module asks `tx.dialect` and
keeps both versions side by side.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
DIALECTS = (SQLITE, POSTGRESQL)
# pg_advisory_xact_lock key held while a schema is migrated: one node at a time
SCHEMA_LOCK = 0x77736D61
# PostgreSQL advisory lock taken at commit time by the deferred triggers that keep
# cross-row bookkeeping (new-mail event numbers, mailbox totals): one committing
# transaction at a time does it, so nodes' commits never wait on each other's rows in
# opposite orders (a deadlock, a 100 ms wait at least)
COMMIT_LOCK = 0x77736D6E


def pick(dialect: str, migrations: dict[str, list[str]] | list[str]) -> list[str] | None:
    """A component's migrations for `dialect`: a plain list is SQLite's alone (None for
    another dialect: that component does not run on it yet)."""
    if isinstance(migrations, list):
        return migrations if dialect == SQLITE else None
    return migrations.get(dialect)


class Cursor(Protocol):
    """What the records modules read from a statement (sqlite3's and psycopg's cursors)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...  # SQLite's alone (PostgreSQL: RETURNING)

    def fetchone(self) -> Any: ...

    def fetchmany(self, size: int = ..., /) -> list[Any]: ...

    def close(self) -> None: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """The calls a unit of work makes on its store's connection (sqlite3's, or the
    PostgreSQL store's PgConnection)."""

    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor: ...

    @property
    def in_transaction(self) -> bool: ...


def statements(script: str) -> list[str]:
    """The SQL statements of a migration script, split where SQLite itself says a statement
    is complete (`sqlite3.complete_statement`): a ';' inside a string literal, a comment or
    a trigger's BEGIN ... END body does not end one."""
    found: list[str] = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        while ";" in pending:
            # the shortest prefix ending at a ';' that SQLite takes as a whole statement
            cut = -1
            for index, char in enumerate(pending):
                if char == ";" and sqlite3.complete_statement(pending[: index + 1]):
                    cut = index + 1
                    break
            if cut < 0:
                break
            statement, pending = pending[:cut].strip(), pending[cut:]
            if statement.strip(";").strip():
                found.append(statement)
    if pending.strip():
        found.append(pending.strip())  # the last statement may go without its ';'
    return found
