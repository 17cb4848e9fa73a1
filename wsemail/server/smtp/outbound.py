"""In charge of outgoing legacy mail: the relay's fallback for domains without a wsemail
service. Each queue row becomes one DKIM-signed MIME message, handed by SMTP to the
domain's MX hosts in order (STARTTLS when offered) with aiosmtplib on the relay's event
loop, and is settled per recipient: accepted ones are done (never sent again), a 5xx answer
bounces, a 4xx answer keeps the recipient in the durable queue row for a retry with backoff
(the row is narrowed to them); no reachable host defers the whole row.

On-demand attachments (`attachments` option): "attach" puts each one's bytes in the message
as a MIME part, read from the sender's own attachment storage (only a bound attachment of
THAT sender and message whose bytes still match the signed SHA-256); "link" describes each
one in the text instead; "auto" (the default) attaches while the attached bytes stay within
`attach_max_bytes` and links the rest. An attachment that cannot be read is linked.

aiosmtplib's and ssl's exceptions are translated here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import aiosmtplib
from lxml import etree

from wsemail.protocol.errors import NoRoute, RoutingError
from wsemail.protocol.message import AttachmentRef, Message, domain_of
from wsemail.server.attachments import OnDemandAttachments, records
from wsemail.server.relay import MAILER_DAEMON
from wsemail.server.smtp import dkim_keys
from wsemail.server.smtp.mime import to_mime
from wsemail.server.smtp.mx import MailDns, MailHost
from wsemail.server.store import QueueRow, Tx

if TYPE_CHECKING:
    from wsemail.server.relay import Relay

log = logging.getLogger("wsemail.smtp.outbound")
AttachMode = Literal["auto", "attach", "link"]
ATTACH_MODES: tuple[AttachMode, ...] = ("auto", "attach", "link")
Reader = Callable[[Message, AttachmentRef], bytes | None]


def storage_reader(find: Callable[[], OnDemandAttachments | None]) -> Reader:
    """Read an attachment of `message` from the sender's own storage (blocking), or None
    when the plug-in is not loaded or it is not a live attachment of that sender and message
    whose bytes match the reference."""

    def read(message: Message, ref: AttachmentRef) -> bytes | None:
        plugin = find()
        if plugin is None or plugin.blobs is None or plugin.server is None:
            return None
        if domain_of(message.sender) != plugin.server.config.domain:
            return None

        def lookup(tx: Tx) -> records.Blob | None:
            return records.get(tx, ref.guid) if len(ref.guid) <= 64 else None

        blob = plugin.server.store.transact_sync(lookup)
        if (
            blob is None
            or blob.state != "bound"
            or blob.owner != message.sender
            or blob.message_id != message.message_id
            or blob.size != ref.size
            or blob.sha256 != ref.sha256
        ):
            return None
        try:
            with plugin.blobs.open(blob.guid) as handle:
                data = handle.read(blob.size + 1)
        except (OSError, ValueError):
            log.exception("attachment %s of %s cannot be read", blob.guid, message.message_id)
            return None
        if len(data) != blob.size or hashlib.sha256(data).hexdigest() != blob.sha256:
            log.error("attachment %s differs from its reference", blob.guid)
            return None
        return data

    return read


@dataclass
class Outcome:
    """How one queue row went: per-recipient results, or one permanent/transient reason."""

    results: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    permanent: str | None = None
    transient: str | None = None


@dataclass
class SmtpSender:
    relay: Relay
    dns: MailDns
    domain: str
    dkim_key: bytes = field(repr=False)
    selector: str = dkim_keys.DEFAULT_SELECTOR
    helo: str = ""
    starttls: bool = True
    require_tls: bool = False
    tls_verify: bool = False  # opportunistic TLS (RFC 7435) unless told otherwise
    timeout: float = 30.0
    attachments: AttachMode = "auto"
    attach_max_bytes: int = 10 << 20
    reader: Reader | None = field(default=None, repr=False)
    sent: int = 0  # messages accepted by a peer, for tests and status

    async def fallback(self, domain: str, rows: list[QueueRow]) -> bool:
        """The `Relay.fallback` hook: deliver `rows` for `domain` by SMTP and settle them."""
        try:
            hosts = await asyncio.to_thread(self.dns.mail_hosts, domain)
        except NoRoute as exc:
            await self.relay.settle(rows, {}, permanent=f"no mail service for {domain}: {exc}")
            return True
        except RoutingError as exc:
            await self.relay.settle(rows, {}, transient=f"cannot resolve MX of {domain}: {exc}")
            return True
        for row in rows:
            try:
                outcome = await self.deliver_row(domain, row, hosts)
            except Exception as exc:  # never leave a leased row behind: retry it later
                log.exception("SMTP delivery of %s to %s failed", row.message_id, domain)
                outcome = Outcome(transient=f"local error: {exc!r}")
            await self.relay.settle(
                [row], outcome.results, permanent=outcome.permanent, transient=outcome.transient
            )
        return True

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self.tls_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def message_bytes(self, row: QueueRow) -> bytes:
        message = Message.from_xml(etree.fromstring(row.payload))
        attached, linked = self.split_attachments(message)
        data = to_mime(message, attached, linked)
        return dkim_keys.sign(data, self.domain, self.dkim_key, self.selector)

    def split_attachments(
        self, message: Message
    ) -> tuple[list[tuple[AttachmentRef, bytes]], list[AttachmentRef]]:
        """Which attachments go as MIME parts (with their bytes) and which as links."""
        attached: list[tuple[AttachmentRef, bytes]] = []
        linked: list[AttachmentRef] = []
        total = 0
        for ref in message.attachments:
            wanted = self.attachments == "attach" or (
                self.attachments == "auto" and total + ref.size <= self.attach_max_bytes
            )
            data = self.reader(message, ref) if wanted and self.reader is not None else None
            if data is None:
                linked.append(ref)
                continue
            attached.append((ref, data))
            total += len(data)
        return attached, linked

    async def deliver_row(self, domain: str, row: QueueRow, hosts: list[MailHost]) -> Outcome:
        """One message to the first host that gives a final answer. The row holds only
        the recipients still to do (the relay narrows it after a partial delivery)."""
        data = await asyncio.to_thread(self.message_bytes, row)
        mail_from = "" if row.sender.startswith(f"{MAILER_DAEMON}@") else row.sender
        last = "no mail host"
        for host in hosts:
            where = f"{host.name}[{host.address}]:{host.port}"
            try:
                refused = await self._send(host, mail_from, row.recipients, data)
            except aiosmtplib.SMTPRecipientsRefused as exc:
                refused = {r.recipient: (r.code, r.message) for r in exc.recipients}
            except aiosmtplib.SMTPResponseException as exc:  # MAIL, DATA, EHLO, STARTTLS
                last = f"{where} said {exc.code} {_text(exc.message)}"
                if 500 <= exc.code < 600:
                    return Outcome(permanent=last)
                continue  # 4xx: another MX may take it; else retry later
            except _TlsRequired as exc:
                last = f"{where}: {exc}"
                continue
            except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as exc:
                last = f"{where}: {exc!r}"
                continue
            return self._outcome(row, where, refused)
        log.info("deferring %s to %s: %s", row.message_id, domain, last)
        return Outcome(transient=last)

    def _outcome(self, row: QueueRow, where: str, refused: dict[str, tuple[int, str]]) -> Outcome:
        """Per recipient: accepted -> delivered, 5xx -> bounced, 4xx -> kept for a retry."""
        accepted = [r for r in row.recipients if r not in refused]
        if not accepted and all(code < 500 for code, _ in refused.values()):
            code, text = next(iter(refused.values()))  # nothing taken, only 4xx: retry all
            return Outcome(transient=f"{where} said {code} {_text(text)}")
        if accepted:
            self.sent += 1
            log.info("sent %s to %s for %d recipient(s)", row.message_id, where, len(accepted))
        results = {(row.message_id, r): ("delivered", "") for r in accepted}
        for recipient, (code, text) in refused.items():
            status = "rejected" if code >= 500 else "deferred"
            results[(row.message_id, recipient)] = (status, f"{where} said {code} {_text(text)}")
        return Outcome(results=results)

    async def _send(
        self, host: MailHost, mail_from: str, recipients: list[str], data: bytes
    ) -> dict[str, tuple[int, str]]:
        """One SMTP session; the recipients refused (others were accepted)."""
        smtp = aiosmtplib.SMTP(
            hostname=host.address,
            port=host.port,
            local_hostname=self.helo or self.domain,
            timeout=self.timeout,
            start_tls=False,  # decided below, from the EHLO answer
        )
        await smtp.connect()
        try:
            await smtp.ehlo()
            if self.starttls and smtp.supports_extension("starttls"):
                # the certificate name (and SNI) is the MX host's name, not its address
                await smtp.starttls(server_hostname=host.name, tls_context=self.tls_context())
            elif self.require_tls:
                raise _TlsRequired("offers no STARTTLS and TLS is required")
            errors, _ = await smtp.sendmail(mail_from, recipients, data)
            with contextlib.suppress(aiosmtplib.SMTPException, OSError):
                await smtp.quit()
            return {r: (e.code, e.message) for r, e in errors.items()}
        finally:
            smtp.close()


class _TlsRequired(Exception):
    pass


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return " ".join(text.split())[:300]
