"""In charge of outgoing messages: leasing due queue rows, one signed `Deliver` transaction
per destination domain (batched), failover across the domain's targets, retries with
exponential backoff and jitter (the first within seconds, up to `retry_max`), one delay
notice to the sender after `delay_notice`, and one bounce when a recipient is refused or the
queue lifetime runs out (never a bounce of a bounce, nor a notice for one).

A domain that answers again — a delivery to it succeeded, or it delivered to us — has its
deferred rows brought forward at once instead of at their backoff time.

Every attempt is freshly signed (new timestamp and nonce); the receiver recognises a retry
of something it already took by (origin, message id, recipient) and answers as before.
The hop signature embeds this server's certificate once; each message's own signature
names it by dsig11:X509Digest.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lxml import etree

from wsemail.core.provenance import signed_form
from wsemail.protocol import soap
from wsemail.protocol.auth import timestamp
from wsemail.protocol.dsig import add_timestamp
from wsemail.protocol.errors import NoRoute, RemoteFault, RoutingError, WsemailError
from wsemail.protocol.message import Message, new_message_id
from wsemail.protocol.soap import WSSE, WSU, element, q
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted
from wsemail.server.peers import PeerClient, PeerError
from wsemail.server.store import QueueRow, Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server
    from wsemail.server.federation import Federation

log = logging.getLogger("wsemail.relay")
MAILER_DAEMON = "mailer-daemon"
PERMANENT_STATUSES = {400, 401, 403, 404, 413}


class Relay:
    def __init__(self, server: Server, federation: Federation) -> None:
        self.server = server
        self.federation = federation
        self.config = server.config
        self.clock: Callable[[], float] = server.clock
        self.wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop `run` relays on
        self._http: PeerClient | None = None
        self.attempts = 0  # Deliver transactions sent, for tests and the benchmark
        self.random = random.Random()  # the jitter of retry delays (a test seam)
        # domains with deferred rows: a sign of life from one of them brings its rows forward
        self.deferred_domains: set[str] = set()
        # a plug-in (e.g. an SMTP gateway) may take domains that have no wsemail service:
        # it gets the leased rows and must settle them (Relay.settle); True = taken
        self.fallback: Callable[[str, list[QueueRow]], Awaitable[bool]] | None = None
        # told of every Deliver transaction sent: (destination domain, whether it answered
        # with results); the metrics count attempts and failures per domain from it
        self.observers: list[Callable[[str, bool], None]] = []

    def wake_threadsafe(self) -> None:
        """Wake the relay from another thread (e.g. an SMTP listener's); before `run`
        started, it polls within `relay_poll` anyway."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self.wake.set)

    # lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        """Deliver due rows until cancelled; woken early when a send queues something."""
        self._loop = asyncio.get_running_loop()
        self._http = PeerClient(self.federation.tls_context(), timeout=30)
        node = self.server.store.node
        released = await self.server.store.transact(lambda tx: tx.release_leases(node))
        if released:
            log.info("took back %d leased row(s) from before a restart", released)
        try:
            while True:
                self.wake.clear()  # before the pass: a send during it wakes the next one
                try:
                    await self.run_once()
                except Exception:  # keep relaying whatever one batch did
                    log.exception("relay pass failed")
                try:
                    await asyncio.wait_for(self.wake.wait(), self.config.relay_poll)
                except TimeoutError:
                    pass
        finally:
            await self._http.aclose()

    async def run_once(self) -> int:
        """One pass over the due rows; returns how many rows it handled."""
        lease, limit = self.config.relay_lease, self.config.batch_max * 8
        node = self.server.store.node
        rows = await self.server.store.transact(lambda tx: tx.lease_due(lease, limit, node))
        by_domain: dict[str, list[QueueRow]] = defaultdict(list)
        for row in rows:
            by_domain[row.domain].append(row)
        await asyncio.gather(*(self.deliver_domain(d, rs) for d, rs in by_domain.items()))
        return len(rows)

    # one destination --------------------------------------------------------------------
    async def deliver_domain(self, domain: str, rows: list[QueueRow]) -> None:
        try:
            targets = await self.federation.resolver.resolve(domain)
        except NoRoute as exc:
            if self.fallback is not None and await self.fallback(domain, rows):
                return
            await self.settle(rows, {}, permanent=f"no wsemail service for {domain}: {exc}")
            return
        except RoutingError as exc:
            await self.settle(rows, {}, transient=f"cannot resolve {domain}: {exc}")
            return
        size = self.config.batch_max
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            await self.deliver_batch(domain, batch, [t.url for t in targets])

    async def deliver_batch(self, domain: str, batch: list[QueueRow], urls: list[str]) -> None:
        assert self._http is not None
        last_error = "no target"
        for url in urls:
            data = self.transaction(domain, batch)
            self.attempts += 1
            try:
                response = await self._http.post(
                    url, data, content_type=soap.CONTENT_TYPE, server_hostname=domain
                )
            except PeerError as exc:
                last_error = f"{url}: {exc}"
                self._attempted(domain, False)
                continue  # failover to the next target
            try:
                answer = soap.split_envelope(
                    parse_untrusted(response.content, XmlLimits(max_bytes=16 << 20))
                ).operation
                soap.raise_if_fault(answer)
            except RemoteFault as exc:
                self._attempted(domain, False)
                if response.status in PERMANENT_STATUSES:
                    await self.settle(batch, {}, permanent=f"{domain} refused: {exc.reason}")
                    return
                last_error = f"{url}: {exc.reason}"
                continue
            self._attempted(domain, True)
            results = {
                (node.get("MessageId", ""), node.get("Recipient", "")): (
                    node.get("Status", ""),
                    node.get("Reason", ""),
                )
                for node in answer.findall(q("Result"))
            }
            await self.settle(batch, results)
            return
        await self.settle(batch, {}, transient=last_error)

    def _attempted(self, domain: str, answered: bool) -> None:
        for observer in list(self.observers):
            try:
                observer(domain, answered)
            except Exception:
                log.exception("relay observer failed")

    def transaction(self, domain: str, batch: list[QueueRow]) -> bytes:
        """A freshly signed Deliver for `batch` (all rows for `domain`)."""
        env, header, body = soap.new_envelope()
        security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
        now = self.clock()
        add_timestamp(
            security,
            timestamp(datetime.fromtimestamp(now, UTC)),
            timestamp(datetime.fromtimestamp(now + 300, UTC)),
        )
        op = etree.SubElement(body, q("Deliver"))
        element(op, "Origin", self.federation.domain)
        element(op, "Destination", domain)
        element(op, "Nonce", base64.b64encode(os.urandom(16)).decode())
        signer = self.federation.signer
        for row in batch:
            message = Message.from_xml(etree.fromstring(row.payload))
            form = signed_form(self.federation.domain, domain, row.recipients, message)
            # the hop signature below embeds the certificate: each message names it by
            # dsig11:X509Digest (the receiver resolves it to the hop's verified one)
            op.append(signer.sign_element_fast(form, embed=False))
        signer.sign_envelope_fast(env)  # standard XMLDSIG, built without signxml (dsig.py)
        return soap.serialize(env)

    # backoff ----------------------------------------------------------------------------
    def retry_delay(self, failures: int) -> float:
        """Seconds until the next attempt after `failures` failed ones (1, 2, …): the base
        doubling each time, capped at `retry_max`, with jitter (half of it random) so rows
        and servers that failed together do not retry in lockstep."""
        doubled = self.config.retry_base * float(2 ** min(failures - 1, 60))
        ceiling = min(doubled, self.config.retry_max)
        return ceiling / 2 + self.random.random() * ceiling / 2

    async def peer_alive(self, domain: str) -> None:
        """`domain` answered (it delivered to us, or took a delivery): retry its rows now."""
        if domain not in self.deferred_domains:
            return
        self.deferred_domains.discard(domain)
        moved = await self.server.store.transact(lambda tx: tx.bring_forward(domain))
        if moved:
            log.info("%s is back: %d deferred row(s) brought forward", domain, moved)
            self.wake.set()

    # outcomes ---------------------------------------------------------------------------
    async def settle(
        self,
        batch: list[QueueRow],
        results: dict[tuple[str, str], tuple[str, str]],
        *,
        permanent: str | None = None,
        transient: str | None = None,
    ) -> None:
        now = self.clock()
        answered = transient is None and permanent is None

        def work(tx: Tx) -> int:
            for row in batch:
                if transient is not None:
                    if now - row.created >= self.config.lifetime:
                        self.bounce(
                            tx,
                            row,
                            row.recipients,
                            f"gave up after {row.attempts + 1} attempts: {transient}",
                        )
                        tx.finish_queued(row.id)
                        continue
                    tx.defer_queued(row.id, now + self.retry_delay(row.attempts + 1), transient)
                    if not row.notified and now - row.created >= self.config.delay_notice:
                        self.notify_delay(tx, row, transient)
                        tx.mark_notified(row.id)
                    continue
                if permanent is not None:
                    self.bounce(tx, row, row.recipients, permanent)
                    tx.finish_queued(row.id)
                    continue
                refused, later, why_later = [], [], ""
                for recipient in row.recipients:
                    status, reason = results.get((row.message_id, recipient), ("missing", ""))
                    if status == "deferred":  # a temporary answer for this recipient only
                        later.append(recipient)
                        why_later = why_later or f"{recipient}: {reason}"
                    elif status not in ("delivered", "duplicate"):
                        refused.append(f"{recipient}: {reason or status}")
                if later and now - row.created >= self.config.lifetime:
                    refused += [f"{r}: gave up after {row.attempts + 1} attempts" for r in later]
                    later = []
                if refused:
                    self.bounce(tx, row, [r.split(":")[0] for r in refused], "; ".join(refused))
                if later:  # the row keeps only them: the others are never sent again
                    delay = self.retry_delay(row.attempts + 1)
                    tx.narrow_queued(row.id, later, now + delay, why_later)
                else:
                    tx.finish_queued(row.id)
            # the domain took this batch: the rest of its queue need not wait for backoff
            # (not this batch's own rows a recipient deferred: they keep their backoff)
            if not answered or not batch:
                return 0
            return tx.bring_forward(batch[0].domain, [row.id for row in batch])

        moved = await self.server.store.transact(work)
        if transient is not None:
            self.deferred_domains.update(row.domain for row in batch)
            log.info("deferred %d message(s): %s", len(batch), transient)
        elif moved:
            log.info("%s answered: %d deferred row(s) brought forward", batch[0].domain, moved)
            self.wake.set()

    def bounce(self, tx: Tx, row: QueueRow, recipients: list[str], reason: str) -> None:
        """One delivery-failure notice into the sender's inbox; never for a bounce."""
        if row.sender.startswith(f"{MAILER_DAEMON}@"):
            log.warning("dropping undeliverable bounce %s: %s", row.message_id, reason)
            return
        original = Message.from_xml(etree.fromstring(row.payload))
        body = (
            f"Your message could not be delivered to: {', '.join(recipients)}\n"
            f"Reason: {reason}\n\nOriginal Message-Id: {original.message_id}\n"
            f"Subject: {original.subject}\n"
        )
        self.notice(tx, row, f"Undeliverable: {original.subject}", body)

    def notify_delay(self, tx: Tx, row: QueueRow, reason: str) -> None:
        """The one "still trying" notice for a row (none for a bounce's row)."""
        if row.sender.startswith(f"{MAILER_DAEMON}@"):
            return
        original = Message.from_xml(etree.fromstring(row.payload))
        until = datetime.fromtimestamp(row.created + self.config.lifetime, UTC)
        hours = (self.clock() - row.created) / 3600
        body = (
            f"Your message to {', '.join(row.recipients)} has not been delivered yet "
            f"({hours:.1f} hours, {row.attempts + 1} attempts).\n"
            f"Last error: {reason}\n"
            f"This server keeps trying until {until:%Y-%m-%d %H:%M} UTC, then returns it. "
            "You need not send it again.\n\n"
            f"Original Message-Id: {original.message_id}\nSubject: {original.subject}\n"
        )
        self.notice(tx, row, f"Delayed: {original.subject}", body)

    def notice(self, tx: Tx, row: QueueRow, subject: str, body: str) -> None:
        """A mailer-daemon message into the sender's inbox (when the sender is local)."""
        domain = self.federation.domain
        date = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        notice = Message(
            id="",
            message_id=new_message_id(domain),
            folder="inbox",
            sender=f"{MAILER_DAEMON}@{domain}",
            to=[row.sender],
            cc=[],
            subject=subject[:998],
            date=date,
            size=len(body),
            seen=False,
            body=body,
        )
        if tx.user(row.sender) is not None:
            tx.add_message(row.sender, "inbox", notice)


async def run_relay(server: Server) -> None:
    """The server's background relay task (a no-op without federation)."""
    relay = server.relay
    if not isinstance(relay, Relay):
        return
    try:
        await relay.run()
    except WsemailError:
        log.exception("relay stopped")
