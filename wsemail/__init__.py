"""wsemail: internet mail redesigned as a family of secure web services.

The headless library: the client, the message values and the error tree. The server lives
in `wsemail.server`, the command line in `wsemail.cli`, the terminal UI in `wsemail.tui`.
"""

from __future__ import annotations

from wsemail.client import Client, Page, SendResult
from wsemail.protocol.errors import (
    AuthenticationFailed,
    NotFound,
    Rejected,
    RemoteFault,
    TransportError,
    UsageError,
    WsemailError,
)
from wsemail.protocol.message import Draft, Message, MessageHeader

__all__ = [
    "AuthenticationFailed",
    "Client",
    "Draft",
    "Message",
    "MessageHeader",
    "NotFound",
    "Page",
    "Rejected",
    "RemoteFault",
    "SendResult",
    "TransportError",
    "UsageError",
    "WsemailError",
]
__version__ = "0.1.0"
