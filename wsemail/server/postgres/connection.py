"""A psycopg connection that takes the records modules' SQL as SQLite's sqlite3 does:
`execute(sql, params)` with `?` placeholders, `executemany`, `in_transaction`, and cursors
with fetchone/fetchall/rowcount. Only the placeholders are rewritten (outside quoted
strings, `?` becomes `%s` and `%` becomes `%%`); everything else a statement says must be
SQL that PostgreSQL takes (wsemail.server.sql)."""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg import pq


@functools.lru_cache(maxsize=2048)
def placeholders(sql: str) -> str:
    """`sql` with psycopg's placeholders for sqlite3's."""
    out: list[str] = []
    quote = ""
    for char in sql:
        if quote:
            if char == quote:
                quote = ""
            out.append("%%" if char == "%" else char)
        elif char in "'\"":
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class PgConnection:
    """One autocommit psycopg connection; the store issues BEGIN/SAVEPOINT/COMMIT itself."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        self.raw = conn

    @classmethod
    def open(cls, url: str, *, timeout: float = 5.0) -> PgConnection:
        conn = psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)))
        return cls(conn)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> psycopg.Cursor[Any]:
        if params is None:
            return self.raw.execute(sql.encode())  # no parameters: taken as written
        return self.raw.execute(placeholders(sql), list(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cursor = self.raw.cursor()
        cursor.executemany(placeholders(sql), [list(r) for r in rows])
        return cursor

    @property
    def in_transaction(self) -> bool:
        status = self.raw.info.transaction_status
        return status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR)

    @property
    def broken(self) -> bool:
        return self.raw.closed or self.raw.broken

    def close(self) -> None:
        self.raw.close()
