"""In charge of attachment bytes on the PostgreSQL store (DESIGN.md §6). The nodes of a
domain share one database, so the bytes live there too, where every node reads them: rows
of at most CHUNK_BYTES in `attachment_chunks`, keyed by (guid, chunk number).

An upload streams into a spool file under the node's data dir exactly as on SQLite
(`streams`: constant memory, hashed on the way, size checked); once complete, and before
the row that makes it visible commits, `commit` copies it into chunk rows, one unit of
work per chunk (constant memory; other requests' units go on in between) and removes the
spool file. A download reads the rows back one chunk at a time (`open`). Forgetting an
upload deletes its chunks in the same transaction (`records.forget`); the sweeper removes
spool files and the chunks of uploads that are gone, revoked or superseded.

The same calls as `storage.BlobStore` (the files of the SQLite store), which the plug-in
picks by the store's dialect.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from wsemail.server.attachments import records
from wsemail.server.attachments.storage import BlobStore
from wsemail.server.store import BatchStore

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

log = logging.getLogger("wsemail.attachments")
CHUNK_BYTES = 1 << 20
_GUID = re.compile(r"^[0-9a-f]{32}$")


def _checked(guid: str) -> str:
    if not _GUID.match(guid):  # never a user-supplied string
        raise ValueError("not a server-generated attachment id")
    return guid


class ChunkStore:
    """Attachment bytes as chunk rows of the PostgreSQL store; spool files under `root`."""

    def __init__(self, store: BatchStore, root: Path) -> None:
        self.store = store
        self.root = root  # the spool's disk: what BeginUpload's free-space check reads
        self.tmp = root / "tmp"
        for folder in (self.root, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def temporary(self) -> Path:
        return self.tmp / f"{secrets.token_hex(16)}.part"

    def commit(self, tmp: Path, guid: str) -> None:
        """Copy the complete spool file into chunk rows and remove it (blocking: run it in
        a worker thread). Chunk 0 is always written, so an empty attachment has one row."""
        _checked(guid)
        with open(tmp, "rb") as handle:
            number = 0
            while True:
                data = handle.read(CHUNK_BYTES)
                if number and not data:
                    break
                self._put(guid, number, data)
                number += 1
                if len(data) < CHUNK_BYTES:
                    break
        BlobStore.discard(tmp)

    def write(self, guid: str, data: bytes) -> str:
        """Store bytes the server itself received as attachment `guid` (blocking); returns
        their SHA-256."""
        _checked(guid)
        view = memoryview(data)
        for number, start in enumerate(range(0, max(len(data), 1), CHUNK_BYTES)):
            self._put(guid, number, bytes(view[start : start + CHUNK_BYTES]))
        return hashlib.sha256(data).hexdigest()

    def _put(self, guid: str, number: int, data: bytes) -> None:
        self.store.transact_sync(lambda tx: records.put_chunk(tx, guid, number, data))

    def open(self, guid: str) -> BinaryIO:
        """A stored attachment for reading, chunk by chunk (blocking; FileNotFoundError
        when it has no chunks)."""
        _checked(guid)
        if not self.store.transact_sync(lambda tx: records.has_chunks(tx, guid)):
            raise FileNotFoundError(f"attachment {guid} has no bytes in the store")
        return io.BufferedReader(ChunkReader(self.store, guid), buffer_size=CHUNK_BYTES)

    def remove(self, guid: str) -> None:
        _checked(guid)
        self.store.transact_sync(lambda tx: records.drop_chunks(tx, guid))

    @staticmethod
    def discard(tmp: Path) -> None:
        BlobStore.discard(tmp)

    def sweep(self, live: set[str], tmp_before: float | None = None) -> int:
        """Remove spool files last written before `tmp_before` (all of them when None: at
        start-up no upload of this node is running) and the chunks no live upload owns
        (decided in the database, not from `live`: other nodes upload meanwhile); returns
        how many spool files and uploads' chunks went."""
        removed = 0
        for tmp in self.tmp.iterdir():
            if tmp_before is not None and tmp.stat().st_mtime >= tmp_before:
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
        removed += self.store.transact_sync(records.sweep_chunks)
        if removed:
            log.info("swept %d orphaned attachment spool file(s) or chunk set(s)", removed)
        return removed


class ChunkReader(io.RawIOBase):
    """The bytes of one attachment, read from its chunk rows one row at a time (the row in
    hand is kept for the next read)."""

    def __init__(self, store: BatchStore, guid: str) -> None:
        super().__init__()
        self.store = store
        self.guid = guid
        self.position = 0
        self._number = -1
        self._data = b""

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            position = offset
        elif whence == io.SEEK_CUR:
            position = self.position + offset
        else:
            raise io.UnsupportedOperation("an attachment is read from its start or on")
        if position < 0:
            raise ValueError("negative position")
        self.position = position
        return position

    def readinto(self, buffer: WriteableBuffer) -> int:
        number, offset = divmod(self.position, CHUNK_BYTES)
        if number != self._number:
            guid = self.guid
            found = self.store.transact_sync(lambda tx: records.chunk(tx, guid, number))
            self._number, self._data = number, found or b""
        piece = self._data[offset : offset + len(memoryview(buffer))]
        memoryview(buffer).cast("B")[: len(piece)] = piece
        self.position += len(piece)
        return len(piece)

    def close(self) -> None:
        self._data = b""
        super().close()


Blobs = BlobStore | ChunkStore  # where an attachment's bytes are kept (by the store's dialect)
