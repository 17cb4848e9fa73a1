"""In charge of an upload's bytes on their way from the event loop to the disk: hashed and
written in a worker thread, a batch of about `CHUNK` bytes at a time, while the loop takes
in the next ones. The loop never waits for the disk (a slow write would stall every other
connection of the server), and at most two batches are held."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    import hashlib

CHUNK = 1 << 20


class Spool:
    """Pieces received on the loop, hashed and written in order by a worker thread, one
    batch of about `CHUNK` bytes at a time (one thread hand-off per batch, not per piece)."""

    def __init__(self, out: BinaryIO, digest: hashlib._Hash) -> None:
        self.out = out
        self.digest = digest
        self._batch: list[bytes] = []
        self._batched = 0
        self._pending: asyncio.Future[None] | None = None

    async def add(self, piece: bytes) -> None:
        self._batch.append(piece)
        self._batched += len(piece)
        if self._batched >= CHUNK:
            await self._hand_off()

    async def finish(self) -> None:
        """Write what is left and wait for it (an OSError of the writes is raised here)."""
        if self._batch:
            await self._hand_off()
        if self._pending is not None:
            await self._pending
            self._pending = None

    async def settle(self) -> None:
        """After a failure: wait until the worker no longer touches the file."""
        pending, self._pending = self._pending, None
        if pending is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(pending)

    async def _hand_off(self) -> None:
        if self._pending is not None:  # the previous batch first: order, at most two held
            await self._pending  # (kept until done: `settle` waits for it after a cancel)
            self._pending = None
        batch, self._batch, self._batched = self._batch, [], 0
        loop = asyncio.get_running_loop()
        self._pending = loop.run_in_executor(None, self._store, batch)

    def _store(self, batch: list[bytes]) -> None:
        for piece in batch:
            self.digest.update(piece)
            self.out.write(piece)
