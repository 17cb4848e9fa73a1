"""What a unit of work reads and writes through: `Tx`, on the one connection of a batch
(SQLite's, or the PostgreSQL store's, which takes the same calls), and the records it hands
back (a user, an outbound queue row, a message, a header). The batches themselves are
`batches.py`'s; the SQLite store is `store.py`'s.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import dataclass
from typing import Any

from wsemail.protocol.errors import StorageFull
from wsemail.protocol.message import Message, MessageHeader, is_sealed_body, ordered_token
from wsemail.server.sql import POSTGRESQL, SQLITE, Connection
from wsemail.server.storage import FULL_REASON

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


def _json_list(values: list[str]) -> str:
    """A list of strings as JSON text (most are empty: 1.4 µs saved each)."""
    return json.dumps(values) if values else "[]"


def new_public_id() -> str:
    """The id a stored copy is known by to its owner (and on the command line): 9 random
    bytes after the time it was made (`ordered_token`)."""
    return ordered_token(9)


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
            _json_list(msg.to),
            _json_list(msg.cc),
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
            _json_list(msg.references),
            _json_list(msg.bcc),
        )
        if self.dialect == POSTGRESQL:
            seq, threads = self._insert_linked(owner, keys, values)
            self._merge(owner, threads)
            return public_id, seq
        # (SQLite, schema migration 11) the copies that have one of these ids are found
        # in `messages`; links are kept only for the ids a copy names
        named = [k for k in keys if k != msg.message_id]
        if not named and msg.message_id:  # names no other id: one conversation at most
            ((seq,),) = self.conn.execute(
                f"INSERT INTO messages(seq, {_INSERT_COLUMNS}, thread) "  # noqa: S608
                f"VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM messages),{_INSERT_MARKS},"
                "coalesce((SELECT thread FROM thread_links WHERE owner=? AND message_id=?), "
                "(SELECT thread FROM messages WHERE owner=? AND message_id=? LIMIT 1), "
                "(SELECT coalesce(max(seq), 0) + 1 FROM messages))) RETURNING seq",
                (*values, owner, msg.message_id, owner, msg.message_id),
            ).fetchall()
            return public_id, int(seq)
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
        if named:
            self.conn.execute(
                "INSERT INTO thread_links(owner, message_id, thread) VALUES "  # noqa: S608
                + ",".join(["(?,?,?)"] * len(named))
                + " ON CONFLICT DO NOTHING",
                [v for key in named for v in (owner, key, threads[0] if threads else seq)],
            )
        return public_id, seq

    # conversations (wsemail/server/mailbox/threads.py; tables of schema.py migration 8) --
    def _conversations_of(self, owner: str, keys: list[str]) -> list[int]:
        """The conversations of `owner`'s mailbox that message ids `keys` belong to, the
        oldest (lowest number) first."""
        marks = ",".join("?" * len(keys))
        rows = self.conn.execute(  # by primary key (no ORDER BY: it would pick the other index)
            f"SELECT thread FROM thread_links WHERE owner=? AND message_id IN ({marks}) "  # noqa: S608
            f"UNION SELECT thread FROM messages WHERE owner=? AND message_id IN ({marks})",
            (owner, *keys, owner, *keys),
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
