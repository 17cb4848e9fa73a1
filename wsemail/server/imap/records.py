"""Every SQL string of the IMAP plug-in. Its own tables (component `imap`, no core
migration) keep what IMAP needs and the messages table has not:

    imap_folders  per (owner, folder): UIDVALIDITY and UIDNEXT. A row is never deleted,
                  so neither number ever goes back, even for a folder deleted and made again
    imap_uids     per (owner, folder, uid): the message (`seq` of messages) and the two
                  flags wsemail has no column for, \\Deleted and \\Draft

`sync` brings one folder's UIDs up to date with the messages table (whatever moved them:
SOAP, the TUI, another IMAP session): rows of messages that left the folder go, messages
new to it get the next UIDs in arrival order. Every function runs inside a transaction.

On the PostgreSQL store several nodes may sync one folder at once: `sync` takes the row
lock of the folder's imap_folders row first (SELECT ... FOR UPDATE), so UIDs are handed out
by one transaction at a time and the next one sees them (read committed).
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from wsemail.server.sql import POSTGRESQL
from wsemail.server.store import Tx

SQLITE_MIGRATIONS = [
    """
    CREATE TABLE imap_folders(
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        PRIMARY KEY(owner, name)
    ) WITHOUT ROWID;
    CREATE TABLE imap_uids(
        owner TEXT NOT NULL,
        folder TEXT NOT NULL,
        uid INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        draft INTEGER NOT NULL DEFAULT 0,
        rendered_size INTEGER,
        PRIMARY KEY(owner, folder, uid)
    ) WITHOUT ROWID;
    CREATE UNIQUE INDEX imap_uids_seq ON imap_uids(owner, folder, seq)
    """,
]
POSTGRESQL_MIGRATIONS = [
    """
    CREATE TABLE imap_folders(
        owner TEXT NOT NULL,
        name TEXT NOT NULL,
        uidvalidity BIGINT NOT NULL,
        uidnext BIGINT NOT NULL,
        PRIMARY KEY(owner, name)
    );
    CREATE TABLE imap_uids(
        owner TEXT NOT NULL,
        folder TEXT NOT NULL,
        uid BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        deleted INTEGER NOT NULL DEFAULT 0,
        draft INTEGER NOT NULL DEFAULT 0,
        rendered_size BIGINT,
        PRIMARY KEY(owner, folder, uid)
    );
    CREATE UNIQUE INDEX imap_uids_seq ON imap_uids(owner, folder, seq)
    """,
]
MIGRATIONS = {"sqlite": SQLITE_MIGRATIONS, "postgresql": POSTGRESQL_MIGRATIONS}

_CHUNK = 500
_COPY_COLUMNS = (
    "owner, folder, message_id, sender, to_json, cc_json, subject, date, size, seen, body, "
    "origin, signed_xml, instant, delete_if_undeliverable, flagged, answered, has_attachment, "
    "sealed"
)


@dataclass(frozen=True)
class Entry:
    """One message of a selected folder as IMAP sees it."""

    uid: int
    seq: int
    seen: bool
    flagged: bool
    answered: bool
    deleted: bool
    draft: bool


def bits_of(entry: Entry) -> int:
    return (
        entry.seen
        | entry.flagged << 1
        | entry.answered << 2
        | entry.deleted << 3
        | entry.draft << 4
    )


class Entries:
    """A folder's messages in UID order, kept compactly (a session holds one per selected
    folder: 13 bytes a message instead of an object each)."""

    __slots__ = ("bits", "seqs", "uids")

    def __init__(self) -> None:
        self.uids = array("I")  # UIDs are 32-bit
        self.seqs = array("q")
        self.bits = bytearray()

    def append(self, uid: int, seq: int, bits: int) -> None:
        self.uids.append(uid)
        self.seqs.append(seq)
        self.bits.append(bits)

    def __len__(self) -> int:
        return len(self.uids)

    def __getitem__(self, index: int) -> Entry:
        b = self.bits[index]
        return Entry(
            self.uids[index], self.seqs[index],
            bool(b & 1), bool(b & 2), bool(b & 4), bool(b & 8), bool(b & 16),
        )  # fmt: skip

    def __setitem__(self, index: int, entry: Entry) -> None:
        self.bits[index] = bits_of(entry)

    def __iter__(self) -> Iterator[Entry]:
        for index in range(len(self.uids)):
            yield self[index]


@dataclass(frozen=True)
class FolderState:
    uidvalidity: int
    uidnext: int
    entries: Entries
    fingerprint: tuple[object, ...]


def fingerprint(tx: Tx, owner: str, folder: str) -> tuple[object, ...]:
    """A cheap digest of the folder (its messages, their flags, its UIDs): when it is
    unchanged, nothing needs reporting and `sync` can be skipped."""
    total = "coalesce(sum({}), 0)" if tx.dialect == POSTGRESQL else "total({})"
    messages = tx.conn.execute(
        f"SELECT count(*), {total.format('seq * (1 + seen + 2*flagged + 4*answered)')} "  # noqa: S608
        "FROM messages WHERE owner=? AND folder=?",
        (owner, folder),
    ).fetchone()
    uids = tx.conn.execute(
        f"SELECT count(*), {total.format('seq * (1 + deleted + 2*draft)')}, max(uid) "  # noqa: S608
        "FROM imap_uids WHERE owner=? AND folder=?",
        (owner, folder),
    ).fetchone()
    return (*messages, *uids)


def _state(tx: Tx, owner: str, folder: str) -> tuple[int, int]:
    """(UIDVALIDITY, UIDNEXT) of the folder, made on first use; on PostgreSQL its row is
    locked until the transaction ends (another node's sync of the folder waits)."""
    sql = "SELECT uidvalidity, uidnext FROM imap_folders WHERE owner=? AND name=?"
    if tx.dialect == POSTGRESQL:
        sql += " FOR UPDATE"
    row = tx.conn.execute(sql, (owner, folder)).fetchone()
    if row is not None:
        return int(row[0]), int(row[1])
    last = tx.conn.execute(
        "SELECT max(uidvalidity) FROM imap_folders WHERE owner=?", (owner,)
    ).fetchone()[0]
    validity = max(int(time.time()), int(last or 0) + 1) & 0xFFFFFFFF or 1
    made = tx.conn.execute(
        "INSERT INTO imap_folders(owner, name, uidvalidity, uidnext) VALUES (?,?,?,1) "
        "ON CONFLICT DO NOTHING",
        (owner, folder, validity),
    ).rowcount
    if not made:  # another node made it meanwhile: take (and lock) its row
        row = tx.conn.execute(sql, (owner, folder)).fetchone()
        return int(row[0]), int(row[1])
    return validity, 1


def sync(
    tx: Tx, owner: str, folder: str, unless: tuple[object, ...] | None = None
) -> FolderState | None:
    """The folder's UIDs brought up to date, and its messages in UID order; None when its
    fingerprint is still `unless` (nothing changed since that sync)."""
    if unless is not None and fingerprint(tx, owner, folder) == unless:
        return None
    validity, uidnext = _state(tx, owner, folder)
    conn = tx.conn
    conn.execute(
        "DELETE FROM imap_uids WHERE owner=? AND folder=? AND NOT EXISTS (SELECT 1 FROM "
        "messages m WHERE m.seq=imap_uids.seq AND m.owner=? AND m.folder=?)",
        (owner, folder, owner, folder),
    )
    new = conn.execute(  # a wsemail draft (SaveDraft, the TUI) comes with \\Draft
        "SELECT seq, CASE WHEN draft IS NULL THEN 0 ELSE 1 END FROM messages m "
        "WHERE owner=? AND folder=? AND NOT "
        "EXISTS (SELECT 1 FROM imap_uids u WHERE u.owner=? AND u.folder=? AND u.seq=m.seq) "
        "ORDER BY seq",
        (owner, folder, owner, folder),
    ).fetchall()
    if new:
        conn.executemany(
            "INSERT INTO imap_uids(owner, folder, uid, seq, draft) VALUES (?,?,?,?,?)",
            [(owner, folder, uidnext + i, row[0], row[1]) for i, row in enumerate(new)],
        )
        uidnext += len(new)
        conn.execute(
            "UPDATE imap_folders SET uidnext=? WHERE owner=? AND name=?",
            (uidnext, owner, folder),
        )
    entries = Entries()
    for uid, seq, bits in conn.execute(
        "SELECT u.uid, u.seq, m.seen + 2*m.flagged + 4*m.answered + 8*u.deleted + 16*u.draft "
        "FROM imap_uids u JOIN messages m ON m.seq=u.seq "
        "WHERE u.owner=? AND u.folder=? ORDER BY u.uid",
        (owner, folder),
    ):
        entries.append(uid, seq, bits)
    return FolderState(validity, uidnext, entries, fingerprint(tx, owner, folder))


def synced(tx: Tx, owner: str, folder: str) -> FolderState:
    state = sync(tx, owner, folder)
    assert state is not None
    return state


def peek_state(tx: Tx, owner: str, folder: str) -> tuple[int, int, int, int]:
    """(messages, unseen, uidnext, uidvalidity) for STATUS, after a sync."""
    state = synced(tx, owner, folder)
    unseen = sum(1 for b in state.entries.bits if not b & 1)
    return len(state.entries), unseen, state.uidnext, state.uidvalidity


@dataclass(frozen=True)
class Row:
    """What FETCH and SEARCH read of one message."""

    seq: int
    public_id: str
    message_id: str
    sender: str
    to_json: str
    cc_json: str
    subject: str
    date: str
    size: int
    body: str
    origin: str | None
    signed_xml: bytes | None
    has_attachment: bool
    sealed: bool
    rendered_size: int | None


def _chunks(seqs: list[int]) -> Iterable[list[int]]:
    for start in range(0, len(seqs), _CHUNK):
        yield seqs[start : start + _CHUNK]


def rows(tx: Tx, owner: str, folder: str, seqs: list[int], *, body: bool) -> dict[int, Row]:
    """The messages `seqs` of `owner` (bodies only if asked), by seq."""
    found: dict[int, Row] = {}
    body_cols = "m.body, m.origin, m.signed_xml" if body else "'', m.origin, NULL"
    for chunk in _chunks(seqs):
        marks = ",".join("?" * len(chunk))
        sql = (
            "SELECT m.seq, m.id, m.message_id, m.sender, m.to_json, m.cc_json, m.subject, "  # noqa: S608
            f"m.date, m.size, {body_cols}, m.has_attachment, m.sealed, u.rendered_size "
            "FROM messages m LEFT JOIN imap_uids u ON u.seq=m.seq AND u.owner=m.owner "
            f"AND u.folder=? WHERE m.owner=? AND m.seq IN ({marks})"
        )
        for r in tx.conn.execute(sql, (folder, owner, *chunk)):
            found[r[0]] = Row(
                r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11],
                bool(r[12]), bool(r[13]), r[14],
            )  # fmt: skip
    return found


def remember_size(tx: Tx, owner: str, folder: str, sizes: dict[int, int]) -> None:
    tx.conn.executemany(
        "UPDATE imap_uids SET rendered_size=? WHERE owner=? AND folder=? AND seq=?",
        [(size, owner, folder, seq) for seq, size in sizes.items()],
    )


def set_flags(tx: Tx, owner: str, folder: str, seqs: list[int], flags: dict[str, bool]) -> None:
    """Core flags (seen, flagged, answered) on messages; deleted and draft on imap_uids."""
    core = {k: v for k, v in flags.items() if k in ("seen", "flagged", "answered")}
    own = {k: v for k, v in flags.items() if k in ("deleted", "draft")}
    for chunk in _chunks(seqs):
        marks = ",".join("?" * len(chunk))
        if core:
            setting = ", ".join(f"{c}=?" for c in core)
            tx.conn.execute(
                f"UPDATE messages SET {setting} WHERE owner=? AND seq IN ({marks})",  # noqa: S608
                (*(int(v) for v in core.values()), owner, *chunk),
            )
        if own:
            setting = ", ".join(f"{c}=?" for c in own)
            tx.conn.execute(
                f"UPDATE imap_uids SET {setting} WHERE owner=? AND folder=? "  # noqa: S608
                f"AND seq IN ({marks})",
                (*(int(v) for v in own.values()), owner, folder, *chunk),
            )


def public_ids(tx: Tx, owner: str, seqs: list[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in _chunks(seqs):
        marks = ",".join("?" * len(chunk))
        for r in tx.conn.execute(
            f"SELECT seq, id FROM messages WHERE owner=? AND seq IN ({marks})",  # noqa: S608
            (owner, *chunk),
        ):
            found[r[0]] = r[1]
    return found


def copy(
    tx: Tx, owner: str, seq: int, folder: str, public_id: str, trashed_at: float | None
) -> int:
    """A new mailbox copy of message `seq` in `folder` (a copy never counts as an arrival:
    its `arrival` is its own id, so delivery idempotency is not touched); its seq."""
    row = tx.conn.execute(
        f"INSERT INTO messages(id, arrival, trashed_at, {_COPY_COLUMNS}) SELECT ?, ?, ?, "  # noqa: S608
        f"{_COPY_COLUMNS.replace('folder', '?', 1)} FROM messages WHERE owner=? AND seq=? "
        "RETURNING seq",
        (public_id, "imap:" + public_id, trashed_at, folder, owner, seq),
    ).fetchone()
    return int(row[0])


def seq_of(tx: Tx, owner: str, public_id: str) -> int:
    row = tx.conn.execute(
        "SELECT seq FROM messages WHERE owner=? AND id=?", (owner, public_id)
    ).fetchone()
    return int(row[0])


def retire_draft(tx: Tx, owner: str, public_id: str) -> None:
    """An older version of a draft APPENDed again under its Message-ID stays a plain
    message in Drafts (its bytes never change under its UID) until the client deletes it;
    the newest version is the wsemail draft."""
    tx.conn.execute(
        "UPDATE messages SET arrival=?, draft=NULL WHERE owner=? AND id=?",
        ("imap:" + public_id, owner, public_id),
    )


def copy_in(tx: Tx, owner: str, folder: str, message_id: str, sender: str) -> int | None:
    """A message with this Message-ID and sender already in `folder` (its seq), if any."""
    row = tx.conn.execute(
        "SELECT seq FROM messages WHERE owner=? AND folder=? AND message_id=? AND sender=?",
        (owner, folder, message_id, sender),
    ).fetchone()
    return int(row[0]) if row else None


def uid_of(tx: Tx, owner: str, folder: str, seq: int) -> int | None:
    row = tx.conn.execute(
        "SELECT uid FROM imap_uids WHERE owner=? AND folder=? AND seq=?", (owner, folder, seq)
    ).fetchone()
    return int(row[0]) if row else None


def set_draft(tx: Tx, owner: str, folder: str, seq: int) -> None:
    tx.conn.execute(
        "UPDATE imap_uids SET draft=1 WHERE owner=? AND folder=? AND seq=?", (owner, folder, seq)
    )


def delete_for_good(tx: Tx, owner: str, seqs: list[int]) -> None:
    for chunk in _chunks(seqs):
        marks = ",".join("?" * len(chunk))
        tx.conn.execute(
            f"DELETE FROM messages WHERE owner=? AND seq IN ({marks})",  # noqa: S608
            (owner, *chunk),
        )
