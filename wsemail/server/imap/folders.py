"""The authenticated state's commands: SELECT/EXAMINE, CREATE, DELETE, RENAME,
LIST/LSUB (with the special use of Sent, Drafts, Trash, Archive), STATUS, SUBSCRIBE, and
APPEND (to Sent and Drafts only). Folder names are wsemail's, in modified UTF-7."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace

from lxml import etree

from wsemail.core.provenance import DRAFT_RECORD
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import RemoteFault
from wsemail.protocol.message import new_message_id
from wsemail.protocol.soap import q
from wsemail.server.imap import records, render, utf7
from wsemail.server.imap.parser import (
    Refused,
    astring,
    atom,
    count,
)
from wsemail.server.imap.state import (
    FLAGS,
    No,
    SessionState,
    checked_name,
    wire_name,
)
from wsemail.server.mailbox import records as mailbox
from wsemail.server.mailbox.limits import check_quota, check_size
from wsemail.server.mailbox.names import DRAFTS, system_folder
from wsemail.server.pipeline import Environment
from wsemail.server.smtp.mime import from_mime
from wsemail.server.store import Tx, new_public_id

_SPECIAL = {"sent": "\\Sent", "Drafts": "\\Drafts", "Trash": "\\Trash", "Archive": "\\Archive"}


class FolderCommands(SessionState):
    async def do_ok(self, tag: str, args: list[object]) -> None:
        """SUBSCRIBE and UNSUBSCRIBE: every folder is subscribed; it must exist."""
        count(args, 1, 1, self.name)
        await self.folder_named(args[0])
        self.ok(tag)

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

    async def do_create(self, tag: str, args: list[object]) -> None:
        count(args, 1, 2, "CREATE")
        name = checked_name(self.decode_name(args[0]).rstrip("/"))

        def work(tx: Tx) -> None:
            if mailbox.resolve(tx, self.owner, name) is not None:
                raise No("[ALREADYEXISTS] a folder with that name exists")
            mailbox.create_folder(tx, self.owner, name)

        await self.transact(work)
        self.ok(tag)

    async def do_delete(self, tag: str, args: list[object]) -> None:
        count(args, 1, 1, "DELETE")
        name = checked_name(self.decode_name(args[0]))

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
        old, new = checked_name(self.decode_name(args[0])), checked_name(self.decode_name(args[1]))

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
        if folder not in ("sent", DRAFTS):
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
        owner, domain, server = self.owner, self.service.domain, self.service.server
        saved = SavedDraft(
            to=incoming.to, cc=incoming.cc, subject=incoming.subject, body=incoming.body
        )
        row = mailbox.NewRow(
            folder=folder,
            arrival=f"imap:{new_public_id()}",  # no arrival: delivery idempotency untouched
            message_id=message_id,
            sender=owner,
            to=incoming.to,
            cc=incoming.cc,
            subject=incoming.subject,
            date=incoming.date,
            body=incoming.body,
            seen="seen" in flags,
            flagged="flagged" in flags,
            answered="answered" in flags,
        )
        if folder == DRAFTS:  # a wsemail draft (the TUI opens it as one), the newest
            row = replace(row, arrival=DRAFTS, record=DRAFT_RECORD, draft=mailbox.draft_json(saved))

        def work(tx: Tx) -> tuple[int, int]:
            env = Environment(
                principal=owner,
                domain=domain,
                tx=tx,
                request=etree.Element(q("ImapAppend")),
                pipeline=server.pipeline,
                clock=server.clock,
                quota_bytes=server.config.quota_per_user_bytes,
            )
            check_size(env, row.size, "a message")
            seq = None
            if folder == "sent":  # the submission port stored it already: that copy
                seq = records.copy_in(tx, owner, folder, message_id, owner)
            if seq is None:
                check_quota(env, row.size)
                if folder == DRAFTS:  # saved again (same Message-ID): this is the draft now
                    older = mailbox.draft_by_message_id(tx, owner, message_id)
                    if older is not None:
                        records.retire_draft(tx, owner, older)
                seq = records.seq_of(tx, owner, mailbox.insert(tx, owner, row))
            state = records.synced(tx, owner, folder)
            if "draft" in flags or folder == DRAFTS:
                records.set_draft(tx, owner, folder, seq)
            uid = records.uid_of(tx, owner, folder, seq)
            assert uid is not None
            return state.uidvalidity, uid

        validity, uid = await self.transact(work)
        self.service.wake_owner(self.owner)
        self.ok(tag, f"[APPENDUID {validity} {uid}] APPEND completed")


def _pattern(text: str) -> Callable[[str], bool]:
    """LIST's `*` and `%` (the hierarchy is flat: both match anything); INBOX in any case."""
    source = "".join(".*" if c in "*%" else re.escape(c) for c in text) + r"\Z"
    regex = re.compile(source, re.DOTALL)
    inbox = re.compile(source, re.DOTALL | re.IGNORECASE)

    def match(name: str) -> bool:
        return bool((inbox if name == "INBOX" else regex).match(name))

    return match
