"""In charge of attachment bytes on disk (DESIGN.md §6): each upload streams into a
temporary file under a server-generated name, is fsynced, renamed into `blobs/<guid>` and
the directory fsynced — all before the row that makes it visible commits. Names that users
give never reach the file system. The sweeper removes temporary files and blobs that no
live row references.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger("wsemail.attachments")
_GUID = re.compile(r"^[0-9a-f]{32}$")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.tmp = root / "tmp"
        for folder in (self.root, self.blobs, self.tmp):
            folder.mkdir(parents=True, exist_ok=True)

    def path(self, guid: str) -> Path:
        if not _GUID.match(guid):  # never a user-supplied string
            raise ValueError("not a server-generated attachment id")
        return self.blobs / guid

    def temporary(self) -> Path:
        return self.tmp / f"{secrets.token_hex(16)}.part"

    def commit(self, tmp: Path, guid: str) -> None:
        """fsync the file, rename it into place, fsync the directory (blocking: run it in a
        worker thread)."""
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.path(guid))
        _fsync_dir(self.blobs)

    def write(self, guid: str, data: bytes) -> str:
        """Write bytes the server itself received as blob `guid` (tmp → fsync → rename →
        fsync dir; blocking); returns their SHA-256."""
        tmp = self.temporary()
        try:
            with open(tmp, "wb") as out:
                out.write(data)
            self.commit(tmp, guid)
        finally:
            self.discard(tmp)
        return hashlib.sha256(data).hexdigest()

    def open(self, guid: str) -> BinaryIO:
        """A stored blob for reading (OSError when it is missing)."""
        return open(self.path(guid), "rb")  # noqa: SIM115 -- the caller closes it

    def remove(self, guid: str) -> None:
        try:
            self.path(guid).unlink()
        except FileNotFoundError:
            return
        _fsync_dir(self.blobs)

    @staticmethod
    def discard(tmp: Path) -> None:
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass

    def sweep(self, live: set[str], tmp_before: float | None = None) -> int:
        """Remove blobs not in `live` and temporary files last written before `tmp_before`
        (all of them when None: at start-up no upload is running); returns how many went."""
        removed = 0
        for tmp in self.tmp.iterdir():
            if tmp_before is not None and tmp.stat().st_mtime >= tmp_before:
                continue
            tmp.unlink(missing_ok=True)
            removed += 1
        for blob in self.blobs.iterdir():
            if blob.name not in live:
                blob.unlink(missing_ok=True)
                removed += 1
        if removed:
            _fsync_dir(self.blobs)
            log.info("swept %d orphaned attachment file(s)", removed)
        return removed


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
