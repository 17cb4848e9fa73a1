"""Every SQL string of the mailbox feature. The tables (folders, the flag and Trash columns
of messages, messages_fts and its triggers) come from schema.py's migration 6 (since
migration 10 a copy's full-text entry is written at the end of its commit batch); the `draft`
and `imported` columns from migration 9; the conversation columns, thread_links and the
triggers that keep them from migration 8. On the PostgreSQL store the same tables come from
postgres/schema.py: folder names are compared through lower() (its unique index), and
search reads the GIN index `messages_text` (see `_pg_matches`) where SQLite reads FTS5."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import RequestInvalid, StorageFull
from wsemail.protocol.message import SYSTEM_FOLDERS, Message, MessageHeader, is_sealed_body
from wsemail.server.mailbox.names import DRAFTS, TRASH, system_folder
from wsemail.server.mailbox.query import Query
from wsemail.server.sql import POSTGRESQL
from wsemail.server.storage import FULL_REASON
from wsemail.server.store import (
    HEADER_COLUMNS,
    MESSAGE_COLUMNS,
    Tx,
    header,
    message,
    new_public_id,
)

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
    sql = "SELECT name FROM folders WHERE owner=? AND name=?"  # name: COLLATE NOCASE
    if tx.dialect == POSTGRESQL:
        sql = "SELECT name FROM folders WHERE owner=? AND lower(name)=lower(?)"
    row = tx.conn.execute(sql, (owner, name)).fetchone()
    return str(row[0]) if row else None


def folders(tx: Tx, owner: str) -> list[FolderInfo]:
    counts = {
        r[0]: (int(r[1]), int(r[2] or 0))
        for r in tx.conn.execute(
            "SELECT folder, count(*), sum(CASE WHEN seen=0 THEN 1 ELSE 0 END) FROM messages "
            "WHERE owner=? GROUP BY folder",
            (owner,),
        )
    }
    order = "lower(name), name" if tx.dialect == POSTGRESQL else "name COLLATE NOCASE"
    own = [
        r[0]
        for r in tx.conn.execute(
            f"SELECT name FROM folders WHERE owner=? ORDER BY {order}",  # noqa: S608
            (owner,),
        )
    ]
    return [
        FolderInfo(name, *counts.get(name, (0, 0)), system=name in SYSTEM_FOLDERS)
        for name in [*SYSTEM_FOLDERS, *own]
    ]


def create_folder(tx: Tx, owner: str, name: str) -> None:
    """Make `owner`'s folder `name` (checked free by `resolve` first; on a shared store
    another node may have made it since: then it is refused the same way)."""
    made = tx.conn.execute(
        "INSERT INTO folders(owner, name, created) VALUES (?,?,?) ON CONFLICT DO NOTHING",
        (owner, name, tx.now),
    ).rowcount
    if not made:
        raise RequestInvalid(f"a folder named {name!r} exists")


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
    """Delete for good what went to Trash before `cutoff` (one user's, or everyone's):
    through the index of trashed copies by time, so only the expired ones are read (on
    SQLite `+` keeps the planner off the owner's folder index, which read the owner's whole
    Trash at every delete)."""
    plain = "" if tx.dialect == POSTGRESQL else "+"
    sql = f"DELETE FROM messages WHERE trashed_at<? AND {plain}folder=?"  # noqa: S608
    args: list[object] = [cutoff, TRASH]
    if owner is not None:
        sql += f" AND {plain}owner=?"
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
    if match is not None and tx.dialect == POSTGRESQL:
        rows: list[Any] = _pg_matches(tx, query, where, args, limit, before)
    elif match is None:
        if before is not None:
            where.append("m.seq<?")
            args.append(before)
        sql = f"SELECT m.seq, {_M_COLUMNS} FROM messages m WHERE {' AND '.join(where)} "  # noqa: S608
        sql += "ORDER BY m.seq DESC LIMIT ?"
        rows = tx.conn.execute(sql, [*args, limit]).fetchall()
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


# the expression of postgres/schema.py's GIN index `messages_text` (written the same, so
# that the planner uses the index): subject, body unless sealed, sender, recipients
_PG_TEXT = (
    "to_tsvector('simple', m.subject || ' ' || CASE WHEN m.sealed=1 THEN '' ELSE m.body END "
    "|| ' ' || m.sender || ' ' || m.to_json || ' ' || m.cc_json)"
)
# an address column as the words FTS5's tokenizer sees in it, space-delimited
_PG_WORDS = "(' ' || regexp_replace(lower({}), '[^[:alnum:]]+', ' ', 'g') || ' ')"
_PG_COLUMNS = {"sender": "m.sender", "recipients": "m.to_json || ' ' || m.cc_json"}


def words_pattern(text: str) -> str:
    """A LIKE pattern finding the words of `text` in a row of _PG_WORDS, in order and next
    to each other (as an FTS5 phrase); it holds no LIKE wildcard of the user's."""
    words = "".join(c if c.isalnum() else " " for c in text.lower()).split()
    return "% " + " ".join(words) + " %"


def _pg_matches(
    tx: Tx, query: Query, where: list[str], args: list[object], limit: int, before: int | None
) -> list[Any]:
    """PostgreSQL: each word or phrase a phraseto_tsquery on the GIN index `messages_text`
    (subject: also on the subject alone); from: and to: the words of the address column, so
    that `from:alice` finds alice@a.test, whose address the text-search parser keeps as one
    word. Every piece of the user's text is a parameter."""
    where, args = list(where), list(args)
    for column, text in query.texts:
        if column in _PG_COLUMNS:
            where.append(f"{_PG_WORDS.format(_PG_COLUMNS[column])} LIKE ?")
            args.append(words_pattern(text))
            continue
        where.append(f"{_PG_TEXT} @@ phraseto_tsquery('simple', ?)")
        args.append(text)
        if column == "subject":
            where.append("to_tsvector('simple', m.subject) @@ phraseto_tsquery('simple', ?)")
            args.append(text)
    if before is not None:
        where.append("m.seq<?")
        args.append(before)
    sql = f"SELECT m.seq, {_M_COLUMNS} FROM messages m WHERE {' AND '.join(where)} "  # noqa: S608
    sql += "ORDER BY m.seq DESC LIMIT ?"
    return tx.conn.execute(sql, [*args, limit]).fetchall()


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
    if folder is None and tx.dialect == POSTGRESQL:  # no index hints: the planner picks
        row = tx.conn.execute(
            "SELECT count(*) FROM messages WHERE owner=? AND sealed=1 AND folder<>?",
            (owner, TRASH),
        ).fetchone()
    elif folder is None:  # named: the planner would walk every row of the owner instead
        row = tx.conn.execute(
            "SELECT count(*) FROM messages INDEXED BY messages_sealed "
            "WHERE owner=? AND sealed=1 AND folder<>?",
            (owner, TRASH),
        ).fetchone()
    else:
        row = tx.conn.execute(
            "SELECT count(*) FROM messages WHERE owner=? AND sealed=1 AND folder=?",
            (owner, folder),
        ).fetchone()
    return int(row[0])


# usage --------------------------------------------------------------------------------
def mailbox_bytes(tx: Tx, owner: str) -> int:
    """What `owner`'s messages take (subjects and bodies), every folder counted."""
    row = tx.conn.execute(
        "SELECT COALESCE(SUM(size), 0) FROM messages WHERE owner=?", (owner,)
    ).fetchone()
    return int(row[0])


# the owner's own rows: drafts and imported mail ------------------------------------------
@dataclass(frozen=True)
class NewRow:
    """A row the owner adds to their own mailbox (a draft, an imported message)."""

    folder: str
    arrival: str  # the idempotency key's folder: Drafts, or import:FOLDER
    message_id: str
    sender: str
    to: list[str]
    cc: list[str]
    subject: str
    date: str
    body: str
    seen: bool = True
    flagged: bool = False
    answered: bool = False
    origin: str | None = None
    record: bytes | None = None  # the provenance record (signed_xml column)
    draft: str | None = None  # a draft's JSON
    imported: float | None = None
    in_reply_to: str = ""  # its conversation (the insert trigger of migration 8 links it)
    references: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return len(self.body.encode()) + len(self.subject.encode())


def insert(tx: Tx, owner: str, row: NewRow) -> str:
    """Store `row` in `owner`'s mailbox; returns its public id. It did not arrive: it is
    written seen and its flag set after, so no new-mail event is raised for it (the `im`
    plug-in's trigger fires on copies inserted unread)."""
    if tx.full:
        raise StorageFull(FULL_REASON)
    public_id = new_public_id()
    tx.conn.execute(
        "INSERT INTO messages(id, owner, folder, message_id, sender, to_json, cc_json, "
        "subject, date, size, seen, body, origin, signed_xml, flagged, answered, sealed, "
        "arrival, draft, imported, in_reply_to, references_json) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
        (
            public_id,
            owner,
            row.folder,
            row.message_id,
            row.sender,
            json.dumps(row.to),
            json.dumps(row.cc),
            row.subject,
            row.date,
            row.size,
            1,
            row.body,
            row.origin,
            row.record,
            int(row.flagged),
            int(row.answered),
            int(is_sealed_body(row.body)),
            row.arrival,
            row.draft,
            row.imported,
            row.in_reply_to,
            json.dumps(row.references),
        ),
    )
    if not row.seen:
        tx.conn.execute("UPDATE messages SET seen=0 WHERE owner=? AND id=?", (owner, public_id))
    return public_id


_DRAFT_COLUMNS = "id, folder, message_id, to_json, cc_json, subject, body, date, size, draft"


def _draft(row: tuple[Any, ...]) -> tuple[str, SavedDraft]:
    """(folder, draft) of a row of _DRAFT_COLUMNS."""
    extra = json.loads(row[9] or "{}")
    return row[1], SavedDraft(
        to=json.loads(row[3]),
        cc=json.loads(row[4]),
        bcc=list(extra.get("bcc", [])),
        subject=row[5],
        body=row[6],
        attachments=list(extra.get("attachments", [])),
        instant=bool(extra.get("instant", False)),
        delete_if_undeliverable=bool(extra.get("delete_if_undeliverable", False)),
        id=row[0],
        message_id=row[2],
        saved=row[7],
        size=row[8],
        in_reply_to=extra.get("in_reply_to") or None,
        references=list(extra.get("references", [])),
    )


def draft_json(draft: SavedDraft) -> str:
    """What a draft keeps beyond the columns every message has."""
    extra: dict[str, object] = {"bcc": draft.bcc, "attachments": draft.attachments}
    if draft.instant:
        extra["instant"] = True
        extra["delete_if_undeliverable"] = draft.delete_if_undeliverable
    if draft.in_reply_to:
        extra["in_reply_to"] = draft.in_reply_to
    if draft.references:
        extra["references"] = draft.references
    return json.dumps(extra, sort_keys=True)


def mark_answered(tx: Tx, owner: str, message_id: str) -> int:
    """Mark answered (and seen) `owner`'s copies of the message `message_id` (not drafts):
    a reply sent from a draft answered it. Found by its id (SQLite: the copies' unique
    index begins with it) or through its conversation (PostgreSQL, indexed)."""
    if tx.dialect == POSTGRESQL:
        return tx.conn.execute(
            "UPDATE messages SET answered=1, seen=1 WHERE owner=? AND thread=("
            "SELECT thread FROM thread_links WHERE owner=? AND message_id=?) "
            "AND message_id=? AND draft IS NULL",
            (owner, owner, message_id, message_id),
        ).rowcount
    return tx.conn.execute(
        "UPDATE messages SET answered=1, seen=1 WHERE owner=? AND message_id=? AND draft IS NULL",
        (owner, message_id),
    ).rowcount


def draft(tx: Tx, owner: str, public_id: str) -> tuple[str, SavedDraft] | None:
    """(folder, draft): `owner`'s draft with this id (in Drafts, or in Trash), or None."""
    row = tx.conn.execute(
        f"SELECT {_DRAFT_COLUMNS} FROM messages WHERE owner=? AND id=? AND arrival=? "  # noqa: S608
        "AND draft IS NOT NULL",
        (owner, public_id, DRAFTS),
    ).fetchone()
    return _draft(row) if row else None


def draft_by_message_id(tx: Tx, owner: str, message_id: str) -> str | None:
    """The id of `owner`'s draft with this MessageId (a retried first save), or None."""
    row = tx.conn.execute(
        "SELECT id FROM messages WHERE owner=? AND arrival=? AND sender=? AND message_id=? "
        "AND draft IS NOT NULL",
        (owner, DRAFTS, owner, message_id),
    ).fetchone()
    return str(row[0]) if row else None


def replace_draft(tx: Tx, owner: str, public_id: str, new: SavedDraft, saved: str) -> None:
    """Put `new` in place of the draft `public_id` (back in Drafts if it was in Trash)."""
    if tx.full:
        raise StorageFull(FULL_REASON)
    size = len(new.body.encode()) + len(new.subject.encode())
    tx.conn.execute(
        "UPDATE messages SET folder=?, trashed_at=NULL, to_json=?, cc_json=?, subject=?, "
        "body=?, date=?, size=?, sealed=?, draft=? WHERE owner=? AND id=? AND arrival=?",
        (
            DRAFTS,
            json.dumps(new.to),
            json.dumps(new.cc),
            new.subject,
            new.body,
            saved,
            size,
            int(is_sealed_body(new.body)),
            draft_json(new),
            owner,
            public_id,
            DRAFTS,
        ),
    )


def drafts(tx: Tx, owner: str, limit: int, before: int | None) -> list[tuple[int, SavedDraft]]:
    """`owner`'s drafts in the Drafts folder, the most recently created first."""
    sql = (
        f"SELECT seq, {_DRAFT_COLUMNS} FROM messages WHERE owner=? AND folder=? "  # noqa: S608
        "AND arrival=? AND draft IS NOT NULL"
    )
    args: list[object] = [owner, DRAFTS, DRAFTS]
    if before is not None:
        sql += " AND seq<?"
        args.append(before)
    sql += " ORDER BY seq DESC LIMIT ?"
    rows = tx.conn.execute(sql, [*args, limit]).fetchall()
    return [(r[0], _draft(r[1:])[1]) for r in rows]


def sent_from_draft(tx: Tx, owner: str, public_id: str) -> str | None:
    """The MessageId of the copy sent from the draft `public_id` (it keeps the draft's id),
    or None: a retried SendDraft is answered with it."""
    row = tx.conn.execute(
        "SELECT message_id FROM messages WHERE owner=? AND id=? AND arrival='sent' "
        "AND draft IS NOT NULL",
        (owner, public_id),
    ).fetchone()
    return str(row[0]) if row else None


def adopt_draft(tx: Tx, owner: str, sent_id: str, draft_id: str, extra: str) -> None:
    """The sent copy of a draft (the draft's row deleted already) takes the draft's id and
    keeps its JSON, so a retried SendDraft finds it."""
    tx.conn.execute(
        "UPDATE messages SET id=?, draft=? WHERE owner=? AND id=?",
        (draft_id, extra, owner, sent_id),
    )


def drafts_among(tx: Tx, owner: str, ids: list[str]) -> set[str]:
    """Which of `ids` (all `owner`'s) are drafts."""
    found: set[str] = set()
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        rows = tx.conn.execute(
            f"SELECT id FROM messages WHERE owner=? AND arrival=? AND draft IS NOT NULL "  # noqa: S608
            f"AND id IN ({marks})",
            (owner, DRAFTS, *chunk),
        )
        found.update(r[0] for r in rows)
    return found


def imported_copy(tx: Tx, owner: str, arrival: str, message_id: str) -> str | None:
    """The id of a message imported into the same folder with this Message-ID, or None."""
    row = tx.conn.execute(
        "SELECT id FROM messages WHERE owner=? AND arrival=? AND message_id=? LIMIT 1",
        (owner, arrival, message_id),
    ).fetchone()
    return str(row[0]) if row else None


# conversations ------------------------------------------------------------------------
@dataclass(frozen=True)
class Conversation:
    """One conversation of a listing: how many copies it has in scope, how many unread,
    and the newest of them (oldest first)."""

    thread: int
    count: int
    unread: int
    headers: list[MessageHeader]


def _scope(trash: bool) -> str:
    """A conversation in Trash is read in Trash; anywhere else, everywhere but Trash."""
    return "folder=?" if trash else "folder<>?"


def newest_threads(
    tx: Tx, owner: str, folder: str, limit: int, before: int | None, unread_only: bool
) -> list[tuple[int, int]]:
    """(thread, cursor): `owner`'s conversations with a copy in `folder` (an unread one with
    `unread_only`), the one whose newest such copy is newest first, below the cursor
    `before` (a seq). Walking the folder newest first meets each conversation first at its
    newest copy there, so a page costs the copies walked, not the folder's size; on a later
    page, a conversation met again was listed before when it has a copy at or above the
    cursor (one probe of the (owner, folder, thread, seq) index)."""
    unread = " AND seen=0" if unread_only else ""
    walk = tx.conn.execute(
        f"SELECT thread, seq FROM messages WHERE owner=? AND folder=?{unread} AND seq<? "  # noqa: S608
        "ORDER BY seq DESC",
        (owner, folder, 2**62 if before is None else before),
    )
    found: list[tuple[int, int]] = []
    met: set[int] = set()
    while len(found) < limit:
        rows = walk.fetchmany(256)
        if not rows:
            break
        for thread, seq in rows:
            if thread in met:
                continue
            met.add(thread)
            if before is not None and _listed_before(tx, owner, folder, thread, before, unread):
                continue
            found.append((int(thread), int(seq)))
            if len(found) == limit:
                break
    walk.close()
    return found


def _listed_before(tx: Tx, owner: str, folder: str, thread: int, cursor: int, unread: str) -> bool:
    row = tx.conn.execute(
        f"SELECT 1 FROM messages WHERE owner=? AND folder=? AND thread=? AND seq>=?{unread} "  # noqa: S608
        "LIMIT 1",
        (owner, folder, thread, cursor),
    ).fetchone()
    return row is not None


def conversations(
    tx: Tx, owner: str, threads: list[int], trash: bool, per_thread: int
) -> dict[int, Conversation]:
    """For each of `threads`: its copies in scope (see `_scope`) counted, and the newest
    `per_thread` of their headers."""
    if not threads:
        return {}
    marks = ",".join("?" * len(threads))
    sql = (
        f"SELECT thread, total, unread, {HEADER_COLUMNS} FROM ("  # noqa: S608
        f"SELECT seq, thread, {HEADER_COLUMNS}, count(*) OVER whole AS total, "
        "sum(CASE WHEN seen=0 THEN 1 ELSE 0 END) OVER whole AS unread, "
        "row_number() OVER (PARTITION BY thread ORDER BY seq DESC) AS newest "
        f"FROM messages WHERE owner=? AND thread IN ({marks}) AND {_scope(trash)} "
        "WINDOW whole AS (PARTITION BY thread)) AS t WHERE newest<=? ORDER BY seq"
    )
    found: dict[int, Conversation] = {}
    for row in tx.conn.execute(sql, (owner, *threads, TRASH, per_thread)):
        thread = int(row[0])
        if thread not in found:
            found[thread] = Conversation(thread, int(row[1]), int(row[2] or 0), [])
        found[thread].headers.append(header(row[3:]))
    return found


def thread_of(tx: Tx, owner: str, public_id: str) -> tuple[int, str] | None:
    """(thread, folder) of one of `owner`'s copies; None if there is no such copy."""
    row = tx.conn.execute(
        "SELECT thread, folder FROM messages WHERE owner=? AND id=?", (owner, public_id)
    ).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def thread_messages(
    tx: Tx, owner: str, thread: int, trash: bool, after: int | None, limit: int
) -> list[tuple[int, Message]]:
    """A conversation's copies in scope, oldest first, after the cursor `after` (a seq)."""
    sql = (
        f"SELECT seq, {MESSAGE_COLUMNS} FROM messages "  # noqa: S608
        f"WHERE owner=? AND thread=? AND {_scope(trash)}"
    )
    args: list[object] = [owner, thread, TRASH]
    if after is not None:
        sql += " AND seq>?"
        args.append(after)
    sql += " ORDER BY seq LIMIT ?"
    args.append(limit)
    return [(int(r[0]), message(r[1:])) for r in tx.conn.execute(sql, args)]


def thread_size(tx: Tx, owner: str, thread: int, trash: bool) -> int:
    row = tx.conn.execute(
        f"SELECT count(*) FROM messages WHERE owner=? AND thread=? AND {_scope(trash)}",  # noqa: S608
        (owner, thread, TRASH),
    ).fetchone()
    return int(row[0])


def mark_seen(tx: Tx, owner: str, seqs: list[int]) -> None:
    for start in range(0, len(seqs), _CHUNK):
        chunk = seqs[start : start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        tx.conn.execute(
            f"UPDATE messages SET seen=1 WHERE owner=? AND seq IN ({marks}) AND seen=0",  # noqa: S608
            (owner, *chunk),
        )
