"""The mail-queue role: outbound rows per destination domain, committed in the same
transaction as the accepted message (the federation relay consumes them)."""

from __future__ import annotations

from lxml import etree

from wsemail.protocol.message import Message
from wsemail.server.pipeline import Environment, MailQueue


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
