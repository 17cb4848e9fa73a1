"""Every SQL string of the filters feature (component `filters`): each user's Sieve script,
vacation settings, and whom the vacation responder answered when. Every function runs
inside a transaction."""

from __future__ import annotations

from dataclasses import dataclass

from wsemail.server.sql import POSTGRESQL, SQLITE
from wsemail.server.store import Tx

COMPONENT = "filters"
SQLITE_MIGRATIONS = [
    """
    CREATE TABLE sieve_scripts(
        owner TEXT PRIMARY KEY,
        script TEXT NOT NULL,
        updated REAL NOT NULL
    );
    CREATE TABLE vacations(
        owner TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        until REAL,
        days INTEGER NOT NULL
    );
    CREATE TABLE vacation_replies(
        owner TEXT NOT NULL,
        sender TEXT NOT NULL,
        at REAL NOT NULL,
        PRIMARY KEY(owner, sender)
    )
    """,
]
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE sieve_scripts(
        owner TEXT PRIMARY KEY,
        script TEXT NOT NULL,
        updated DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE vacations(
        owner TEXT PRIMARY KEY,
        subject TEXT NOT NULL,
        body TEXT NOT NULL,
        until DOUBLE PRECISION,
        days BIGINT NOT NULL
    );
    CREATE TABLE vacation_replies(
        owner TEXT NOT NULL,
        sender TEXT NOT NULL,
        at DOUBLE PRECISION NOT NULL,
        PRIMARY KEY(owner, sender)
    )
    """,
]
MIGRATIONS = {SQLITE: SQLITE_MIGRATIONS, POSTGRESQL: POSTGRESQL_MIGRATIONS}


@dataclass(frozen=True)
class Vacation:
    subject: str
    body: str
    until: float | None  # epoch seconds; None: until turned off
    days: int


def script(tx: Tx, owner: str) -> str | None:
    row = tx.conn.execute("SELECT script FROM sieve_scripts WHERE owner=?", (owner,)).fetchone()
    return str(row[0]) if row else None


def put_script(tx: Tx, owner: str, text: str) -> None:
    tx.conn.execute(
        "INSERT INTO sieve_scripts(owner, script, updated) VALUES (?,?,?) "
        "ON CONFLICT(owner) DO UPDATE SET script=excluded.script, updated=excluded.updated",
        (owner, text, tx.now),
    )


def remove_script(tx: Tx, owner: str) -> bool:
    return tx.conn.execute("DELETE FROM sieve_scripts WHERE owner=?", (owner,)).rowcount > 0


def vacation(tx: Tx, owner: str) -> Vacation | None:
    row = tx.conn.execute(
        "SELECT subject, body, until, days FROM vacations WHERE owner=?", (owner,)
    ).fetchone()
    return Vacation(row[0], row[1], row[2], int(row[3])) if row else None


def at_delivery(tx: Tx, owner: str) -> tuple[str | None, Vacation | None]:
    """`owner`'s Sieve script and vacation settings, in one statement (a delivery reads
    both for every recipient)."""
    row = tx.conn.execute(
        "SELECT s.script, v.subject, v.body, v.until, v.days "
        "FROM (SELECT CAST(? AS TEXT) AS who) w "
        "LEFT JOIN sieve_scripts s ON s.owner=w.who LEFT JOIN vacations v ON v.owner=w.who",
        (owner,),
    ).fetchone()
    away = Vacation(row[1], row[2], row[3], int(row[4])) if row[4] is not None else None
    return (None if row[0] is None else str(row[0])), away


def put_vacation(tx: Tx, owner: str, settings: Vacation) -> None:
    """Turn the responder on (again): whom it answered before is forgotten."""
    tx.conn.execute(
        "INSERT INTO vacations(owner, subject, body, until, days) VALUES (?,?,?,?,?) "
        "ON CONFLICT(owner) DO UPDATE SET subject=excluded.subject, body=excluded.body, "
        "until=excluded.until, days=excluded.days",
        (owner, settings.subject, settings.body, settings.until, settings.days),
    )
    tx.conn.execute("DELETE FROM vacation_replies WHERE owner=?", (owner,))


def remove_vacation(tx: Tx, owner: str) -> bool:
    tx.conn.execute("DELETE FROM vacation_replies WHERE owner=?", (owner,))
    return tx.conn.execute("DELETE FROM vacations WHERE owner=?", (owner,)).rowcount > 0


def replied_at(tx: Tx, owner: str, sender: str) -> float | None:
    row = tx.conn.execute(
        "SELECT at FROM vacation_replies WHERE owner=? AND sender=?", (owner, sender.lower())
    ).fetchone()
    return float(row[0]) if row else None


def note_reply(tx: Tx, owner: str, sender: str, at: float) -> None:
    tx.conn.execute(
        "INSERT INTO vacation_replies(owner, sender, at) VALUES (?,?,?) "
        "ON CONFLICT(owner, sender) DO UPDATE SET at=excluded.at",
        (owner, sender.lower(), at),
    )
