"""In charge of durable state: the SQLite data-access plug-in (the `store` role).

Every request's effect, together with its replay-cache row, runs as one unit of work, one
batch at a time: on SQLite a request's unit runs on the event loop that serves it, with the
other units its loop turn gathered (`transact(quick=True)`); anything else, and every unit
of a PostgreSQL store, in the writer thread. Units that arrive together share one
transaction and one fsync (group commit, synchronous=FULL); each unit runs inside its own
SAVEPOINT, so one that fails is rolled back alone and the others still commit. An answer is
sent only after the commit returned: accepted means on disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

from wsemail.protocol.errors import StorageFull, StoreError, WsemailError
from wsemail.protocol.message import Message, MessageHeader, is_sealed_body, ordered_token
from wsemail.server.schema import FTS_FLUSH, MIGRATIONS
from wsemail.server.sql import POSTGRESQL, SCHEMA_LOCK, SQLITE, Connection, pick
from wsemail.server.storage import (
    FULL_REASON,
    SpaceReserve,
    check_database,
    checkpoint_pages,
    explain,
    is_full,
)

log = logging.getLogger("wsemail.store")
# passes over an event loop's ready callbacks that a batch of quick units waits for more
# (BatchStore._turn)
GATHER_PASSES = 4
# how long a statement waits for another process's write lock (the writer thread's batches)
BUSY_TIMEOUT_MS = 10_000
T = TypeVar("T")

HEADER_COLUMNS = (
    "id, message_id, folder, sender, to_json, cc_json, subject, date, size, seen, instant, "
    "delete_if_undeliverable, flagged, answered"
)


_INSERT_COLUMNS = (
    "id, owner, folder, message_id, sender, to_json, cc_json, subject, date, size, seen, body, "
    "origin, signed_xml, instant, delete_if_undeliverable, flagged, answered, has_attachment, "
    "sealed, arrival, in_reply_to, references_json, bcc_json"
)
_INSERT_MARKS = ",".join("?" * len(_INSERT_COLUMNS.split(",")))
# the same values typed for PostgreSQL's INSERT … SELECT (a parameter there is not typed by
# its column): size bigint, flags integer, signed_xml bytea, the rest text
_PG_TYPES = {"size": "bigint", "signed_xml": "bytea"} | {
    c: "integer"
    for c in (
        "seen",
        "instant",
        "delete_if_undeliverable",
        "flagged",
        "answered",
        "has_attachment",
        "sealed",
    )  # fmt: skip
}
_TYPED_MARKS = ",".join(
    f"?::{_PG_TYPES.get(c.strip(), 'text')}" for c in _INSERT_COLUMNS.split(",")
)


@dataclass(frozen=True, repr=False)
class UserRecord:
    address: str
    salt: bytes
    key: bytes
    admin: bool

    def __repr__(self) -> str:
        return f"UserRecord(address={self.address!r}, admin={self.admin})"


def new_public_id() -> str:
    """The id a stored copy is known by to its owner (and on the command line): 9 random
    bytes after the time it was made (`ordered_token`)."""
    return ordered_token(9)


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


class Tx:
    """The data-access operations available inside one unit of work."""

    def __init__(
        self,
        conn: Connection,
        now: float,
        *,
        full: bool = False,
        dialect: str = SQLITE,
        lasting: set[str] | None = None,
    ) -> None:
        self.conn = conn  # a sqlite3 connection, or the PostgreSQL store's (same calls)
        # facts about this database that stay true once committed (a component's tables
        # exist): the store's own set, so that each is read once per process, not per
        # request; what this unit of work learned joins it when the unit's work commits
        self.lasting = lasting if lasting is not None else set()
        self.learned: set[str] = set()
        self.now = now
        self.full = full  # the disk is full: no new mail (reads and deletes go on)
        # which SQL the records modules speak here: SQLITE or POSTGRESQL (wsemail.server.sql)
        self.dialect = dialect

    def known(self, fact: str) -> bool:
        return fact in self.lasting or fact in self.learned

    def learn(self, fact: str) -> None:
        """`fact` holds for good once this unit of work commits (`known` from then on)."""
        self.learned.add(fact)

    def _room_for_mail(self) -> None:
        if self.full:
            raise StorageFull(FULL_REASON)

    # replay cache -----------------------------------------------------------------------
    def remember_nonce(self, principal: str, nonce: str, keep_seconds: float) -> bool:
        """Insert (principal, nonce); False if it was already there (on a shared store:
        accepted by any node, since the insert waits for a concurrent one to commit)."""
        return (
            self.conn.execute(
                "INSERT INTO nonces(principal, nonce, expires) VALUES (?,?,?) "
                "ON CONFLICT DO NOTHING",
                (principal, nonce, self.now + keep_seconds),
            ).rowcount
            > 0
        )

    # accounts ---------------------------------------------------------------------------
    def user(self, address: str) -> UserRecord | None:
        row = self.conn.execute(
            "SELECT address, salt, key, admin FROM users WHERE address=?", (address,)
        ).fetchone()
        return UserRecord(row[0], row[1], row[2], bool(row[3])) if row else None

    def users(self) -> list[UserRecord]:
        rows = self.conn.execute("SELECT address, salt, key, admin FROM users ORDER BY address")
        return [UserRecord(r[0], r[1], r[2], bool(r[3])) for r in rows]

    def put_user(self, address: str, salt: bytes, key: bytes, admin: bool) -> None:
        self.conn.execute(
            "INSERT INTO users(address, salt, key, admin, created) VALUES (?,?,?,?,?) "
            "ON CONFLICT(address) DO UPDATE SET salt=excluded.salt, key=excluded.key, "
            "admin=excluded.admin",
            (address, salt, key, int(admin), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())),
        )

    def remove_user(self, address: str) -> bool:
        self.conn.execute("DELETE FROM messages WHERE owner=?", (address,))
        self.conn.execute("DELETE FROM folders WHERE owner=?", (address,))
        return self.conn.execute("DELETE FROM users WHERE address=?", (address,)).rowcount > 0

    # mailboxes --------------------------------------------------------------------------
    def find_copy(self, owner: str, folder: str, sender: str, message_id: str) -> str | None:
        """The copy of a message that arrived in `folder` (inbox, sent), wherever it is now."""
        row = self.conn.execute(
            "SELECT id FROM messages WHERE owner=? AND arrival=? AND sender=? AND message_id=?",
            (owner, folder, sender, message_id),
        ).fetchone()
        return row[0] if row else None

    def add_message(
        self,
        owner: str,
        folder: str,
        msg: Message,
        *,
        origin: str | None = None,
        signed_xml: bytes | None = None,
    ) -> tuple[str, int]:
        """Store one copy of `msg` in `owner`'s `folder`; returns (public id, seq).
        `origin` and `signed_xml` record the sending server and its signed form. The copy
        joins the conversation its message ids link it to (see `_conversation`)."""
        self._room_for_mail()
        public_id = new_public_id()
        keys = list(dict.fromkeys([msg.message_id, msg.in_reply_to or "", *msg.references]))
        keys = [k for k in keys if k]
        # a new conversation is numbered by the copy's own seq, chosen here so that the row
        # is written once (the insert trigger of migration 8 only numbers rows that come
        # in another way, with thread 0)
        values = (
            public_id,
            owner,
            folder,
            msg.message_id,
            msg.sender,
            json.dumps(msg.to),
            json.dumps(msg.cc),
            msg.subject,
            msg.date,
            msg.size,
            int(msg.seen),
            msg.body,
            origin,
            signed_xml,
            int(msg.instant),
            int(msg.instant and msg.delete_if_undeliverable),
            int(msg.flagged),
            int(msg.answered),
            int(bool(msg.attachments)),
            int(is_sealed_body(msg.body)),
            folder,
            msg.in_reply_to or "",
            json.dumps(msg.references),
            json.dumps(msg.bcc),
        )
        if self.dialect == POSTGRESQL:
            seq, threads = self._insert_linked(owner, keys, values)
            self._merge(owner, threads)
            return public_id, seq
        threads = self._conversations_of(owner, keys)
        cursor = self.conn.execute(
            f"INSERT INTO messages(seq, {_INSERT_COLUMNS}, thread) "  # noqa: S608
            f"VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM messages),{_INSERT_MARKS},"
            "coalesce(?, (SELECT coalesce(max(seq), 0) + 1 FROM messages)))",
            (*values, threads[0] if threads else None),
        )
        assert cursor.lastrowid is not None
        seq = cursor.lastrowid
        self._merge(owner, threads)
        self.conn.execute(
            "INSERT INTO thread_links(owner, message_id, thread) VALUES "  # noqa: S608
            + ",".join(["(?,?,?)"] * len(keys))
            + " ON CONFLICT DO NOTHING",
            [v for key in keys for v in (owner, key, threads[0] if threads else seq)],
        )
        return public_id, seq

    # conversations (wsemail/server/mailbox/threads.py; tables of schema.py migration 8) --
    def _conversations_of(self, owner: str, keys: list[str]) -> list[int]:
        """The conversations of `owner`'s mailbox that message ids `keys` belong to, the
        oldest (lowest number) first."""
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(  # by primary key (no ORDER BY: it would pick the other index)
            f"SELECT thread FROM thread_links WHERE owner=? AND message_id IN ({marks})",  # noqa: S608
            (owner, *keys),
        )
        return sorted({int(r[0]) for r in rows})

    def _insert_linked(
        self, owner: str, keys: list[str], values: tuple[Any, ...]
    ) -> tuple[int, list[int]]:
        """PostgreSQL: insert the copy and link its ids in one statement (one round trip):
        its seq is drawn from the sequence (several nodes insert at once), its conversation
        is the oldest its ids name, else its own seq. Returns (seq, the conversations named,
        oldest first)."""
        row = self.conn.execute(
            "WITH t AS (SELECT coalesce(array_agg(DISTINCT thread ORDER BY thread), '{}') "
            "AS threads FROM thread_links WHERE owner=?::text AND message_id=ANY(?::text[])), "
            f"ins AS (INSERT INTO messages(seq, {_INSERT_COLUMNS}, thread) "  # noqa: S608
            f"SELECT s, {_TYPED_MARKS}, coalesce(t.threads[1], s) "
            "FROM nextval('messages_seq') AS s, t RETURNING seq, thread), "
            "links AS (INSERT INTO thread_links(owner, message_id, thread) "
            "SELECT ?::text, k, ins.thread FROM ins, unnest(?::text[]) AS k "
            "ON CONFLICT DO NOTHING) "
            "SELECT ins.seq, t.threads FROM ins, t",
            (owner, keys, *values, owner, keys),
        ).fetchone()
        return int(row[0]), [int(t) for t in row[1]]

    def _merge(self, owner: str, threads: list[int]) -> None:
        """A copy whose ids name several conversations merges them into the oldest (its
        own): the other ones' copies and links move to it."""
        if len(threads) > 1:
            marks = ",".join("?" * (len(threads) - 1))
            for table in ("messages", "thread_links"):
                self.conn.execute(
                    f"UPDATE {table} SET thread=? WHERE owner=? AND thread IN ({marks})",  # noqa: S608
                    (threads[0], owner, *threads[1:]),
                )

    def list_headers(
        self, owner: str, folder: str, limit: int, before_seq: int | None, unread_only: bool
    ) -> list[tuple[int, MessageHeader]]:
        sql = f"SELECT seq, {HEADER_COLUMNS} FROM messages WHERE owner=? AND folder=?"
        args: list[Any] = [owner, folder]
        if before_seq is not None:
            sql += " AND seq<?"
            args.append(before_seq)
        if unread_only:
            sql += " AND seen=0"
        sql += " ORDER BY seq DESC LIMIT ?"
        args.append(limit)
        return [(r[0], header(r[1:])) for r in self.conn.execute(sql, args)]

    def get_message(self, owner: str, public_id: str) -> Message | None:
        row = self.conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE owner=? AND id=?",
            (owner, public_id),
        ).fetchone()
        return None if row is None else message(row)

    def mark_seen(self, owner: str, public_id: str) -> None:
        self.conn.execute(
            "UPDATE messages SET seen=1 WHERE owner=? AND id=? AND seen=0", (owner, public_id)
        )

    def delete_message(self, owner: str, public_id: str) -> bool:
        return (
            self.conn.execute(
                "DELETE FROM messages WHERE owner=? AND id=?",
                (owner, public_id),
            ).rowcount
            > 0
        )

    def count_messages(self) -> int:
        return int(self.conn.execute("SELECT count(*) FROM messages").fetchone()[0])

    # certificates of relayed mail (compact provenance) ---------------------------------
    def put_certificate(self, digest: bytes, der: bytes) -> None:
        self.conn.execute(
            "INSERT INTO certificates(digest, der, added) VALUES (?,?,?) ON CONFLICT DO NOTHING",
            (digest, der, self.now),
        )

    def certificate(self, digest: bytes) -> bytes | None:
        row = self.conn.execute("SELECT der FROM certificates WHERE digest=?", (digest,)).fetchone()
        return bytes(row[0]) if row else None

    # outbound queue (the federation relay consumes it) -----------------------------------
    def enqueue(self, msg: Message, domain: str, recipients: list[str], payload: bytes) -> None:
        """One outbound row per destination domain, committed with the accepted message."""
        self._room_for_mail()
        self.conn.execute(
            "INSERT INTO queue(message_id, sender, domain, payload, recipients_json, "
            "next_attempt, created) VALUES (?,?,?,?,?,?,?)",
            (
                msg.message_id,
                msg.sender,
                domain,
                payload,
                json.dumps(recipients),
                self.now,
                self.now,
            ),
        )

    def lease_due(self, lease_seconds: float, limit: int, node: str = "") -> list[QueueRow]:
        """Take up to `limit` rows that are due (or whose lease expired) for delivery, for
        `node`. On PostgreSQL several nodes lease at once: rows another node is leasing
        right now are skipped (FOR UPDATE SKIP LOCKED), so each row goes to one node."""
        lock = " FOR UPDATE SKIP LOCKED" if self.dialect == POSTGRESQL else ""
        holder = ", leased_by=?" if self.dialect == POSTGRESQL else ""
        args: tuple[Any, ...] = (self.now + lease_seconds,)
        if holder:
            args += (node,)
        rows = self.conn.execute(
            f"UPDATE queue SET state='leased', lease_until=?{holder} WHERE id IN (SELECT id "  # noqa: S608
            "FROM queue WHERE (state IN ('queued','deferred') AND next_attempt<=?) OR "
            f"(state='leased' AND lease_until<?) ORDER BY next_attempt LIMIT ?{lock}) "
            "RETURNING id, message_id, sender, domain, payload, recipients_json, attempts, "
            "created, notified",
            (*args, self.now, self.now, limit),
        ).fetchall()
        return [
            QueueRow(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6], r[7], bool(r[8]))
            for r in rows
        ]

    def release_leases(self, node: str = "") -> int:
        """At start-up: rows a crashed predecessor had leased are due again. On SQLite that
        is every leased row (one relay per store); on PostgreSQL only the rows this node
        (`node`: the same data dir and worker) held — other nodes' leases run out by
        themselves if those nodes are gone."""
        if self.dialect == POSTGRESQL:
            return self.conn.execute(
                "UPDATE queue SET state='queued', lease_until=NULL, leased_by=NULL "
                "WHERE state='leased' AND leased_by=?",
                (node,),
            ).rowcount
        return self.conn.execute(
            "UPDATE queue SET state='queued', lease_until=NULL WHERE state='leased'"
        ).rowcount

    def finish_queued(self, row_id: int) -> None:
        self.conn.execute("DELETE FROM queue WHERE id=?", (row_id,))

    def defer_queued(self, row_id: int, next_attempt: float, error: str) -> None:
        self.conn.execute(
            "UPDATE queue SET state='deferred', attempts=attempts+1, next_attempt=?, "
            "lease_until=NULL, last_error=? WHERE id=?",
            (next_attempt, error[:500], row_id),
        )

    def narrow_queued(
        self, row_id: int, recipients: list[str], next_attempt: float, error: str
    ) -> None:
        """Defer a row for only `recipients` (the others were delivered or bounced)."""
        self.conn.execute(
            "UPDATE queue SET state='deferred', attempts=attempts+1, next_attempt=?, "
            "lease_until=NULL, last_error=?, recipients_json=? WHERE id=?",
            (next_attempt, error[:500], json.dumps(recipients), row_id),
        )

    def mark_notified(self, row_id: int) -> None:
        self.conn.execute("UPDATE queue SET notified=1 WHERE id=?", (row_id,))

    def bring_forward(self, domain: str, keep: list[int] | None = None) -> int:
        """A domain answered: its deferred rows are due now (not at their backoff time),
        except the rows `keep` names."""
        skip = list(keep or [])
        return self.conn.execute(
            "UPDATE queue SET next_attempt=? WHERE domain=? AND state='deferred' "
            f"AND next_attempt>? AND id NOT IN ({','.join('?' * len(skip))})",
            (self.now, domain, self.now, *skip),
        ).rowcount

    def next_due(self) -> float | None:
        row = self.conn.execute(
            "SELECT min(next_attempt) FROM queue WHERE state IN ('queued','deferred')"
        ).fetchone()
        return row[0] if row else None

    # inbound idempotency -----------------------------------------------------------------
    def delivery_status(
        self, origin: str, message_id: str, recipient: str
    ) -> tuple[str, str] | None:
        row = self.conn.execute(
            "SELECT status, reason FROM deliveries WHERE origin=? AND message_id=? AND recipient=?",
            (origin, message_id, recipient),
        ).fetchone()
        return (row[0], row[1]) if row else None

    def record_delivery(
        self, origin: str, message_id: str, recipient: str, status: str, reason: str = ""
    ) -> None:
        self.conn.execute(
            "INSERT INTO deliveries(origin, message_id, recipient, status, reason, at) "
            "VALUES (?,?,?,?,?,?)",
            (origin, message_id, recipient, status, reason, self.now),
        )


@dataclass(frozen=True)
class QueueRow:
    id: int
    message_id: str
    sender: str
    domain: str
    payload: bytes
    recipients: list[str]
    attempts: int
    created: float
    notified: bool = False  # the sender was told it is delayed


MESSAGE_COLUMNS = (
    f"{HEADER_COLUMNS}, body, origin, signed_xml, in_reply_to, references_json, bcc_json"
)


def message(row: tuple[Any, ...]) -> Message:
    """A whole Message from the MESSAGE_COLUMNS of a row."""
    return Message(
        **vars(header(row[:14])),
        body=row[14],
        origin=row[15],
        signed_xml=row[16],
        in_reply_to=row[17] or None,
        references=json.loads(row[18]),
        bcc=json.loads(row[19]),
    )


@functools.lru_cache(maxsize=4096)
def _addresses(text: str) -> tuple[str, ...]:
    """A copy's To or Cc from its JSON column. The same lists come back again and again (a
    mailbox's own address, the people it writes with): a page of 50 headers decoded 100 of
    them, two-thirds of the time it took to make the headers."""
    return tuple(json.loads(text))


def header(row: tuple[Any, ...]) -> MessageHeader:
    """A MessageHeader from the HEADER_COLUMNS of a row."""
    return MessageHeader(
        id=row[0],
        message_id=row[1],
        folder=row[2],
        sender=row[3],
        to=list(_addresses(row[4])),
        cc=list(_addresses(row[5])),
        subject=row[6],
        date=row[7],
        size=row[8],
        seen=bool(row[9]),
        instant=bool(row[10]),
        delete_if_undeliverable=bool(row[11]),
        flagged=bool(row[12]),
        answered=bool(row[13]),
    )


class LoopAnswer:
    """The caller of a unit of work on an event loop (`BatchStore.transact`). The writer
    thread answers all of a batch's callers on one loop with one call into it after the
    commit (`answer`), not one wake-up per unit. It has the parts of a
    concurrent.futures.Future the writer thread uses."""

    __slots__ = ("future", "loop", "taken")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.taken = False

    def running(self) -> bool:
        return self.taken

    def set_running_or_notify_cancel(self) -> bool:
        """False when the caller gave up (its request was cancelled): skip the unit."""
        if self.future.cancelled():  # read from the writer thread: one flag, no harm
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
        # it carried; set by the metrics (runs in the writer thread: keep it cheap)
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
        if not self._connected:
            self._conn, self._connected = self._open(), True
        self._conn = self._usable(self._conn)
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
