"""Failed authentications counted across the nodes and workers of one domain.

Each process keeps its token buckets (wsemail/server/ratelimit.py) and answers from them
without a database round trip. On a PostgreSQL store every failure is also written to
`auth_failures`, and every process replays the other processes' failures into its own
buckets a few times a second: a password guesser spreading attempts over the nodes is
limited as if it talked to one (up to the failures of one interval).
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from wsemail.protocol.errors import WsemailError
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.security")
INTERVAL = 0.25  # seconds between two exchanges with the database
BATCH = 1000  # failures written or read per exchange, at most


class SharedFailures:
    def __init__(self, server: Server) -> None:
        self.server = server
        self.node = server.store.node
        self.pending: list[tuple[str, str]] = []
        self.seen = 0  # the highest auth_failures id replayed here
        self.window = server.config.failure_window
        server.auth.on_failure = self.failed

    def failed(self, username: str, where: str) -> None:
        if len(self.pending) < 10 * BATCH:  # beyond that the database is not keeping up
            self.pending.append((username, where))

    async def run(self) -> None:
        first = await self.server.store.transact(
            lambda tx: tx.conn.execute("SELECT coalesce(max(id), 0) FROM auth_failures").fetchone()
        )
        self.seen = int(first[0])
        while True:
            await asyncio.sleep(INTERVAL)
            try:
                await self.exchange()
            except WsemailError as exc:  # the store is away: the local counts still hold
                log.debug("failure counts not exchanged: %s", exc)

    async def exchange(self) -> int:
        """Write this node's new failures, replay the others'; how many were replayed."""
        mine, self.pending = self.pending[:BATCH], self.pending[BATCH:]
        node, seen, window = self.node, self.seen, self.window

        def unit(tx: Tx) -> list[tuple[int, str, str]]:
            tx.conn.executemany(
                "INSERT INTO auth_failures(node, username, peer, at) VALUES (?,?,?,?)",
                [(node, user, where, tx.now) for user, where in mine],
            )
            rows = tx.conn.execute(
                "SELECT id, username, peer FROM auth_failures WHERE id>? AND node<>? "
                "ORDER BY id LIMIT ?",
                (seen, node, BATCH),
            ).fetchall()
            tx.conn.execute("DELETE FROM auth_failures WHERE at<?", (tx.now - window,))
            return [(int(r[0]), str(r[1]), str(r[2])) for r in rows]

        try:
            rows = await self.server.store.transact(unit)
        except BaseException:
            self.pending[:0] = mine  # written next time
            raise
        for row_id, user, where in rows:
            self.server.auth.count_failure(user, where)
            self.seen = max(self.seen, row_id)
        return len(rows)
