"""In charge of the on-demand attachment plug-in as one composite (DESIGN.md §5, §8):

- sending processor: a submitted message's `AttachmentId`s (finished uploads of the
  sender) are bound to the message and its recipients and replaced by references (server,
  URL, GUID, name, size, media type, SHA-256) that travel inside the signed message;
- extension `attachments` (password MAC, via `Extension`): BeginUpload, List, Audit,
  Revoke, Replace;
- top-level operations `IssueToken` and `FetchAttachment` and the upload / download
  streams (see `federated` and `streams`);
- the orphan sweep (at start and at most every `sweep_interval` seconds after uploads).

BeginUpload refuses, before any row or byte is stored: a size above `max_bytes`
(TooLarge); a size that would take the sender over the server's `[quota] per_user_bytes`
counting every upload of theirs stored, bound or announced (QuotaExceeded); a size that
does not fit on the attachment disk with `[quota] reserve_bytes` left over, after every
other announced upload (InsufficientStorage). Mail taken by the SMTP gateway passes the
same free-space check (`check_space`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lxml import etree
from starlette.types import Scope

from wsemail.protocol import soap
from wsemail.protocol.errors import (
    Forbidden,
    InsufficientStorage,
    NotFound,
    QuotaExceeded,
    RequestInvalid,
    TooLarge,
)
from wsemail.protocol.message import NAME_BYTES, AttachmentRef, Message
from wsemail.protocol.soap import element, parse_int, q, text_of, texts_of
from wsemail.server.attachments import federated, records
from wsemail.server.attachments.chunks import Blobs, ChunkStore
from wsemail.server.attachments.storage import BlobStore
from wsemail.server.attachments.streams import UPLOAD_PATH, Streams, base_url
from wsemail.server.operate.records import limit_for
from wsemail.server.pipeline import Environment, ExtensionProcessor, SendingProcessor, dispatch
from wsemail.server.sql import POSTGRESQL

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.attachments")
EXTENSION_ID = "attachments"
MAX_PER_MESSAGE = 32
_MEDIA_TYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")


def check_name(raw: str) -> str:
    """An attachment's display name: a plain file name, never a path, at most 255 UTF-8
    bytes (what file systems take)."""
    name = raw.strip()
    if (
        not name
        or len(name.encode("utf-8", "surrogatepass")) > NAME_BYTES
        or name in (".", "..")
        or any(c in name for c in "/\\")
        or any(ord(c) < 32 or ord(c) == 127 for c in name)
    ):
        raise RequestInvalid("an attachment name must be a plain file name, not a path")
    return name


class OnDemandAttachments(SendingProcessor, ExtensionProcessor):
    """On-demand attachments: stored here, fetched by recipients with federated identities."""

    name = "attachments"
    extension_id = EXTENSION_ID

    def __init__(
        self,
        directory: str | None = None,
        public_url: str | None = None,
        max_bytes: int = 8 << 30,
        token_lifetime: float = 3600,
        ticket_lifetime: float = 120,
        upload_window: float = 3600,
        orphan_after: float = 86400,
        sweep_interval: float = 600,
    ) -> None:
        self.directory = directory
        self.public_url = public_url
        self.max_bytes = int(max_bytes)
        self.token_lifetime = float(token_lifetime)
        self.ticket_lifetime = float(ticket_lifetime)
        self.upload_window = float(upload_window)
        self.orphan_after = float(orphan_after)
        self.sweep_interval = float(sweep_interval)
        self.server: Server | None = None
        self.blobs: Blobs | None = None
        self._last_sweep = 0.0
        self._sweeping = threading.Lock()

    # wiring -----------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        self.server = server
        server.store.ensure_schema(self.name, records.MIGRATIONS)
        root = Path(self.directory) if self.directory else server.config.data_dir / "attachments"
        # the bytes: files under the data dir on SQLite; chunk rows that every node of the
        # domain reads on PostgreSQL (the data dir keeps only the spool of running uploads)
        self.blobs = ChunkStore(server.store, root) if self._shared(server) else BlobStore(root)
        streams = Streams(server, self.blobs, self._url, self._maybe_sweep)

        async def issue(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
            return await federated.issue_token(srv, envelope, peer, self.token_lifetime)

        async def fetch(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
            return await federated.fetch_attachment(srv, envelope, peer, self.ticket_lifetime)

        server.operations["IssueToken"] = issue
        server.operations["FetchAttachment"] = fetch
        server.routes[UPLOAD_PATH] = streams.upload
        server.routes[federated.DOWNLOAD_PATH] = streams.download
        self.sweep(startup=True)

    @staticmethod
    def _shared(server: Any) -> bool:
        """The store is shared by several nodes (PostgreSQL)."""
        return bool(server.store.dialect == POSTGRESQL)

    def _url(self, scope: Scope) -> str:
        return self.public_url or base_url(scope)

    def own_url(self) -> str:
        """This server's SOAP endpoint for attachments stored outside an HTTP request (mail
        taken by the SMTP gateway): the `public_url` option, else the configured address."""
        if self.public_url:
            return self.public_url
        assert self.server is not None
        config = self.server.config
        scheme = "https" if config.tls_cert else "http"
        host = f"[{config.host}]" if ":" in config.host else config.host
        return f"{scheme}://{host}:{config.port}/wsemail"

    # orphan sweep -----------------------------------------------------------------------
    def sweep(self, *, startup: bool = False) -> int:
        """Forget uploads never sent (or, at start-up, interrupted) and remove their files.
        On a shared store another node's upload may be running: interrupted uploads are
        then forgotten once they are `orphan_after` old, like unsent ones."""
        assert self.server is not None and self.blobs is not None
        blobs = self.blobs
        interrupted = startup and not self._shared(self.server)
        with self._sweeping:
            self._last_sweep = time.monotonic()

            def work(tx: Any) -> set[str]:
                cutoff = tx.now - self.orphan_after
                stale = records.stale(tx, cutoff)
                if interrupted:
                    stale += records.interrupted(tx)
                for guid in stale:
                    records.forget(tx, guid)
                # chunk rows are swept by the database itself (ChunkStore.sweep)
                return records.live_guids(tx) if isinstance(blobs, BlobStore) else set()

            live = self.server.store.transact_sync(work)
            grace = None if startup else time.time() - self.orphan_after
            return blobs.sweep(live, tmp_before=grace)

    async def _maybe_sweep(self) -> None:
        if time.monotonic() - self._last_sweep > self.sweep_interval:
            self._last_sweep = time.monotonic()
            await asyncio.to_thread(self.sweep)

    # sending processor ------------------------------------------------------------------
    def process_outgoing(self, message: Message, env: Environment) -> None:
        submitted = env.request.find(q("Message"))
        ids = [] if submitted is None else [i.strip() for i in texts_of(submitted, "AttachmentId")]
        if not ids:
            return
        if len(ids) > MAX_PER_MESSAGE or len(set(ids)) != len(ids):
            raise RequestInvalid(f"at most {MAX_PER_MESSAGE} distinct attachments per message")
        recipients = list(dict.fromkeys([*message.recipients, env.principal]))  # Bcc too
        for guid in ids:
            blob = records.get(env.tx, guid) if len(guid) <= 64 else None
            if blob is None or blob.owner != env.principal or blob.state != "stored":
                raise RequestInvalid(f"no finished upload {guid[:64]!r} of yours to attach")
            records.bind(env.tx, guid, message.message_id, recipients)
            message.attachments.append(_ref(blob, env.domain))

    # extension --------------------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        handlers = {
            "BeginUpload": self._begin_upload,
            "List": self._list,
            "Audit": self._audit,
            "Revoke": self._revoke,
            "Replace": self._replace,
        }
        return dispatch(payload, handlers, env, "attachments")

    def _begin_upload(self, op: etree._Element, env: Environment) -> etree._Element:
        name = check_name(text_of(op, "Name") or "")
        media_type = (text_of(op, "MediaType") or "application/octet-stream").strip().lower()
        if not _MEDIA_TYPE.match(media_type):
            raise RequestInvalid("MediaType must look like type/subtype")
        size = parse_int(text_of(op, "Size"), "Size", 0, 2**63 - 1)
        if size > self.max_bytes:
            raise TooLarge(f"attachments are limited to {self.max_bytes} bytes")
        self.check_quota(env.tx, env.principal, size)
        self.check_space(env.tx, size)
        guid, ticket = records.create_upload(
            env.tx, env.principal, name, media_type, size, env.tx.now + self.upload_window
        )
        result = etree.Element(q("UploadTicket"))
        element(result, "Guid", guid)
        element(result, "Ticket", ticket)
        element(result, "Path", UPLOAD_PATH)
        return result

    def check_quota(self, tx: Any, owner: str, size: int) -> None:
        """QuotaExceeded unless `owner`'s uploads plus `size` fit the per-user quota."""
        assert self.server is not None
        # the account's own quota when one is set (wsemail user quota), else the default
        quota = limit_for(tx, owner, self.server.config.quota_per_user_bytes)
        records.lock_owner(tx, owner)  # nodes sharing a store: one check of owner at a time
        used = records.owner_bytes(tx, owner)
        if used + size > quota:
            raise QuotaExceeded(
                f"attachment quota: {used} of {quota} bytes used or announced, "
                f"{size} more do not fit"
            )

    def check_space(self, tx: Any, size: int) -> None:
        """InsufficientStorage unless `size` more bytes fit on the attachment disk after
        every announced upload, keeping the reserve free."""
        assert self.server is not None and self.blobs is not None
        reserve = self.server.config.quota_reserve_bytes
        free = shutil.disk_usage(self.blobs.root).free
        if records.announced_bytes(tx) + size + reserve > free:
            raise InsufficientStorage("not enough free space on this server for that size")

    def _blobs_of_message(self, op: etree._Element, env: Environment) -> list[records.Blob]:
        message_id = (text_of(op, "MessageId") or "").strip()
        if not message_id or len(message_id) > 300:
            raise RequestInvalid("a MessageId is required")
        return [
            b
            for b in records.for_message(env.tx, message_id)
            if b.owner == env.principal or records.is_recipient(env.tx, b.guid, env.principal)
        ]

    def _list(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("Attachments"))
        for blob in self._blobs_of_message(op, env):
            node = _ref(blob, env.domain).to_xml(result)
            element(node, "State", blob.state)
            if blob.replaced_by:
                element(node, "ReplacedBy", blob.replaced_by)
        return result

    def _audit(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("AuditLog"))
        for blob in self._blobs_of_message(op, env):
            if blob.owner != env.principal:
                raise Forbidden("only the sender sees who fetched an attachment")
            holder = element(result, "Attachment")
            element(holder, "Guid", blob.guid)
            element(holder, "Name", blob.name)
            element(holder, "State", blob.state)
            for address in records.recipients(env.tx, blob.guid):
                element(holder, "Recipient", address)
            for entry in records.audit_log(env.tx, blob.guid):
                event = element(holder, "Event")
                for key, value in entry.items():
                    event.set(key.replace("_", "-"), str(value))
        return result

    def _own_bound(self, env: Environment, guid: str) -> records.Blob:
        blob = records.get(env.tx, guid) if len(guid) <= 64 else None
        if blob is None or blob.owner != env.principal:
            raise NotFound("no such attachment of yours")
        if blob.state != "bound":
            raise RequestInvalid(f"the attachment is {blob.state}")
        return blob

    def _revoke(self, op: etree._Element, env: Environment) -> etree._Element:
        blob = self._own_bound(env, (text_of(op, "Guid") or "").strip())
        records.set_state(env.tx, blob.guid, "revoked")
        self._remove_after_commit(env, blob.guid)
        result = etree.Element(q("Revoked"))
        element(result, "Guid", blob.guid)
        return result

    def _replace(self, op: etree._Element, env: Environment) -> etree._Element:
        """`Old` is superseded by `New` (sent in a newer message to the same people)."""
        old = self._own_bound(env, (text_of(op, "Old") or "").strip())
        new = self._own_bound(env, (text_of(op, "New") or "").strip())
        if old.guid == new.guid:
            raise RequestInvalid("an attachment cannot replace itself")
        records.set_state(env.tx, old.guid, "superseded", replaced_by=new.guid)
        self._remove_after_commit(env, old.guid)
        result = etree.Element(q("Replaced"))
        element(result, "Old", old.guid)
        element(result, "New", new.guid)
        return result

    def _remove_after_commit(self, env: Environment, guid: str) -> None:
        blobs = self.blobs
        assert blobs is not None
        if isinstance(blobs, ChunkStore):  # rows: they go in the same transaction
            records.drop_chunks(env.tx, guid)
            return
        env.after_commit.append(lambda: blobs.remove(guid))


def _ref(blob: records.Blob, domain: str) -> AttachmentRef:
    return AttachmentRef(
        server=domain,
        url=blob.base_url,
        guid=blob.guid,
        name=blob.name,
        size=blob.size,
        media_type=blob.media_type,
        sha256=blob.sha256 or "",
    )
