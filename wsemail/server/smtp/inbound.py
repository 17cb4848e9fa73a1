"""In charge of incoming legacy mail: an aiosmtpd listener that takes Internet mail for
local users only. Never an open relay: recipients in other domains and unknown local users
are refused at RCPT time. A sender (MAIL FROM or header From) in this domain or in any
wsemail domain (one with a static route or a `_wsemail._tcp` SRV record) is refused: such
mail arrives signed by `Deliver`, never over plain SMTP. Accepted mail is checked for DKIM
and SPF, converted from MIME, and stored with "legacy" provenance (origin `smtp:<peer>` and a
`LegacyMessage` record of what was checked) so no reader takes it for signed wsemail.
Size limit (SIZE and DATA), and a per-peer limit on messages per time window.

Attachments (named or non-text MIME parts) are kept through the on-demand attachments
plug-in when it is loaded: each is written under a server-generated name (tmp → fsync →
rename → fsync dir) before the unit of work that delivers the message binds it to the
message and its local recipients, who fetch it like any on-demand attachment. Too many or
too large attachments refuse the whole message; a refused message leaves no file or row.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from lxml import etree

from wsemail.protocol.errors import (
    InsufficientStorage,
    NoRoute,
    Rejected,
    RemoteFault,
    RoutingError,
    StoreError,
)
from wsemail.protocol.message import MAX_RECIPIENTS, Message, domain_of, new_message_id
from wsemail.protocol.message import normalize_address as normalize
from wsemail.protocol.soap import element, q
from wsemail.server.attachments import OnDemandAttachments, records
from wsemail.server.controller import bind
from wsemail.server.mapping import claim_of
from wsemail.server.operations import deliver_locally
from wsemail.server.pipeline import Environment
from wsemail.server.ratelimit import RateLimiter, peer_key
from wsemail.server.smtp import dkim_keys, dmarc, spf
from wsemail.server.smtp.mime import Incoming, Part, from_mime
from wsemail.server.smtp.mx import MailDns
from wsemail.server.store import BatchStore, Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.smtp.inbound")
ORIGIN_PREFIX = "smtp:"


@dataclass(frozen=True)
class Checks:
    peer: str
    helo: str
    mail_from: str
    dkim: dkim_keys.DkimResult
    spf: spf.SpfResult
    dmarc: dmarc.DmarcResult = dmarc.DmarcResult("none")

    def temporary(self) -> str | None:
        """Which check could not be made now (DNS failed), if any: the SMTP answer is then
        451 and the sender tries again; a temporary cause never refuses mail for good."""
        for name, result in (("DKIM", self.dkim), ("SPF", self.spf), ("DMARC", self.dmarc)):
            if result.result == "temperror":
                return f"{name}: {result.reason}"
        return None


def legacy_marker(checks: Checks, incoming: Incoming) -> bytes:
    """The `LegacyMessage` record stored as the message's provenance (see
    `wsemail.core.provenance`): what the gateway saw and checked; it is not a signature."""
    root = etree.Element(q("LegacyMessage"), nsmap={"w": "urn:wsemail"})
    element(root, "Peer", checks.peer)
    element(root, "Helo", checks.helo)
    element(root, "MailFrom", checks.mail_from)
    dkim = element(root, "Dkim", checks.dkim.reason)
    dkim.set("result", checks.dkim.result)
    dkim.set("domain", checks.dkim.domain)
    spf_node = element(root, "Spf", checks.spf.reason)
    spf_node.set("result", checks.spf.result)
    spf_node.set("domain", checks.spf.domain)
    dmarc_node = element(root, "Dmarc", checks.dmarc.reason)
    dmarc_node.set("result", checks.dmarc.result)
    dmarc_node.set("domain", checks.dmarc.domain)
    dmarc_node.set("policy", checks.dmarc.policy)
    for part in incoming.parts:
        node = element(root, "Part")
        node.set("type", part.content_type)
        node.set("filename", part.filename)
        node.set("size", str(part.size))
    return etree.tostring(root)


class Gateway:
    """The aiosmtpd handler: one instance per listener, shared by its sessions."""

    def __init__(
        self,
        server: Server,
        dns: MailDns,
        *,
        rate: int = 60,
        window: float = 60.0,
        max_attachment_bytes: int = 10 << 20,
        max_attachments: int = 32,
    ) -> None:
        self.server = server
        self.dns = dns
        self.domain = server.config.domain
        self.limiter = RateLimiter(rate, window)
        self.max_attachment_bytes = max_attachment_bytes
        self.max_attachments = max_attachments
        self.stored = 0

    def attachments(self) -> OnDemandAttachments | None:
        """The loaded on-demand attachments plug-in, if any (else parts are only listed)."""
        return loaded_attachments(self.server)

    def check_attachments(self, incoming: Incoming) -> str | None:
        """None if the attachments to keep are within the limits, else the SMTP reply."""
        kept = [p for p in incoming.parts if p.keep]
        if len(kept) > self.max_attachments:
            return f"552 5.3.4 at most {self.max_attachments} attachments per message"
        if any(p.size > self.max_attachment_bytes for p in kept):
            return f"552 5.3.4 attachments are limited to {self.max_attachment_bytes} bytes each"
        return None

    # policy -----------------------------------------------------------------------------
    async def is_wsemail_domain(self, domain: str) -> bool:
        """This domain, or one that speaks wsemail (static route or SRV record): mail from
        them comes signed over `Deliver`, never unauthenticated over SMTP."""
        domain = domain.lower()
        if domain == self.domain or domain in self.server.config.routes:
            return True
        federation = self.server.federation
        if federation is None:
            return False
        try:
            await federation.resolver.resolve(domain)
        except NoRoute:
            return False
        return True  # RoutingError propagates: the caller answers 451

    async def check_sender(self, address: str, where: str, peer: str) -> str | None:
        """None if `address` may send to us over SMTP, else the SMTP reply."""
        try:
            if await self.is_wsemail_domain(domain_of(address)):
                log.warning("refused forged %s %r from %s", where, address, peer)
                return (
                    f"550 5.7.1 {domain_of(address)} is a wsemail domain: its mail is not "
                    "accepted unauthenticated over SMTP"
                )
        except RoutingError:
            return "451 4.4.3 cannot check the sender's domain now, try again later"
        return None

    # SMTP hooks -------------------------------------------------------------------------
    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        peer = _peer(session)
        if not self.limiter.allow(peer_key(peer)):
            log.info("rate limit for %s", peer)
            return "450 4.7.0 too many messages from your address, try again later"
        if address.strip() in ("", "<>"):  # the null reverse-path of bounces (RFC 5321)
            address = "<>"  # aiosmtpd wants a true value before RCPT; read back as ""
        else:
            try:
                address = normalize(address)
            except RemoteFault:
                return "553 5.1.7 bad sender address"
            refused = await self.check_sender(address, "MAIL FROM", peer)
            if refused:
                return refused
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        try:
            address = normalize(address)
        except RemoteFault:
            return "553 5.1.3 bad recipient address"
        if domain_of(address) != self.domain:
            log.info("refused relaying to %r from %s", address, _peer(session))
            return "550 5.7.1 relaying denied: this server takes mail for its own domain only"
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 too many recipients"
        refused = await unknown_local_user(self.server, address)
        if refused:
            return refused
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        peer = _peer(session)
        data = envelope.original_content or b""
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        try:
            incoming = await asyncio.to_thread(from_mime, data)  # HTML to text takes CPU
        except RemoteFault as exc:
            log.info("unreadable message from %s: %s", peer, exc.reason)
            return "554 5.6.0 unreadable message"
        too_big = self.check_attachments(incoming)
        if too_big:
            log.info("refused message from %s: %s", peer, too_big)
            return too_big
        mail_from = str(envelope.mail_from or "").replace("<>", "")
        if incoming.sender is not None and incoming.sender != mail_from:
            refused = await self.check_sender(incoming.sender, "header From", peer)
            if refused:
                return refused
        helo = str(session.host_name or "")
        checks = await asyncio.to_thread(self.check, data, peer, helo, mail_from, incoming)
        temporary = checks.temporary()
        if temporary is not None:
            log.info("deferred mail from %r via %s: %s", mail_from, peer, temporary)
            return "451 4.4.3 cannot check the message's authentication now, try again later"
        try:
            public_ids = await self.store(incoming, list(envelope.rcpt_tos), checks)
        except Rejected as exc:
            log.info("refused message from %s: %s", peer, exc.reason)
            return f"550 5.7.1 {exc.reason}"[:500]
        except InsufficientStorage:  # a quota, or the disk (StorageFull): try later
            log.warning("no room for attachments of mail from %s", peer)
            return "452 4.3.1 insufficient system storage"
        except StoreError:
            log.exception("cannot store legacy mail from %s", peer)
            return "451 4.3.0 temporary local problem, try again later"
        self.stored += 1
        log.info(
            "stored legacy mail from %r via %s for %d recipient(s); DKIM %s, SPF %s, DMARC %s",
            mail_from,
            peer,
            len(public_ids),
            checks.dkim,
            checks.spf,
            checks.dmarc,
        )
        return "250 2.0.0 OK"

    def check(
        self, data: bytes, peer: str, helo: str, mail_from: str, incoming: Incoming
    ) -> Checks:
        """DKIM, SPF and DMARC for one message (blocking: DNS)."""
        dkim_result = dkim_keys.verify(data, self.dns.dkim_dnsfunc)
        if dkim_result.result == "temperror":  # answered 451: the rest waits for the retry
            return Checks(peer, helo, mail_from, dkim_result, spf.SpfResult("none"))
        spf_result = spf.check(self.dns, peer, mail_from, helo)
        if spf_result.result == "temperror":
            return Checks(peer, helo, mail_from, dkim_result, spf_result)
        dmarc_result = dmarc.evaluate(
            self.dns,
            domain_of(incoming.sender) if incoming.sender else None,
            spf_result=spf_result.result,
            spf_domain=spf_result.domain,
            dkim_result=dkim_result.result,
            dkim_domain=dkim_result.domain,
        )
        return Checks(peer, helo, mail_from, dkim_result, spf_result, dmarc_result)

    async def store(self, incoming: Incoming, recipients: list[str], checks: Checks) -> list[str]:
        """One unit of work: every recipient through the delivery pipeline, or none; the
        attachments' files are written first and removed again if it fails."""
        plugin = self.attachments()
        kept = [p for p in incoming.parts if p.keep] if plugin is not None else []
        origin = f"{ORIGIN_PREFIX}{checks.peer}"
        lines = [
            f"[attachment: {p.filename or 'attachment'} ({p.content_type}, {p.size} bytes)]"
            if p in kept
            else f"[not kept: {p.filename or 'unnamed part'} ({p.content_type}, {p.size} bytes)]"
            for p in incoming.parts
        ]
        body = incoming.body
        if lines:
            body = f"{body.rstrip()}\n\n" + "\n".join(lines) + "\n"
        sender = incoming.sender or checks.mail_from or f"mailer-daemon@{checks.helo or 'unknown'}"
        message = Message(
            id="",
            message_id=incoming.message_id or new_message_id(self.domain),
            folder="inbox",
            sender=sender,
            to=incoming.to or recipients,
            cc=incoming.cc,
            subject=incoming.subject,
            date=incoming.date,
            size=len(body.encode()) + len(incoming.subject.encode()),
            seen=False,
            body=body,
            origin=origin,
            signed_xml=legacy_marker(checks, incoming),
            headers=incoming.headers,
            in_reply_to=incoming.in_reply_to,
            references=incoming.references,
        )
        request = etree.fromstring(message.signed_xml or b"<x/>")
        if plugin is None or not kept:
            return await self.server.store.transact(
                lambda tx: self._deliver(tx, message, recipients, request)
            )
        stored = await self._write(plugin, origin, kept)
        url = plugin.own_url()

        def work(tx: Tx) -> list[str]:
            copy = message
            if _message_id_taken(tx, message.message_id):  # never join another's attachments
                copy = replace(message, message_id=new_message_id(self.domain))
            for guid, sha256 in stored:
                records.bind_received(tx, guid, sha256, url, copy.message_id, recipients)
            return self._deliver(tx, copy, recipients, request)

        try:
            return await self.server.store.transact(work)
        except BaseException:
            await self._discard(plugin, [guid for guid, _ in stored])
            raise

    def _deliver(
        self, tx: Tx, message: Message, recipients: list[str], request: etree._Element
    ) -> list[str]:
        env = Environment(
            principal=message.origin or ORIGIN_PREFIX,
            domain=self.domain,
            tx=tx,
            request=request,
            pipeline=self.server.pipeline,
            clock=self.server.clock,
        )
        for recipient in recipients:
            deliver_locally(replace(message), recipient, env)
        return recipients

    async def _write(
        self, plugin: OnDemandAttachments, owner: str, parts: list[Part]
    ) -> list[tuple[str, str]]:
        return await write_parts(self.server.store, plugin, owner, parts)

    async def _discard(self, plugin: OnDemandAttachments, guids: list[str]) -> None:
        await discard_parts(self.server.store, plugin, guids)


def loaded_attachments(server: Server) -> OnDemandAttachments | None:
    """The loaded on-demand attachments plug-in with its blob store, if any."""
    for entry in server.pipeline.listing():
        if isinstance(entry.plugin, OnDemandAttachments) and entry.plugin.blobs is not None:
            return entry.plugin
    return None


async def write_parts(
    store: BatchStore,
    plugin: OnDemandAttachments,
    owner: str,
    parts: list[Part],
    *,
    quota: bool = False,
) -> list[tuple[str, str]]:
    """Rows first ('uploading': the sweeper spares their files), then each file written
    and fsynced under its server-generated name; [(guid, sha256)]. Refused before any row
    when the parts do not fit on disk (InsufficientStorage) or, with `quota`, in the
    owner's quota (QuotaExceeded)."""

    def create(tx: Tx) -> list[str]:
        if quota:  # a local user's own attachments (SMTP submission)
            plugin.check_quota(tx, owner, sum(p.size for p in parts))
        plugin.check_space(tx, sum(p.size for p in parts))
        return [
            records.create_received(tx, owner, p.filename or "attachment", p.content_type, p.size)
            for p in parts
        ]

    guids = await store.transact(create)
    blobs = plugin.blobs
    assert blobs is not None
    try:
        return [
            (guid, await asyncio.to_thread(blobs.write, guid, part.data))
            for guid, part in zip(guids, parts, strict=True)
        ]
    except BaseException:
        await discard_parts(store, plugin, guids)
        raise


async def unknown_local_user(server: Server, address: str) -> str | None:
    """The RCPT reply refusing a local `address` that is neither an account nor a mapped
    address (or a store problem); None when it takes mail."""

    def known(tx: Tx) -> bool:
        if tx.user(address) is not None:
            return True
        env = Environment(  # a mapped address (an alias…) takes mail too
            principal=ORIGIN_PREFIX,
            domain=server.config.domain,
            tx=tx,
            request=etree.Element(q("Rcpt")),
            pipeline=server.pipeline,
            clock=server.clock,
        )
        return claim_of(address, env) is not None

    try:
        found = await server.store.transact(known)
    except StoreError:
        return "451 4.3.0 temporary local problem, try again later"
    return None if found else "550 5.1.1 no such user here"


async def discard_parts(store: BatchStore, plugin: OnDemandAttachments, guids: list[str]) -> None:
    """Remove the files and rows of `write_parts` (the message they were for was refused)."""
    blobs = plugin.blobs
    assert blobs is not None

    def forget(tx: Tx) -> None:
        for guid in guids:
            records.forget(tx, guid)

    for guid in guids:
        await asyncio.to_thread(blobs.remove, guid)
    await store.transact(forget)


def _message_id_taken(tx: Tx, message_id: str) -> bool:
    """Whether any stored message or attachment already carries `message_id` (the
    attachments extension lists a message's attachments by its Message-ID)."""
    for table in ("messages", "attachment_blobs"):
        found = tx.conn.execute(
            f"SELECT 1 FROM {table} WHERE message_id=? LIMIT 1",  # noqa: S608 -- fixed names
            (message_id,),
        ).fetchone()
        if found is not None:
            return True
    return False


def _peer(session: Session) -> str:
    peer: Any = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return str(peer or "unknown")


class _BoundController(Controller):
    """aiosmtpd's threaded controller on a socket we bound (port 0 works, errors are
    ours to report)."""

    def __init__(self, handler: object, host: str, port: int, **kwargs: Any) -> None:
        self._sock = bind(host, port)
        bound_host, bound_port = self._sock.getsockname()[:2]
        super().__init__(handler, hostname=bound_host, port=bound_port, **kwargs)

    def _create_server(self) -> Any:
        return self.loop.create_server(self._factory_invoker, sock=self._sock)


class Listener:
    """An SMTP listener (the inbound gateway's, or the submission port's with `handler` and
    `options` for aiosmtpd's SMTP class): `start()` binds and waits until it answers,
    `stop()` closes it (its thread is a daemon, harmless if never stopped)."""

    def __init__(
        self,
        gateway: object,
        host: str,
        port: int,
        *,
        max_bytes: int,
        hostname: str,
        tls: ssl.SSLContext | None = None,
        ident: str = "wsemail SMTP gateway",
        **options: Any,
    ) -> None:
        kwargs: dict[str, Any] = {
            "data_size_limit": max_bytes,
            "server_hostname": hostname,
            "ident": ident,
            **options,
        }
        if tls is not None:
            kwargs["tls_context"] = tls
        self.gateway = gateway
        self.ident = ident
        self.controller = _BoundController(gateway, host, port, ready_timeout=10, **kwargs)

    @property
    def address(self) -> tuple[str, int]:
        return str(self.controller.hostname), int(self.controller.port)

    def start(self) -> Listener:
        self.controller.start()
        log.info("%s listening on %s:%d", self.ident, *self.address)
        return self

    def stop(self) -> None:
        try:
            self.controller.stop(no_assert=True)
        finally:
            self.controller._sock.close()
