"""Every SQL string of the mailbox feature. The tables (folders, the flag and Trash columns
of messages, messages_fts and its triggers) come from store.py's migration 6."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import SYSTEM_FOLDERS, MessageHeader
from wsemail.server.mailbox.names import TRASH, system_folder
from wsemail.server.mailbox.query import Query
from wsemail.server.store import HEADER_COLUMNS, Tx, header

_CHUNK = 500  # ids per IN (...) list, under SQLite's parameter limit
_M_COLUMNS = ", ".join(f"m.{c.strip()}" for c in HEADER_COLUMNS.split(","))
FLAG_COLUMNS = ("seen", "flagged", "answered")


@dataclass(frozen=True)
class FolderInfo:
    name: str
    total: int
    unread: int
    system: bool


# folders ------------------------------------------------------------------------------
def resolve(tx: Tx, owner: str, name: str) -> str | None:
    """The folder `name` means for `owner` (any case), as stored; None if there is none."""
    found = system_folder(name)
    if found is not None:
        return found
    row = tx.conn.execute(
        "SELECT name FROM folders WHERE owner=? AND name=?", (owner, name)
    ).fetchone()
    return str(row[0]) if row else None


def folders(tx: Tx, owner: str) -> list[FolderInfo]:
    counts = {
        r[0]: (int(r[1]), int(r[2] or 0))
        for r in tx.conn.execute(
            "SELECT folder, count(*), sum(seen=0) FROM messages WHERE owner=? GROUP BY folder",
            (owner,),
        )
    }
    own = [
        r[0]
        for r in tx.conn.execute(
            "SELECT name FROM folders WHERE owner=? ORDER BY name COLLATE NOCASE", (owner,)
        )
    ]
    return [
        FolderInfo(name, *counts.get(name, (0, 0)), system=name in SYSTEM_FOLDERS)
        for name in [*SYSTEM_FOLDERS, *own]
    ]


def create_folder(tx: Tx, owner: str, name: str) -> None:
    tx.conn.execute(
        "INSERT INTO folders(owner, name, created) VALUES (?,?,?)", (owner, name, tx.now)
    )


def rename_folder(tx: Tx, owner: str, old: str, new: str) -> None:
    tx.conn.execute("UPDATE folders SET name=? WHERE owner=? AND name=?", (new, owner, old))
    tx.conn.execute("UPDATE messages SET folder=? WHERE owner=? AND folder=?", (new, owner, old))


def count_in(tx: Tx, owner: str, folder: str) -> int:
    row = tx.conn.execute(
        "SELECT count(*) FROM messages WHERE owner=? AND folder=?", (owner, folder)
    ).fetchone()
    return int(row[0])


def delete_folder(tx: Tx, owner: str, name: str) -> None:
    tx.conn.execute("DELETE FROM folders WHERE owner=? AND name=?", (owner, name))


# messages -----------------------------------------------------------------------------
def _chunks(ids: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def missing(tx: Tx, owner: str, ids: list[str]) -> list[str]:
    """The ids among `ids` that are not `owner`'s messages (missing or someone else's)."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = tx.conn.execute(
            f"SELECT id FROM messages WHERE owner=? AND id IN ({marks})",  # noqa: S608
            (owner, *chunk),
        )
        found.update(r[0] for r in rows)
    return [i for i in ids if i not in found]


def move(tx: Tx, owner: str, ids: list[str], folder: str) -> int:
    """Move `ids` (all `owner`'s, checked) to `folder`; a copy entering Trash notes when."""
    moved = 0
    trashed_at = tx.now if folder == TRASH else None
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        moved += tx.conn.execute(
            "UPDATE messages SET folder=?, trashed_at=CASE WHEN folder=? THEN trashed_at "  # noqa: S608
            f"ELSE ? END WHERE owner=? AND id IN ({marks})",
            (folder, folder, trashed_at, owner, *chunk),
        ).rowcount
    return moved


def set_flags(tx: Tx, owner: str, ids: list[str], flags: dict[str, bool]) -> int:
    assert flags and set(flags) <= set(FLAG_COLUMNS)
    setting = ", ".join(f"{column}=?" for column in flags)
    changed = 0
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        changed += tx.conn.execute(
            f"UPDATE messages SET {setting} WHERE owner=? AND id IN ({marks})",  # noqa: S608
            (*(int(v) for v in flags.values()), owner, *chunk),
        ).rowcount
    return changed


def folder_of(tx: Tx, owner: str, public_id: str) -> str | None:
    row = tx.conn.execute(
        "SELECT folder FROM messages WHERE owner=? AND id=?", (owner, public_id)
    ).fetchone()
    return str(row[0]) if row else None


def sweep_trash(tx: Tx, cutoff: float, owner: str | None = None) -> int:
    """Delete for good what went to Trash before `cutoff` (one user's, or everyone's)."""
    sql = "DELETE FROM messages WHERE trashed_at<? AND folder=?"
    args: list[object] = [cutoff, TRASH]
    if owner is not None:
        sql += " AND owner=?"
        args.append(owner)
    return tx.conn.execute(sql, args).rowcount


# search -------------------------------------------------------------------------------
def search(
    tx: Tx, owner: str, query: Query, folder: str | None, limit: int, before: int | None
) -> list[tuple[int, MessageHeader]]:
    """Newest first: `owner`'s messages matching `query` in `folder` (None: every folder
    but Trash), below the cursor `before` (a seq)."""
    where = ["m.owner=?"]
    args: list[object] = [owner]
    where.append("m.folder=?" if folder is not None else "m.folder<>?")
    args.append(folder if folder is not None else TRASH)
    for column, wanted in query.flags.items():  # literals: the partial indexes apply
        where.append(f"m.{column}={int(wanted)}")
    if query.has_attachment:
        where.append("m.has_attachment=1")
    low, high = _date_bounds(tx, owner, query)
    if low is None or (high is not None and high < low):
        return []
    if query.before is not None:
        where.append("m.date<?")
        args.append(query.before)
    if query.after is not None:
        where.append("m.date>=?")
        args.append(query.after)
    if low > 0:
        where.append("m.seq>=?")
        args.append(low)
    if high is not None:
        before = high + 1 if before is None else min(before, high + 1)
    match = query.match
    if match is None:
        if before is not None:
            where.append("m.seq<?")
            args.append(before)
        sql = f"SELECT m.seq, {_M_COLUMNS} FROM messages m WHERE {' AND '.join(where)} "  # noqa: S608
        sql += "ORDER BY m.seq DESC LIMIT ?"
        rows: list[Any] = tx.conn.execute(sql, [*args, limit]).fetchall()
    else:
        rows = _newest_matches(tx, owner, match, " AND ".join(where), args, limit, before, low)
    return [(r[0], header(r[1:])) for r in rows]


def _newest_matches(
    tx: Tx,
    owner: str,
    match: str,
    where: str,
    args: list[object],
    limit: int,
    before: int | None,
    low: int,
) -> list[Any]:
    """The index drives, newest match first, each match checked against its row. The
    owner's own token (its `mailbox` column) is ANDed in, so FTS5 walks only the owner's
    matches however many other mailboxes share the word."""
    scoped = f'mailbox : "{owner.encode("utf-8").hex()}" AND ({match})'
    sql = (
        f"SELECT m.seq, {_M_COLUMNS} FROM messages_fts f CROSS JOIN messages m "  # noqa: S608
        "ON m.seq=f.rowid WHERE messages_fts MATCH ? AND f.rowid>=?"
    )
    fts_args: list[object] = [scoped, low]
    if before is not None:
        sql += " AND f.rowid<?"
        fts_args.append(before)
    sql += f" AND {where} ORDER BY f.rowid DESC LIMIT ?"
    try:
        return tx.conn.execute(sql, [*fts_args, *args, limit]).fetchall()
    except sqlite3.OperationalError as exc:  # the parser quotes every term: not expected
        if "fts5" not in str(exc):
            raise
        raise RequestInvalid("the search query cannot be run") from exc


def _date_bounds(tx: Tx, owner: str, query: Query) -> tuple[int | None, int | None]:
    """The seq range that can hold messages of the query's dates (None low: none can),
    read from the (owner, date) index; mail arrives roughly in date order, so the newest-
    first scan then starts and stops near the dates asked for instead of at the ends."""
    low, high = 0, None
    if query.after is not None:
        row = tx.conn.execute(
            "SELECT min(seq) FROM messages WHERE owner=? AND date>=?", (owner, query.after)
        ).fetchone()
        if row[0] is None:
            return None, None
        low = int(row[0])
    if query.before is not None:
        row = tx.conn.execute(
            "SELECT max(seq) FROM messages WHERE owner=? AND date<?", (owner, query.before)
        ).fetchone()
        if row[0] is None:
            return None, None
        high = int(row[0])
    return low, high


def sealed_count(tx: Tx, owner: str, folder: str | None) -> int:
    """How many of `owner`'s messages in the searched folders have encrypted bodies."""
    if folder is None:
        row = tx.conn.execute(
            "SELECT count(*) FROM messages WHERE owner=? AND sealed=1 AND folder<>?",
            (owner, TRASH),
        ).fetchone()
    else:
        row = tx.conn.execute(
            "SELECT count(*) FROM messages WHERE owner=? AND sealed=1 AND folder=?",
            (owner, folder),
        ).fetchone()
    return int(row[0])
