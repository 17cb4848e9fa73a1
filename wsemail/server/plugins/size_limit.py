"""Sending processor: refuse messages above a configurable size (like Postfix's
message_size_limit), so one user cannot fill every recipient's mailbox at once."""

from __future__ import annotations

from wsemail.protocol.errors import MessageTooLarge
from wsemail.protocol.message import Message
from wsemail.server.pipeline import Environment, SendingProcessor


class SizeLimit(SendingProcessor):
    """Refuse submitted messages larger than max_bytes (default 2 MiB)."""

    name = "size-limit"

    def __init__(self, max_bytes: int = 2 << 20) -> None:
        if int(max_bytes) <= 0:
            raise ValueError("max_bytes must be positive")
        self.max_bytes = int(max_bytes)

    def process_outgoing(self, message: Message, env: Environment) -> None:
        if message.size > self.max_bytes:
            raise MessageTooLarge(
                f"message of {message.size} bytes exceeds the limit of {self.max_bytes}"
            )
