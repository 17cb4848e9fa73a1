"""In charge of the health of the server's storage: the start-up check of the database (a
broken one is refused in one line, never served) and the full-disk mode.

Start-up (`check_database`): a missing database in a data dir is a new store; an existing
one must open for writing, pass `PRAGMA quick_check`, and carry the wsemail schema (or be
an empty SQLite file that SQLite itself just created, with its content still in the WAL).
A 0-byte file with nothing in its WAL, a read-only file or file system, corrupt pages, a
foreign database or one from a newer wsemail are refused with one line.

Full disk (`SpaceReserve`): the data dir keeps a reserve file. When a commit fails for
lack of space the store gives the reserve back to the file system and enters full mode:
new mail (a Send, a relayed Deliver, a bounce, an SMTP message) is refused with the
`StorageFull` fault (HTTP 507), while reads, deletes and their replay-cache rows go on in
the reserve, so replay protection stays durable. The write-ahead log is checkpointed
often enough (`checkpoint_pages`) that it never needs more than the reserve to start
over. Once the file system has room again the reserve is taken back and the server takes
mail again.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

from wsemail.protocol.errors import StoreError

log = logging.getLogger("wsemail.store")
RESERVE_NAME = "reserve.space"
FULL_REASON = "the server's storage is full: it takes no new mail until space is freed"
MIN_FREE = 64 << 10  # below this, opening the database (its WAL index) may fail


def no_room(directory: Path) -> str:
    return (
        f"the file system of {directory} is full ({_free(directory)} bytes free): "
        "free some space, then start the server again"
    )


def check_database(path: Path, migrations: int) -> None:
    """Refuse (StoreError, one line) a database that must not be served."""
    wal = path.with_name(path.name + "-wal")
    if not path.exists():
        return  # a new store: created and migrated by the caller
    if path.stat().st_size == 0 and not (wal.exists() and wal.stat().st_size > 0):
        raise StoreError(
            f"{path} is empty (0 bytes): it held no mail or was truncated; restore it from a "
            "backup, or remove it to start with an empty store"
        )
    if not _writable(path) or (wal.exists() and not _writable(wal)):
        raise StoreError(f"{path} is read-only: the server needs to write to it and its directory")
    try:
        conn = sqlite3.connect(f"file:{path}?mode=rw", uri=True, isolation_level=None, timeout=10)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from exc
    try:
        try:
            problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            conn.execute("BEGIN IMMEDIATE")  # a write lock: refused on a read-only file
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            code = getattr(exc, "sqlite_errorcode", None)
            if code == sqlite3.SQLITE_READONLY or "readonly" in str(exc):
                raise StoreError(f"{path} is read-only: the server needs to write to it") from exc
            message = f"{path} is damaged ({exc}); restore it from a backup"
            raise StoreError(explain(exc, message, path)) from exc
    finally:
        conn.close()
    if problems != ["ok"]:
        first = " ".join(" ".join(problems).replace("*", "").split())[:160]
        raise StoreError(f"{path} is corrupt (quick_check: {first}); restore it from a backup")
    if version == 0 and tables:
        raise StoreError(f"{path} is not a wsemail database (tables but no wsemail schema)")
    if version > migrations:
        raise StoreError(
            f"{path} has schema version {version}, newer than this wsemail knows ({migrations})"
        )
    if version > 0 and "messages" not in tables:
        raise StoreError(f"{path} lacks the wsemail schema (no messages table)")


def explain(exc: sqlite3.Error, message: str, path: Path) -> str:
    """`message`, or what is full when a full disk is the cause."""
    if is_full(exc) or _free(path.parent) < MIN_FREE:
        return no_room(path.parent)
    return message


def _writable(path: Path) -> bool:
    """Writable by this process, including on a read-only file system (root ignores
    permission bits, not read-only mounts)."""
    if not os.access(path, os.W_OK) or not os.access(path.parent, os.W_OK):
        return False
    return not os.statvfs(path.parent).f_flag & os.ST_RDONLY


def is_full(exc: BaseException) -> bool:
    """Whether a sqlite3 or OS error means the disk (or the database's size limit) is full."""
    if isinstance(exc, sqlite3.Error):
        return getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


class SpaceReserve:
    """The reserve file of a data dir and the full-disk mode it backs."""

    def __init__(
        self,
        data_dir: Path,
        size: int,
        *,
        recheck: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = data_dir / RESERVE_NAME
        self.size = size
        self.recheck = recheck
        self.clock = clock
        self.full = False
        self._checked = 0.0
        self._free_then, self._freed = 0, False

    def start(self) -> None:
        """At start-up: take the reserve; on a (nearly) full disk give it back at once, so
        the database opens, and start in full mode (`announce` it once the store opened)."""
        if self.size <= 0:
            return
        free = _free(self.path.parent)
        if self.path.exists():
            if free < MIN_FREE:
                self.disk_full(quiet=True)
        elif free < 2 * self.size or not self.take():
            self.disk_full(quiet=True)

    def take(self) -> bool:
        """Make sure the reserve file holds `size` bytes; False when there is no room."""
        if self.size <= 0:
            return True
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                return True
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                self.path.unlink()
            if not is_full(exc):
                log.warning("cannot keep a storage reserve at %s: %s", self.path, exc)
            return False
        return True

    def disk_full(self, *, quiet: bool = False) -> None:
        """A commit failed for lack of space: free the reserve and refuse new mail (said in
        one log line; `quiet` at start-up, where `announce` says it once the store opened)."""
        if self.full:
            return
        self.full = True
        self._checked = self.clock()
        self._free_then = _free(self.path.parent)
        self._freed = self.path.exists()
        with contextlib.suppress(OSError):
            self.path.unlink()
        if not quiet:
            self.announce()

    def announce(self) -> None:
        if not self.full:
            return
        free, freed = self._free_then, self._freed
        log.error(
            "storage full: the file system of %s has %d bytes free; new mail is refused "
            "(507), reads go on%s",
            self.path.parent,
            free,
            f" in the {self.size}-byte reserve" if freed else "",
        )

    def still_full(self) -> bool:
        """In full mode, whether it still is (checks the file system every `recheck`
        seconds and takes the reserve back once there is room for it twice over)."""
        if not self.full:
            return False
        now = self.clock()
        if now - self._checked < self.recheck:
            return True
        self._checked = now
        if _free(self.path.parent) >= 2 * self.size and self.take():
            self.full = False
            log.warning("storage has room again: taking new mail")
        return self.full


def checkpoint_pages(reserve: int, page_size: int) -> int:
    """Write-ahead-log pages between automatic checkpoints (`PRAGMA wal_autocheckpoint`)
    for a data dir keeping `reserve` bytes: every commit appends the pages it changed to
    the log, and only a checkpoint lets the log start over, so on a full disk the log may
    grow by what the next checkpoint needs and the checkpoint may grow the database file
    by as much. Half the reserve each, so that reads and deletes go on in it; SQLite's
    1000 at most (the 8 MiB default reserve keeps it), 16 at least."""
    return max(16, min(1000, reserve // max(page_size, 512) // 2))


def _free(directory: Path) -> int:
    try:
        stat = os.statvfs(directory)
    except OSError:
        return 0
    return stat.f_bavail * stat.f_frsize
