"""A third-party plug-in, loaded by `module:Class` like any outside package would be."""

from __future__ import annotations

from dataclasses import replace

from lxml import etree

from wsemail.protocol.errors import Rejected
from wsemail.protocol.message import Message
from wsemail.protocol.soap import q
from wsemail.server.pipeline import (
    DeliveryProcessor,
    Environment,
    ExtensionProcessor,
    SendingProcessor,
    Verdict,
)


class NoSpam(SendingProcessor):
    """Refuse messages whose subject says spam."""

    name = "no-spam"

    def process_outgoing(self, message: Message, env: Environment) -> None:
        if "spam" in message.subject.lower():
            raise Rejected("looks like spam")


class Vacation(DeliveryProcessor, ExtensionProcessor):
    """A composite: an extension turns an auto-reply on; delivery sends it (like vacation)."""

    name = "vacation"
    extension_id = "vacation"

    def __init__(self) -> None:
        self.away: set[str] = set()

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element:
        self.away.add(env.principal)
        answer = etree.Element(q("Away"))
        answer.text = env.principal
        return answer

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        if recipient in self.away and not message.subject.startswith("Away:"):
            reply = replace(
                message,
                sender=recipient,
                to=[message.sender],
                cc=[],
                subject=f"Away: {message.subject}",
                body="I am away.",
            )
            env.tx.add_message(message.sender, "inbox", replace(reply, seen=False))
        return Verdict.PASS


def not_a_plugin() -> None:
    """Named in a test to show that only plug-in classes load."""
