"""What every part of an IMAP session shares (`SessionState`): the connection, the
account, the selected folder held compactly, writing answers, one unit of work per
command, and telling the client what changed in the selected folder. The commands live in
`folders` (authenticated state), `messages` (selected state) and `session` (the rest)."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wsemail.protocol.errors import AuthenticationFailed, RemoteFault
from wsemail.server.imap import records, sequence, utf7
from wsemail.server.imap.parser import (
    Refused,
    astring,
    atom,
)
from wsemail.server.mailbox import records as mailbox
from wsemail.server.mailbox.names import check_name, system_folder
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.imap.service import Service
log = logging.getLogger("wsemail.imap")
FLAGS = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
FLAG_NAMES = {
    "\\SEEN": "seen",
    "\\FLAGGED": "flagged",
    "\\ANSWERED": "answered",
    "\\DELETED": "deleted",
    "\\DRAFT": "draft",
}
KEYWORD = re.compile(r"^[!#$&'+-Z^-z|~]{1,64}$")
IDLE_MAX = 29 * 60.0


class No(Exception):  # noqa: N818 -- an answer: `<tag> NO <text>`
    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


@dataclass(frozen=True)
class Account:
    address: str
    key: bytes


def wire_name(folder: str) -> str:
    return utf7.encode({"inbox": "INBOX", "sent": "Sent"}.get(folder, folder))


def flag_list(entry: records.Entry) -> bytes:
    names = [
        name
        for name, on in (
            (b"\\Seen", entry.seen),
            (b"\\Flagged", entry.flagged),
            (b"\\Answered", entry.answered),
            (b"\\Deleted", entry.deleted),
            (b"\\Draft", entry.draft),
        )
        if on
    ]
    return b"(" + b" ".join(names) + b")"


class SessionState:
    name = ""

    def __init__(
        self,
        service: Service,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls: bool,
    ) -> None:
        self.service = service
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        self.tls = tls
        self.account: Account | None = None
        self.folder: str | None = None
        self.readonly = False
        self.entries = records.Entries()
        self.fingerprint: tuple[object, ...] | None = None
        self.uidvalidity = 0
        self.uidnext = 1
        self.wake = asyncio.Event()
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.logout = False

    # plumbing ----------------------------------------------------------------------------
    def send(self, data: bytes) -> None:
        """Queue a line; `drain` writes what is queued in one go (a sync is 10,000 lines)."""
        self.pending.append(data)
        self.pending.append(b"\r\n")
        self.pending_bytes += len(data) + 2

    async def drain(self) -> None:
        if self.pending:
            self.writer.write(b"".join(self.pending))
            self.pending.clear()
            self.pending_bytes = 0
        await self.writer.drain()

    def ok(self, tag: str, text: str = "done") -> None:
        self.send(tag.encode() + b" OK " + text.encode())

    @property
    def owner(self) -> str:
        assert self.account is not None
        return self.account.address

    async def transact(self, work: Callable[[Tx], Any]) -> Any:
        account = self.account

        def unit(tx: Tx) -> Any:
            if account is not None:
                user = tx.user(account.address)
                if user is None or user.key != account.key:
                    raise AuthenticationFailed("the account was removed or its password changed")
            return work(tx)

        try:
            return await self.service.server.store.transact(unit)
        except AuthenticationFailed:
            self.send(b"* BYE log in again")
            self.logout = True
            raise No("log in again") from None

    # folders -----------------------------------------------------------------------------
    def decode_name(self, value: object) -> str:
        raw = astring(value, "a folder name")
        try:
            name = utf7.decode(raw)
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        if name.upper() == "INBOX":
            return "inbox"
        return name

    async def folder_named(self, value: object) -> str:
        name = self.decode_name(value)
        check = checked_name(name)
        found = await self.transact(lambda tx: mailbox.resolve(tx, self.owner, check))
        if found is None:
            raise No("[TRYCREATE] no such folder")
        return str(found)

    def load(self, state: records.FolderState) -> None:
        self.entries, self.fingerprint = state.entries, state.fingerprint
        self.uidvalidity, self.uidnext = state.uidvalidity, state.uidnext

    @property
    def uids(self) -> Sequence[int]:
        return self.entries.uids

    def flag_names(self, values: list[object]) -> list[str]:
        names = []
        for value in values:
            text = atom(value, "a flag")
            known = FLAG_NAMES.get(text.upper())
            if known is not None:
                names.append(known)
            elif text.startswith("\\") or not KEYWORD.match(text):
                raise Refused(f"unknown flag {text[:30]!r}")
            # keywords are not kept (PERMANENTFLAGS has no \*): ignored
        return names

    async def report_updates(self) -> None:
        """Tell the client what changed in the selected folder since it last heard:
        EXPUNGE (highest first), EXISTS, and FETCH FLAGS of messages others changed."""
        folder, owner, known = self.folder, self.owner, self.fingerprint
        assert folder is not None
        state = await self.transact(lambda tx: records.sync(tx, owner, folder, unless=known))
        if state is None:
            return
        self.fingerprint, self.uidnext = state.fingerprint, state.uidnext
        fresh = state.entries
        where = {uid: index for index, uid in enumerate(fresh.uids)}
        old = self.entries
        for index in range(len(old) - 1, -1, -1):
            if old.uids[index] not in where:
                self.send(b"* %d EXPUNGE" % (index + 1))
        kept = records.Entries()
        changed: list[int] = []
        for index in range(len(old)):
            found = where.pop(old.uids[index], None)
            if found is None:
                continue
            if fresh.bits[found] != old.bits[index]:
                changed.append(len(kept))
            kept.append(fresh.uids[found], fresh.seqs[found], fresh.bits[found])
        for found in sorted(where.values()):  # new to this session: always higher UIDs
            kept.append(fresh.uids[found], fresh.seqs[found], fresh.bits[found])
        self.entries = kept
        if where:
            self.send(b"* %d EXISTS" % len(kept))
        for index in changed:
            entry = kept[index]
            self.send(b"* %d FETCH (UID %d FLAGS %s)" % (index + 1, entry.uid, flag_list(entry)))

    def chosen(self, text: object, by_uid: bool) -> list[int]:
        """0-based indexes into the selected folder of a sequence or UID set."""
        ranges = sequence.parse(atom(text, "a sequence set"))
        if by_uid:
            return sequence.select_uids(ranges, self.uids)
        if not self.entries:
            raise No("the folder is empty")
        for low, high in ranges:
            if (low > len(self.entries)) or (high > len(self.entries)):
                raise Refused("no such message sequence number")
        return [n - 1 for n in sequence.select_seqnums(ranges, len(self.entries))]


def checked_name(name: str) -> str:
    if system_folder(name) is not None:
        return name
    try:
        return check_name(name)
    except RemoteFault as exc:
        raise No("[CANNOT] " + exc.reason) from None


def uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in uids)


def oneline(text: str) -> bytes:
    return " ".join(text.split())[:300].encode("utf-8", "replace")
