"""Emptying Trash: what has been there longer than `[mailbox] trash_days` is deleted for
good, for every user, once an hour on the server's loop (and for one user whenever they
delete something). `sweep` takes the time as an argument, so tests need not wait."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from wsemail.server.mailbox import records

log = logging.getLogger("wsemail.mailbox")
INTERVAL = 3600.0


async def sweep(server: Any, now: float | None = None) -> int:
    """Delete every user's Trash older than the configured age as at `now` (default: the
    server's clock); returns how many messages went."""
    days = float(server.config.trash_days)
    if days <= 0:
        return 0
    cutoff = (server.clock() if now is None else now) - days * 86400.0
    gone: int = await server.store.transact(lambda tx: records.sweep_trash(tx, cutoff))
    if gone:
        log.info("emptied %d message(s) from Trash", gone)
    return gone


async def run(server: Any, interval: float = INTERVAL) -> None:
    """The sweep, every `interval` seconds until cancelled; a failure is logged, not fatal."""
    while True:
        try:
            await sweep(server)
        except Exception:
            log.exception("Trash sweep failed")
        await asyncio.sleep(interval)
