"""What the `contacts` and `directory` commands share: their options, and refusing bad
input before anything is sent (one line, exit 2)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

import typer

from wsemail.protocol.errors import RemoteFault

T = TypeVar("T")
ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")


def checked_locally(check: Callable[..., T], *args: object) -> T:
    """`check(*args)`, a rule the server enforces too: its refusal is a command-line
    mistake (one line, exit 2), and nothing reaches the server."""
    try:
        return check(*args)
    except RemoteFault as exc:
        print(f"wsemail: {exc.reason}", file=sys.stderr)
        raise typer.Exit(2) from exc
