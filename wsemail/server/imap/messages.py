"""The selected state's commands: FETCH, STORE, COPY, MOVE, EXPUNGE, SEARCH (each also
as UID …), CLOSE/UNSELECT, and IDLE. Sequence numbers and UIDs index the session's own view
of the folder (`SessionState.entries`), brought up to date only where RFC 3501 allows."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from wsemail.server.attachments import records as attachment_records
from wsemail.server.imap import records, render
from wsemail.server.imap.fetch import Item, parse_items
from wsemail.server.imap.parser import (
    Atom,
    Fatal,
    Refused,
    astring,
    atom,
    count,
)
from wsemail.server.imap.search import Message as Candidate
from wsemail.server.imap.search import compile_criteria
from wsemail.server.imap.state import (
    FLAG_NAMES,
    IDLE_MAX,
    No,
    SessionState,
    flag_list,
    uid_set,
)
from wsemail.server.mailbox import records as mailbox
from wsemail.server.mailbox.names import TRASH
from wsemail.server.store import Tx, new_public_id


class MessageCommands(SessionState):
    async def do_close(self, tag: str, args: list[object]) -> None:
        count(args, 0, 0, self.name)
        if self.name == "CLOSE" and not self.readonly:
            await self.expunge(None, report=False)
        self.folder = None
        self.entries, self.fingerprint = records.Entries(), None
        self.ok(tag)

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
            changes = {n: n in names for n in FLAG_NAMES.values()}
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
                    public_id = new_public_id()
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
        code = f"[COPYUID {validity} {uid_set(old)} {uid_set(new)}]" if old else ""
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
        waiter: asyncio.Future[Any] | None = None
        try:
            while True:
                self.wake.clear()
                if self.folder is not None:
                    await self.report_updates()
                    await self.drain()
                waiting = asyncio.ensure_future(self.wake.wait())
                waiter = waiting
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise Fatal("IDLE for too long")
                done, _ = await asyncio.wait(
                    {line_task, waiting},
                    timeout=min(self.service.idle_poll, remaining),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                waiting.cancel()
                if line_task in done:
                    break
        finally:  # also when the session is cancelled (the server stopping) mid-wait
            for pending in (line_task, waiter):
                if pending is not None and not pending.done():
                    pending.cancel()
        line = line_task.result()
        if not line:
            raise EOFError
        if line.strip().upper() != b"DONE":
            raise Refused("IDLE ends with DONE")
        self.ok(tag, "IDLE terminated")


def fetch_uid() -> Item:
    return Item("UID")
