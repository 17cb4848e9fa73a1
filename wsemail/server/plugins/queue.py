"""The mail-queue role: outbound rows per destination domain, committed in the same
transaction as the accepted message (the federation relay consumes them), and the queue's
state per destination domain for the admin status."""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from wsemail.protocol.message import Message
from wsemail.server.pipeline import Environment, MailQueue
from wsemail.server.store import Tx


@dataclass(frozen=True)
class DomainQueue:
    """What waits for one destination domain."""

    domain: str
    depth: int  # queued rows (one per message and domain)
    oldest: float  # when the oldest was accepted
    next_attempt: float  # when the next attempt is due
    attempts: int  # most attempts any of them had
    last_error: str  # the latest error recorded for the domain


def queue_status(tx: Tx) -> list[DomainQueue]:
    """The outbound queue per destination domain, the longest-waiting first."""
    rows = tx.conn.execute(
        "SELECT domain, count(*), min(created), min(next_attempt), max(attempts), "
        "(SELECT last_error FROM queue AS e WHERE e.domain=queue.domain AND "
        "e.last_error IS NOT NULL ORDER BY e.attempts DESC, e.id DESC LIMIT 1) "
        "FROM queue GROUP BY domain ORDER BY min(created)"
    ).fetchall()
    return [DomainQueue(r[0], r[1], r[2], r[3], r[4], r[5] or "") for r in rows]


class SqliteQueue(MailQueue):
    """Queue outbound messages in the server's SQLite store."""

    name = "sqlite-queue"

    def enqueue(
        self, message: Message, domain: str, recipients: list[str], env: Environment
    ) -> None:
        holder = etree.Element("holder")
        payload = etree.tostring(message.to_xml(holder))
        env.tx.enqueue(message, domain, recipients, payload)
        if env.wake_relay not in env.after_commit:
            env.after_commit.append(env.wake_relay)
