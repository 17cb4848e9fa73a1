"""wsemail: internet mail redesigned as a family of secure web services.

The headless library: the client, the message values and the error tree. The server lives
in `wsemail.server`, the command line in `wsemail.cli`, the terminal UI in `wsemail.tui`.

The names below are imported when first used (`wsemail.Client`, `from wsemail import
Message`): a process that only serves, such as `wsemail serve`, imports `wsemail` as the
parent of `wsemail.server` and does not load the client with it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

# before anything imports httpx or httpcore (the client and the server's relay both do)
from wsemail.client import httpcore_trio, httpx_cli
from wsemail.core import standin

if TYPE_CHECKING:
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

httpx_cli.defer()
httpcore_trio.skip()

_HOMES = {
    "AuthenticationFailed": "wsemail.protocol.errors",
    "Client": "wsemail.client",
    "Draft": "wsemail.protocol.message",
    "Message": "wsemail.protocol.message",
    "MessageHeader": "wsemail.protocol.message",
    "NotFound": "wsemail.protocol.errors",
    "Page": "wsemail.client",
    "Rejected": "wsemail.protocol.errors",
    "RemoteFault": "wsemail.protocol.errors",
    "SendResult": "wsemail.client",
    "TransportError": "wsemail.protocol.errors",
    "UsageError": "wsemail.protocol.errors",
    "WsemailError": "wsemail.protocol.errors",
}

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


__getattr__ = standin.names_from(__name__, globals(), _HOMES)


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
