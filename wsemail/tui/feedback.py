"""In charge of turning errors into one line a user can act on (shown as a notification,
never as a traceback). Pure Python (no Textual)."""

from __future__ import annotations

from wsemail.protocol.errors import (
    AuthenticationFailed,
    RateLimited,
    RemoteFault,
    TransportError,
    WsemailError,
)


def describe(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationFailed):
        return "wrong address or password"
    if isinstance(exc, RateLimited):
        return "too many failed sign-ins; wait a minute and try again"
    if isinstance(exc, TransportError):
        return str(exc)
    if isinstance(exc, RemoteFault):
        return exc.reason
    if isinstance(exc, WsemailError):
        return str(exc)
    return f"unexpected {type(exc).__name__}: {exc}"
