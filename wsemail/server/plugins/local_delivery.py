"""The local MTA role: the final write of a message into a local user's inbox."""

from __future__ import annotations

from dataclasses import replace

from wsemail.protocol.errors import UnknownRecipient
from wsemail.protocol.message import Message
from wsemail.server.pipeline import Environment, LocalMTA


class LocalDelivery(LocalMTA):
    """Store one copy per recipient inbox; refuse unknown local users."""

    name = "local-delivery"

    def store(self, message: Message, recipient: str, env: Environment) -> str:
        if env.tx.user(recipient) is None:
            raise UnknownRecipient(f"no such user: {recipient}")
        existing = env.tx.find_copy(recipient, "inbox", message.sender, message.message_id)
        if existing is not None:  # the same message again (a retry): deliver once
            return existing
        copy = replace(message, folder="inbox", seen=False)
        public_id, _ = env.tx.add_message(
            recipient, "inbox", copy, origin=copy.origin, signed_xml=copy.signed_xml
        )
        return public_id
