"""One IMAP connection (RFC 3501 states: not authenticated → authenticated → selected →
logout). Every command reads and writes the store in one unit of work of its own, so a
refused or failed command leaves nothing changed; the selected folder's UIDs come from
`records.sync`. Updates other sessions made (new mail, flags, expunges) are reported at
NOOP, CHECK, IDLE and after this session's own EXPUNGE/MOVE, never in the middle of a
FETCH, STORE or SEARCH by sequence number (RFC 3501 §7.4.1).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import secrets
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from wsemail.protocol.errors import AuthenticationFailed, RateLimited, RemoteFault, StoreError
from wsemail.protocol.message import Message, new_message_id
from wsemail.protocol.message import normalize_address as normalize
from wsemail.server.attachments import records as attachment_records
from wsemail.server.imap import records, render, sequence, utf7
from wsemail.server.imap.fetch import Item, parse_items
from wsemail.server.imap.parser import (
    Atom,
    Fatal,
    Raw,
    Refused,
    astring,
    atom,
    count,
    parse,
    read_command,
)
from wsemail.server.imap.search import Message as Candidate
from wsemail.server.imap.search import compile_criteria
from wsemail.server.mailbox import records as mailbox
from wsemail.server.mailbox.names import TRASH, check_name, system_folder
from wsemail.server.smtp.mime import from_mime
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.imap.service import Service

log = logging.getLogger("wsemail.imap")
FLAGS = b"(\\Answered \\Flagged \\Deleted \\Seen \\Draft)"
_FLAG_NAMES = {
    "\\SEEN": "seen",
    "\\FLAGGED": "flagged",
    "\\ANSWERED": "answered",
    "\\DELETED": "deleted",
    "\\DRAFT": "draft",
}
_KEYWORD = re.compile(r"^[!#$&'+-Z^-z|~]{1,64}$")
_SPECIAL = {"sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Archive": "\\Archive"}
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


class Session:
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

    def capabilities(self) -> bytes:
        caps = [b"IMAP4rev1", b"LITERAL+", b"UIDPLUS", b"MOVE", b"IDLE", b"SPECIAL-USE"]
        caps += [b"UNSELECT", b"NAMESPACE", b"ID", b"ENABLE"]
        if self.account is None:
            if not self.tls and self.service.starttls is not None:
                caps.append(b"STARTTLS")
            if self.may_login():
                caps.append(b"AUTH=PLAIN")
            else:
                caps.append(b"LOGINDISABLED")
        return b" ".join(caps)

    def may_login(self) -> bool:
        return self.tls or (
            self.service.loopback_plain_login and self.service.is_loopback(self.peer)
        )

    async def run(self) -> None:
        self.send(b"* OK [CAPABILITY " + self.capabilities() + b"] wsemail IMAP ready")
        try:
            while not self.logout:
                await self.drain()
                idle = self.service.autologout if self.account else self.service.login_timeout
                try:
                    raw = await read_command(
                        self.reader,
                        self.writer,
                        self.service.limits,
                        idle,
                        authenticated=self.account is not None,
                    )
                except Refused as exc:
                    self.send(exc.tag.encode() + b" BAD " + exc.reason.encode())
                    continue
                await self.command(raw)
        except Fatal as exc:
            self.send(b"* BYE " + str(exc).encode())
        except (ValueError, TimeoutError):  # a line too long or too late (AUTHENTICATE, IDLE)
            self.send(b"* BYE line too long or too late")
        except (EOFError, ConnectionError):
            pass
        finally:
            self.service.forget(self)
            try:
                await asyncio.wait_for(self.drain(), 5)
                self.writer.close()
            except (ConnectionError, TimeoutError, ssl.SSLError, asyncio.CancelledError):
                self.writer.transport.abort()

    async def command(self, raw: Raw) -> None:
        tag = raw.tag
        try:
            tag, name, args = parse(raw)
            handler = self.handler(name)
            await handler(tag, args)
        except Refused as exc:
            self.send(tag.encode() + b" BAD " + exc.reason.encode())
        except No as exc:
            self.send(tag.encode() + b" NO " + exc.text.encode())
        except RemoteFault as exc:
            self.send(tag.encode() + b" NO " + _oneline(exc.reason))
        except StoreError:
            log.exception("IMAP command %r failed in the store", raw.lines[0][:40])
            self.send(tag.encode() + b" NO [UNAVAILABLE] temporary server problem")

    def handler(self, name: str) -> Callable[[str, list[object]], Any]:
        anywhere = {
            "CAPABILITY": self.do_capability,
            "NOOP": self.do_noop,
            "LOGOUT": self.do_logout,
            "ID": self.do_id,
        }
        before = {
            "STARTTLS": self.do_starttls,
            "LOGIN": self.do_login,
            "AUTHENTICATE": self.do_authenticate,
        }
        after = {
            "SELECT": self.do_select,
            "EXAMINE": self.do_select,
            "CREATE": self.do_create,
            "DELETE": self.do_delete,
            "RENAME": self.do_rename,
            "SUBSCRIBE": self.do_ok,
            "UNSUBSCRIBE": self.do_ok,
            "LIST": self.do_list,
            "LSUB": self.do_list,
            "STATUS": self.do_status,
            "APPEND": self.do_append,
            "IDLE": self.do_idle,
            "NAMESPACE": self.do_namespace,
            "ENABLE": self.do_enable,
        }
        selected = {
            "CHECK": self.do_noop,
            "CLOSE": self.do_close,
            "UNSELECT": self.do_close,
            "EXPUNGE": self.do_expunge,
            "SEARCH": self.do_search,
            "FETCH": self.do_fetch,
            "STORE": self.do_store,
            "COPY": self.do_copy,
            "MOVE": self.do_copy,
            "UID": self.do_uid,
        }
        self.name = name
        if name in anywhere:
            return anywhere[name]
        if name in before:
            if self.account is not None:
                raise Refused("already logged in")
            return before[name]
        if name in after or name in selected:
            if self.account is None:
                raise Refused("log in first")
            if name in selected and self.folder is None:
                raise Refused("select a folder first")
            return after.get(name) or selected[name]
        raise Refused("unknown command")

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

    # any state ---------------------------------------------------------------------------
    async def do_capability(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "CAPABILITY")
        self.send(b"* CAPABILITY " + self.capabilities())
        self.ok(tag)

    async def do_noop(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, self.name)
        if self.folder is not None:
            await self.report_updates()
        self.ok(tag)

    async def do_logout(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "LOGOUT")
        self.send(b"* BYE logging out")
        self.ok(tag)
        self.logout = True

    async def do_id(self, tag: str, args: list[object]) -> None:
        count(args, 1, 1, "ID")
        self.send(b'* ID ("name" "wsemail")')
        self.ok(tag)

    async def do_ok(self, tag: str, args: list[object]) -> None:
        count(args, 1, 1, self.name)
        await self.folder_named(args[0])
        self.ok(tag)

    async def do_namespace(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "NAMESPACE")
        self.send(b'* NAMESPACE (("" "/")) NIL NIL')
        self.ok(tag)

    async def do_enable(self, tag: str, args: list[object]) -> None:
        self.send(b"* ENABLED")
        self.ok(tag)

    # logging in --------------------------------------------------------------------------
    async def do_starttls(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "STARTTLS")
        context = self.service.starttls
        if self.tls or context is None:
            raise Refused("STARTTLS is not available here")
        if self.reader._buffer:  # type: ignore[attr-defined]  # pipelined plaintext: refuse it
            raise Fatal("data after STARTTLS")
        self.ok(tag, "begin TLS")
        await self.drain()
        await self.writer.start_tls(context)
        self.tls = True

    async def do_login(self, tag: str, args: list[object]) -> None:
        count(args, 2, 2, "LOGIN")
        username = astring(args[0], "the user name")
        password = astring(args[1], "the password")
        await self.login(tag, username, password)

    async def do_authenticate(self, tag: str, args: list[object]) -> None:
        count(args, 1, 2, "AUTHENTICATE")
        if atom(args[0], "the mechanism").upper() != "PLAIN":
            raise No("[CANNOT] only AUTHENTICATE PLAIN")
        if not self.may_login():
            raise No("[PRIVACYREQUIRED] use TLS first")
        if len(args) == 2:
            answer = astring(args[1], "the initial response")
        else:
            self.send(b"+ ")
            await self.drain()
            line = await asyncio.wait_for(self.reader.readline(), self.service.limits.timeout)
            if len(line) > 4096 or not line.endswith(b"\n"):
                raise Fatal("authentication line too long")
            answer = line.strip().decode("ascii", "replace")
        if answer == "*":
            raise Refused("authentication cancelled")
        try:
            blob = base64.b64decode(answer.encode("ascii"), validate=True)
        except (binascii.Error, ValueError, UnicodeEncodeError) as exc:
            raise Refused("bad base64") from exc
        fields = blob.split(b"\0")
        if len(fields) != 3:
            raise Refused("PLAIN is: [authzid] NUL user NUL password")
        authzid, user, password = (f.decode("utf-8", "replace") for f in fields)
        if authzid and authzid != user:
            self.failed(user)
            raise No("[AUTHENTICATIONFAILED] authentication failed")
        await self.login(tag, user, password)

    def username(self, text: str) -> str:
        try:
            return normalize(text)
        except RemoteFault:
            return text[:320]

    def failed(self, text: str) -> None:
        self.service.server.auth.record_failure(self.username(text), self.peer)
        self.service.auth_failed += 1
        log.info("IMAP login failed for %r from %s", self.username(text), self.peer)

    async def login(self, tag: str, text: str, password: str) -> None:
        if not self.may_login():
            raise No("[PRIVACYREQUIRED] LOGIN needs TLS (STARTTLS) on this connection")
        username = self.username(text)
        auth = self.service.server.auth
        try:
            auth.check_rate(username, self.peer)
        except RateLimited:
            raise No("[UNAVAILABLE] too many failed logins, try again later") from None
        try:
            user = await self.service.server.store.transact(lambda tx: tx.user(username))
            await auth.check_password(user, username, password)
        except AuthenticationFailed:
            self.failed(text)
            raise No("[AUTHENTICATIONFAILED] authentication failed") from None
        assert user is not None
        self.account = Account(user.address, user.key)
        self.service.register(self)
        log.info("IMAP login %r from %s", user.address, self.peer)
        self.ok(tag, "[CAPABILITY " + self.capabilities().decode() + "] logged in")

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
        check = _checked(name)
        found = await self.transact(lambda tx: mailbox.resolve(tx, self.owner, check))
        if found is None:
            raise No("[TRYCREATE] no such folder")
        return str(found)

    async def do_select(self, tag: str, args: list[object]) -> None:
        count(args, 1, 2, self.name)
        self.folder = None
        folder = await self.folder_named(args[0])
        state = await self.transact(lambda tx: records.synced(tx, self.owner, folder))
        self.folder, self.readonly = folder, self.name == "EXAMINE"
        self.load(state)
        self.send(b"* FLAGS " + FLAGS)
        permanent = b"()" if self.readonly else FLAGS
        self.send(b"* OK [PERMANENTFLAGS " + permanent + b"] flags kept")
        self.send(b"* %d EXISTS" % len(self.entries))
        self.send(b"* 0 RECENT")
        unseen = next((i + 1 for i, e in enumerate(self.entries) if not e.seen), None)
        if unseen is not None:
            self.send(b"* OK [UNSEEN %d] first unseen" % unseen)
        self.send(b"* OK [UIDVALIDITY %d] UIDs valid" % state.uidvalidity)
        self.send(b"* OK [UIDNEXT %d] predicted next UID" % state.uidnext)
        mode = "[READ-ONLY]" if self.readonly else "[READ-WRITE]"
        self.ok(tag, f"{mode} {self.name} completed")

    def load(self, state: records.FolderState) -> None:
        self.entries, self.fingerprint = state.entries, state.fingerprint
        self.uidvalidity, self.uidnext = state.uidvalidity, state.uidnext

    @property
    def uids(self) -> Sequence[int]:
        return self.entries.uids

    async def do_close(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, self.name)
        if self.name == "CLOSE" and not self.readonly:
            await self.expunge(None, report=False)
        self.folder = None
        self.entries, self.fingerprint = records.Entries(), None
        self.ok(tag)

    async def do_create(self, tag: str, args: list[object]) -> None:
        count(args, 1, 2, "CREATE")
        name = _checked(self.decode_name(args[0]).rstrip("/"))

        def work(tx: Tx) -> None:
            if mailbox.resolve(tx, self.owner, name) is not None:
                raise No("[ALREADYEXISTS] a folder with that name exists")
            mailbox.create_folder(tx, self.owner, name)

        await self.transact(work)
        self.ok(tag)

    async def do_delete(self, tag: str, args: list[object]) -> None:
        count(args, 1, 1, "DELETE")
        name = _checked(self.decode_name(args[0]))

        def work(tx: Tx) -> None:
            found = mailbox.resolve(tx, self.owner, name)
            if found is None:
                raise No("[NONEXISTENT] no such folder")
            if system_folder(found) is not None:
                raise No("[CANNOT] a system folder cannot be deleted")
            if mailbox.count_in(tx, self.owner, found):
                raise No("[CANNOT] the folder is not empty: move its messages first")
            mailbox.delete_folder(tx, self.owner, found)

        await self.transact(work)
        self.ok(tag)

    async def do_rename(self, tag: str, args: list[object]) -> None:
        count(args, 2, 2, "RENAME")
        old, new = _checked(self.decode_name(args[0])), _checked(self.decode_name(args[1]))

        def work(tx: Tx) -> None:
            found = mailbox.resolve(tx, self.owner, old)
            if found is None:
                raise No("[NONEXISTENT] no such folder")
            if system_folder(found) is not None:
                raise No("[CANNOT] a system folder cannot be renamed")
            taken = mailbox.resolve(tx, self.owner, new)
            if taken is not None and taken.casefold() != found.casefold():
                raise No("[ALREADYEXISTS] a folder with that name exists")
            mailbox.rename_folder(tx, self.owner, found, new)

        await self.transact(work)
        self.ok(tag)

    async def do_list(self, tag: str, args: list[object]) -> None:
        count(args, 2, 2, self.name)
        reference = astring(args[0], "the reference")
        pattern = astring(args[1], "the pattern")
        kind = self.name.encode()
        if not pattern:
            self.send(b"* " + kind + b' (\\Noselect) "/" ""')
            self.ok(tag)
            return
        try:
            wanted = _pattern(utf7.decode(reference + pattern))
        except ValueError as exc:
            raise Refused(str(exc)) from exc
        folders = await self.transact(lambda tx: mailbox.folders(tx, self.owner))
        for info in folders:
            shown = {"inbox": "INBOX", "sent": "Sent"}.get(info.name, info.name)
            if not wanted(shown):
                continue
            attrs = [b"\\HasNoChildren"]
            special = _SPECIAL.get(info.name)
            if special and kind == b"LIST":
                attrs.append(special.encode())
            line = b"* " + kind + b" (" + b" ".join(attrs) + b') "/" '
            self.send(line + render.string(wire_name(info.name)))
        self.ok(tag)

    async def do_status(self, tag: str, args: list[object]) -> None:
        count(args, 2, 2, "STATUS")
        items = args[1]
        if not isinstance(items, list) or not items:
            raise Refused("STATUS needs a list of items")
        names = [atom(i, "a STATUS item").upper() for i in items]
        if any(n not in ("MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN") for n in names):
            raise Refused("unknown STATUS item")
        folder = await self.folder_named(args[0])
        total, unseen, uidnext, validity = await self.transact(
            lambda tx: records.peek_state(tx, self.owner, folder)
        )
        values = {
            "MESSAGES": total,
            "RECENT": 0,
            "UIDNEXT": uidnext,
            "UIDVALIDITY": validity,
            "UNSEEN": unseen,
        }
        body = " ".join(f"{n} {values[n]}" for n in names)
        self.send(b"* STATUS " + render.string(wire_name(folder)) + f" ({body})".encode())
        self.ok(tag)

    # APPEND ------------------------------------------------------------------------------
    async def do_append(self, tag: str, args: list[object]) -> None:
        count(args, 2, 4, "APPEND")
        data = args[-1]
        if not isinstance(data, bytes):
            raise Refused("APPEND takes the message as a literal")
        flags: list[str] = []
        if len(args) >= 3 and isinstance(args[1], list):
            flags = self.flag_names(args[1])
        elif len(args) == 4 or len(args) == 3 and not isinstance(args[1], bytes):
            raise Refused("APPEND is: folder [(flags)] [date-time] literal")
        if len(args) == 4 and not isinstance(args[2], bytes):
            raise Refused("APPEND's date is a quoted string")
        folder = await self.folder_named(args[0])
        if folder not in ("sent", "Drafts"):
            raise No("[CANNOT] APPEND only to Sent and Drafts (mail arrives by delivery)")
        try:
            incoming = from_mime(data)
        except RemoteFault as exc:
            raise No("[CANNOT] " + exc.reason) from None
        if any(p.keep for p in incoming.parts):
            raise No("[CANNOT] attachments cannot be appended: send them with wsemail")
        if incoming.sender is not None and incoming.sender != self.owner:
            raise No(f"[CANNOT] the From header must be your address {self.owner}")
        message_id = incoming.message_id or new_message_id(self.service.domain)
        body = incoming.body
        message = Message(
            id="",
            message_id=message_id,
            folder=folder,
            sender=self.owner,
            to=incoming.to,
            cc=incoming.cc,
            subject=incoming.subject,
            date=incoming.date,
            size=len(body.encode()) + len(incoming.subject.encode()),
            seen="seen" in flags,
            body=body,
            flagged="flagged" in flags,
            answered="answered" in flags,
        )

        def work(tx: Tx) -> tuple[int, int]:
            seq = None
            if folder == "sent":  # the submission port stored it already: that copy
                seq = records.copy_in(tx, self.owner, folder, message_id, self.owner)
            if seq is None:
                seq = records.append(tx, self.owner, folder, message, _new_id())
            state = records.synced(tx, self.owner, folder)
            if "draft" in flags or folder == "Drafts":
                records.set_draft(tx, self.owner, folder, seq)
            uid = records.uid_of(tx, self.owner, folder, seq)
            assert uid is not None
            return state.uidvalidity, uid

        validity, uid = await self.transact(work)
        self.service.wake_owner(self.owner)
        self.ok(tag, f"[APPENDUID {validity} {uid}] APPEND completed")

    # selected state ----------------------------------------------------------------------
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

    async def do_uid(self, tag: str, args: list[object]) -> None:
        if not args:
            raise Refused("UID needs a command")
        name = atom(args[0], "the UID command").upper()
        handlers = {
            "FETCH": self.do_fetch,
            "STORE": self.do_store,
            "COPY": self.do_copy,
            "MOVE": self.do_copy,
            "SEARCH": self.do_search,
            "EXPUNGE": self.do_expunge,
        }
        if name not in handlers:
            raise Refused("unknown UID command")
        self.name = name
        await handlers[name](tag, args[1:], by_uid=True)

    # FETCH -------------------------------------------------------------------------------
    async def do_fetch(self, tag: str, args: list[object], by_uid: bool = False) -> None:
        count(args, 2, 3, "FETCH")
        items = parse_items(args[1])
        if len(args) == 3 and not isinstance(args[2], list):
            raise Refused("FETCH modifiers are a list")
        indexes = self.chosen(args[0], by_uid)
        if by_uid and not any(i.kind == "UID" for i in items):
            items.insert(0, fetch_uid())
        await self.fetch(indexes, items)
        self.ok(tag, f"{'UID ' if by_uid else ''}FETCH completed")

    async def fetch(self, indexes: list[int], items: list[Item]) -> None:
        folder, owner = self.folder, self.owner
        assert folder is not None
        kinds = {i.kind for i in items}
        needs_rows = bool(kinds - {"UID", "FLAGS"})
        needs_body = bool(
            kinds & {"SECTION", "RFC822", "RFC822.HEADER", "RFC822.TEXT", "BODYSTRUCTURE", "BODY"}
        )
        sets_seen = not self.readonly and any(i.sets_seen for i in items)
        chosen = [self.entries[i] for i in indexes]
        seqs = [e.seq for e in chosen]
        rows: dict[int, records.Row] = {}
        refs: dict[int, list[Any]] = {}
        if needs_rows:
            size_only = "RFC822.SIZE" in kinds and not needs_body

            def read(tx: Tx) -> tuple[dict[int, records.Row], dict[int, list[Any]]]:
                found = records.rows(tx, owner, folder, seqs, body=needs_body)
                if size_only:
                    missing = [s for s, r in found.items() if r.rendered_size is None]
                    if missing:
                        found.update(records.rows(tx, owner, folder, missing, body=True))
                return found, self.local_refs(tx, found)

            rows, refs = await self.transact(read)
        if sets_seen:
            unseen = [e.seq for e in chosen if not e.seen]
            if unseen:
                await self.transact(
                    lambda tx: records.set_flags(tx, owner, folder, unseen, {"seen": True})
                )
                for index in indexes:
                    entry = self.entries[index]
                    if not entry.seen:
                        self.entries[index] = replace(entry, seen=True)
        sizes: dict[int, int] = {}
        for index in indexes:
            entry = self.entries[index]
            row = rows.get(entry.seq)
            if needs_rows and row is None:
                continue  # expunged by another session meanwhile
            parts: list[bytes] = []
            data: bytes | None = None
            flags_done = False
            for item in items:
                kind = item.kind
                if kind == "UID":
                    parts.append(b"UID %d" % entry.uid)
                elif kind == "FLAGS":
                    parts.append(b"FLAGS " + flag_list(entry))
                    flags_done = True
                elif kind == "INTERNALDATE":
                    assert row is not None
                    parts.append(b"INTERNALDATE " + render.string(render.internal_date(row.date)))
                elif kind == "ENVELOPE":
                    assert row is not None
                    parts.append(b"ENVELOPE " + render.envelope(row))
                elif kind == "RFC822.SIZE":
                    assert row is not None
                    size = row.rendered_size
                    if size is None:
                        data = data or self.data(row, refs.get(row.seq, []))
                        size = len(data)
                        sizes[row.seq] = size
                    parts.append(b"RFC822.SIZE %d" % size)
                else:
                    assert row is not None
                    data = data or self.data(row, refs.get(row.seq, []))
                    if row.rendered_size is None:
                        sizes[row.seq] = len(data)
                    parts.append(self.body_item(item, data))
            if sets_seen and not flags_done:
                parts.append(b"FLAGS " + flag_list(entry))
            self.send(b"* %d FETCH (" % (index + 1) + b" ".join(parts) + b")")
            if self.pending_bytes > 1 << 20:
                await self.drain()
        if sizes:
            await self.transact(lambda tx: records.remember_size(tx, owner, folder, sizes))

    def local_refs(self, tx: Tx, rows: dict[int, records.Row]) -> dict[int, list[Any]]:
        """Attachment references of local messages (relayed ones carry theirs signed)."""
        found: dict[int, list[Any]] = {}
        for seq, row in rows.items():
            if not row.has_attachment or not row.body and row.signed_xml is None:
                continue
            if row.signed_xml is not None:
                continue
            found[seq] = [
                self.service.reference(blob)
                for blob in attachment_records.for_message(tx, row.message_id)
                if blob.owner == self.owner
                or attachment_records.is_recipient(tx, blob.guid, self.owner)
            ]
        return found

    def loader(self, row: records.Row | None, refs: dict[int, list[Any]]) -> Callable[[], bytes]:
        def load() -> bytes:
            return b"" if row is None else self.data(row, refs.get(row.seq, []))

        return load

    def data(self, row: records.Row, refs: list[Any]) -> bytes:
        return self.service.rendered(row, self.owner, refs)

    def body_item(self, item: Item, data: bytes) -> bytes:
        if item.kind == "RFC822":
            return b"RFC822 " + render.string(data)
        if item.kind == "RFC822.HEADER":
            return b"RFC822.HEADER " + render.string(render.section(data, "HEADER", []))
        if item.kind == "RFC822.TEXT":
            return b"RFC822.TEXT " + render.string(render.section(data, "TEXT", []))
        if item.kind in ("BODYSTRUCTURE", "BODY"):
            structure = render.bodystructure(render.split(data), item.kind == "BODYSTRUCTURE")
            return item.kind.encode() + b" " + structure
        content = render.section(data, item.section, item.fields)
        if item.partial is not None:
            start, length = item.partial
            content = content[start : start + length]
        return item.label() + b" " + b"{%d}\r\n" % len(content) + content

    # STORE -------------------------------------------------------------------------------
    def flag_names(self, values: list[object]) -> list[str]:
        names = []
        for value in values:
            text = atom(value, "a flag")
            known = _FLAG_NAMES.get(text.upper())
            if known is not None:
                names.append(known)
            elif text.startswith("\\") or not _KEYWORD.match(text):
                raise Refused(f"unknown flag {text[:30]!r}")
            # keywords are not kept (PERMANENTFLAGS has no \*): ignored
        return names

    async def do_store(self, tag: str, args: list[object], by_uid: bool = False) -> None:
        count(args, 3, 3, "STORE")
        if self.readonly:
            raise No("[READ-ONLY] the folder was opened with EXAMINE")
        mode = atom(args[1], "the STORE item").upper()
        silent = mode.endswith(".SILENT")
        mode = mode.removesuffix(".SILENT")
        if mode not in ("FLAGS", "+FLAGS", "-FLAGS"):
            raise Refused("STORE takes FLAGS, +FLAGS or -FLAGS")
        values = args[2] if isinstance(args[2], list) else [args[2]]
        names = set(self.flag_names(values))
        indexes = self.chosen(args[0], by_uid)
        folder, owner = self.folder, self.owner
        assert folder is not None
        if mode == "FLAGS":
            changes = {n: n in names for n in _FLAG_NAMES.values()}
        else:
            changes = {n: mode == "+FLAGS" for n in names}
        if changes and indexes:
            seqs = [self.entries[i].seq for i in indexes]
            await self.transact(lambda tx: records.set_flags(tx, owner, folder, seqs, changes))
        for index in indexes:
            entry = self.entries[index]
            self.entries[index] = updated = replace(entry, **changes)
            if not silent:
                uid = b" UID %d" % entry.uid if by_uid else b""
                self.send(b"* %d FETCH (FLAGS %s%s)" % (index + 1, flag_list(updated), uid))
        self.service.wake_owner(owner, but=self)
        self.ok(tag, f"{'UID ' if by_uid else ''}STORE completed")

    # COPY / MOVE -------------------------------------------------------------------------
    async def do_copy(self, tag: str, args: list[object], by_uid: bool = False) -> None:
        command = self.name
        count(args, 2, 2, command)
        if command == "MOVE" and self.readonly:
            raise No("[READ-ONLY] the folder was opened with EXAMINE")
        indexes = self.chosen(args[0], by_uid)
        target = await self.folder_named(args[1])
        source, owner = self.folder, self.owner
        assert source is not None
        chosen = [self.entries[i] for i in indexes]

        def work(tx: Tx) -> tuple[int, list[int], list[int]]:
            targets: list[int] = []
            ids = records.public_ids(tx, owner, [e.seq for e in chosen])
            present = [e for e in chosen if e.seq in ids]
            if command == "MOVE":
                if target != source:
                    mailbox.move(tx, owner, [ids[e.seq] for e in present], target)
                targets = [e.seq for e in present]
            else:
                trashed_at = tx.now if target == TRASH else None
                for entry in present:
                    public_id = _new_id()
                    targets.append(
                        records.copy(tx, owner, entry.seq, target, public_id, trashed_at)
                    )
            state = records.synced(tx, owner, target)
            by_seq = {e.seq: e.uid for e in state.entries}
            return state.uidvalidity, [e.uid for e in present], [by_seq[s] for s in targets]

        if not chosen:
            self.ok(tag, f"{command} completed (nothing to do)")
            return
        validity, old, new = await self.transact(work)
        self.service.wake_owner(owner, but=self)
        code = f"[COPYUID {validity} {_uid_set(old)} {_uid_set(new)}]" if old else ""
        if command == "MOVE":
            if target != source:
                self.send(f"* OK {code} moved".encode())
                await self.report_updates()
            self.ok(tag, f"{'UID ' if by_uid else ''}MOVE completed")
            return
        self.ok(tag, f"{code} {'UID ' if by_uid else ''}COPY completed".strip())

    # EXPUNGE -----------------------------------------------------------------------------
    async def do_expunge(self, tag: str, args: list[object], by_uid: bool = False) -> None:
        count(args, 1 if by_uid else 0, 1 if by_uid else 0, "EXPUNGE")
        if self.readonly:
            raise No("[READ-ONLY] the folder was opened with EXAMINE")
        only = None
        if by_uid:
            only = {self.uids[i] for i in self.chosen(args[0], True)}
        await self.expunge(only, report=True)
        self.ok(tag, "EXPUNGE completed")

    async def expunge(self, only: set[int] | None, *, report: bool) -> None:
        """Messages flagged \\Deleted go to Trash (in Trash, or already there: for good)."""
        folder, owner = self.folder, self.owner
        assert folder is not None
        doomed = [e for e in self.entries if e.deleted and (only is None or e.uid in only)]
        if doomed:

            def work(tx: Tx) -> None:
                current = records.synced(tx, owner, folder)
                still = {e.seq for e in current.entries if e.deleted}
                seqs = [e.seq for e in doomed if e.seq in still]
                if folder == TRASH:
                    records.delete_for_good(tx, owner, seqs)
                    return
                rows = records.rows(tx, owner, folder, seqs, body=False)
                ids = records.public_ids(tx, owner, seqs)
                to_trash, gone = [], []
                for seq in seqs:
                    row = rows.get(seq)
                    if row is None:
                        continue
                    if records.copy_in(tx, owner, TRASH, row.message_id, row.sender) is not None:
                        gone.append(seq)
                    else:
                        to_trash.append(ids[seq])
                mailbox.move(tx, owner, to_trash, TRASH)
                records.delete_for_good(tx, owner, gone)

            await self.transact(work)
            self.service.wake_owner(owner, but=self)
        if report:
            await self.report_updates()

    # SEARCH ------------------------------------------------------------------------------
    async def do_search(self, tag: str, args: list[object], by_uid: bool = False) -> None:
        args = list(args)
        if len(args) >= 2 and isinstance(args[0], Atom) and args[0].upper() == "CHARSET":
            charset = astring(args[1], "the charset").upper()
            if charset not in ("UTF-8", "US-ASCII"):
                raise No("[BADCHARSET (UTF-8 US-ASCII)] unknown charset")
            args = args[2:]
        predicate, needs = compile_criteria(args, len(self.entries), self.uids)
        folder, owner = self.folder, self.owner
        assert folder is not None
        rows: dict[int, records.Row] = {}
        refs: dict[int, list[Any]] = {}
        if needs.rows:
            seqs = [e.seq for e in self.entries]

            def read(tx: Tx) -> tuple[dict[int, records.Row], dict[int, list[Any]]]:
                found = records.rows(tx, owner, folder, seqs, body=needs.body)
                return found, self.local_refs(tx, found) if needs.body else {}

            rows, refs = await self.transact(read)
        hits: list[int] = []
        for number, entry in enumerate(self.entries, start=1):
            row = rows.get(entry.seq)
            if needs.rows and row is None:
                continue
            candidate = Candidate(number, entry, row, self.loader(row, refs))
            if predicate(candidate):
                hits.append(entry.uid if by_uid else number)
        self.send(b"* SEARCH" + b"".join(b" %d" % h for h in hits))
        self.ok(tag, f"{'UID ' if by_uid else ''}SEARCH completed")

    # IDLE --------------------------------------------------------------------------------
    async def do_idle(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, "IDLE")
        self.send(b"+ idling")
        await self.drain()
        line_task = asyncio.ensure_future(self.reader.readline())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + IDLE_MAX
        try:
            while True:
                self.wake.clear()
                if self.folder is not None:
                    await self.report_updates()
                    await self.drain()
                waiter = asyncio.ensure_future(self.wake.wait())
                remaining = deadline - loop.time()
                if remaining <= 0:
                    waiter.cancel()
                    raise Fatal("IDLE for too long")
                done, _ = await asyncio.wait(
                    {line_task, waiter},
                    timeout=min(self.service.idle_poll, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiter.cancel()
                if line_task in done:
                    break
        finally:
            if not line_task.done():
                line_task.cancel()
        line = line_task.result()
        if not line:
            raise EOFError
        if line.strip().upper() != b"DONE":
            raise Refused("IDLE ends with DONE")
        self.ok(tag, "IDLE terminated")


def fetch_uid() -> Item:
    return Item("UID")


def _checked(name: str) -> str:
    if system_folder(name) is not None:
        return name
    try:
        return check_name(name)
    except RemoteFault as exc:
        raise No("[CANNOT] " + exc.reason) from None


def _pattern(text: str) -> Callable[[str], bool]:
    """LIST's `*` and `%` (the hierarchy is flat: both match anything); INBOX in any case."""
    source = "".join(".*" if c in "*%" else re.escape(c) for c in text) + r"\Z"
    regex = re.compile(source, re.DOTALL)
    inbox = re.compile(source, re.DOTALL | re.IGNORECASE)

    def match(name: str) -> bool:
        return bool((inbox if name == "INBOX" else regex).match(name))

    return match


def _uid_set(uids: list[int]) -> str:
    return ",".join(str(u) for u in uids)


def _new_id() -> str:
    public_id = secrets.token_urlsafe(12)
    return "_" + public_id[1:] if public_id.startswith("-") else public_id


def _oneline(text: str) -> bytes:
    return " ".join(text.split())[:300].encode("utf-8", "replace")
