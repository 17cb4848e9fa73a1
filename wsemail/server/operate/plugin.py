"""In charge of operating a server: per-user storage quotas at delivery (the server default
`[quota] per_user_bytes`, or the account's own quota set by `wsemail user quota` / `wsemail
admin quota`), each user's view of their own usage (extension `quota`), the metrics and
health routes, and the activity counters the admin status shows.

A delivery that would take the recipient over their quota is refused with QuotaExceeded
(a local Send fails with it; in a federated Deliver that recipient's result is `rejected`
with the reason, and the sending server bounces the message to its sender). A quota set
below what the user keeps already is accepted: it only stops new mail.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lxml import etree

from wsemail.protocol.errors import (
    InsufficientStorage,
    QuotaExceeded,
    Rejected,
    ServerError,
    fault_classes,
)
from wsemail.protocol.message import Message
from wsemail.protocol.soap import q
from wsemail.server.operate import records
from wsemail.server.operate.activity import Rate
from wsemail.server.operate.metrics import (
    HEALTH_PATH,
    METRICS_PATH,
    Metrics,
    health_route,
    metrics_route,
)
from wsemail.server.pipeline import (
    DeliveryProcessor,
    Environment,
    ExtensionProcessor,
    Verdict,
    dispatch,
)
from wsemail.server.plugins.queue import queue_status

log = logging.getLogger("wsemail.operate")

# fault subcode names that mean "this message was refused" (a Send or a whole Deliver)
REFUSED = frozenset(
    code.partition(":")[2]
    for code, cls in fault_classes().items()
    if issubclass(cls, Rejected | InsufficientStorage)
)
MAIL_OPERATIONS = ("Send", "Deliver")


class Operate(DeliveryProcessor, ExtensionProcessor):
    """Storage quotas at delivery, /metrics and /healthz, activity for the admin status."""

    name = "operate"
    extension_id = "quota"

    def __init__(self, stuck_after: float = 900.0) -> None:
        if stuck_after <= 0:
            raise ValueError("stuck_after must be positive")
        self.stuck_after = float(stuck_after)  # /healthz: a queue row overdue this long
        self.server: Any = None
        self.metrics = Metrics()
        self.rates = {"deliveries": Rate(), "refusals": Rate()}
        self._routes: dict[str, Any] = {}
        self._children: dict[tuple[str, str], tuple[Any, Any]] = {}

    # wiring -----------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        self.server = server
        server.store.ensure_schema(records.COMPONENT, records.MIGRATIONS)
        self._routes = {
            METRICS_PATH: metrics_route(self.metrics, self._token, self.refresh),
            HEALTH_PATH: health_route(self.health),
        }
        server.routes.update(self._routes)
        server.observers.append(self.observe)
        if server.relay is not None and hasattr(server.relay, "observers"):
            server.relay.observers.append(self.relayed)
        server.store.on_commit = self.committed

    def close(self) -> None:
        server = self.server
        if server is None:
            return
        for path, route in self._routes.items():
            if server.routes.get(path) is route:
                del server.routes[path]
        if self.observe in server.observers:
            server.observers.remove(self.observe)
        relay_observers = getattr(server.relay, "observers", [])
        if self.relayed in relay_observers:
            relay_observers.remove(self.relayed)
        if getattr(server.store, "on_commit", None) == self.committed:
            server.store.on_commit = None

    def _token(self) -> str:
        return str(getattr(self.server.config, "metrics_token", "") or "")

    # quotas -----------------------------------------------------------------------------
    def default_quota(self) -> int:
        if self.server is None:
            raise ServerError("the operate plug-in is not attached to a server")
        return int(self.server.config.quota_per_user_bytes)

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        size = max(message.size, 0)
        if records.room_left(env.tx, recipient, self.default_quota()) < size:
            if env.tx.user(recipient) is not None:  # an unknown one is local delivery's
                log.info("delivery to %r refused: over its storage quota", recipient)
                raise QuotaExceeded(f"{recipient}'s mailbox is full (storage quota reached)")
        env.after_commit.append(self.delivered)
        return Verdict.PASS

    def delivered(self) -> None:
        """After the commit: one more copy in a mailbox here."""
        self.rates["deliveries"].add()
        self.metrics.deliveries.inc()

    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        return dispatch(payload, {"Usage": self._usage}, env, self.extension_id)

    def _usage(self, op: etree._Element, env: Environment) -> etree._Element:
        """The caller's own usage and quota."""
        return usage_element(records.usage(env.tx, env.principal, self.default_quota()))

    # observation ------------------------------------------------------------------------
    def observe(self, record: Any) -> None:
        key = (record.operation, record.outcome)
        counted = self._children.get(key)
        if counted is None:  # label children looked up once (bounded: names and subcodes)
            counted = self._children[key] = (
                self.metrics.requests.labels(*key),
                self.metrics.latency.labels(record.operation),
            )
        counted[0].inc()
        counted[1].observe(record.seconds)
        refused = 0
        if record.operation in MAIL_OPERATIONS and record.outcome in REFUSED:
            refused = 1
        elif record.answer is not None and record.outcome == "ok":
            refused = len(record.answer.findall(f"{q('Result')}[@Status='rejected']"))
        if refused:
            self.rates["refusals"].add(refused)
            self.metrics.refusals.inc(refused)

    def relayed(self, domain: str, answered: bool) -> None:
        self.metrics.relay_attempts.labels(domain).inc()
        if not answered:
            self.metrics.relay_failures.labels(domain).inc()

    def committed(self, seconds: float, units: int) -> None:
        self.metrics.commit_seconds.observe(seconds)

    def sessions(self) -> tuple[int, int] | None:
        """(live push sessions, open party lines) from the IM plug-in, when loaded."""
        for entry in self.server.pipeline.listing() if self.server is not None else []:
            live = getattr(entry.plugin, "live_counts", None)
            if callable(live):
                try:
                    push, lines = live()
                except ServerError:  # not attached (yet)
                    return None
                return int(push), int(lines)
        return None

    async def refresh(self) -> None:
        """Scrape time: the gauges that are read rather than counted."""
        server = self.server

        def read(tx: Any) -> tuple[list[Any], tuple[int, int]]:
            return queue_status(tx), records.counts(tx)

        domains, (users, messages) = await server.store.transact(read)
        now = server.clock()
        self.metrics.queue_depth.clear()
        self.metrics.queue_oldest.clear()
        for entry in domains:
            self.metrics.queue_depth.labels(entry.domain).set(entry.depth)
            self.metrics.queue_oldest.labels(entry.domain).set(max(0.0, now - entry.oldest))
        self.metrics.users.set(users)
        self.metrics.messages.set(messages)
        live = self.sessions()
        self.metrics.push_sessions.set(live[0] if live else 0)
        self.metrics.party_lines.set(live[1] if live else 0)

    async def health(self) -> tuple[bool, dict[str, Any]]:
        try:
            late = await asyncio.wait_for(self.server.store.transact(records.overdue), 10)
        except Exception as exc:  # the store does not answer: that is the finding
            return False, {"store": f"not answering: {type(exc).__name__}"}
        if late > self.stuck_after:
            return False, {"store": "ok", "queue": f"stuck: a row is {int(late)} s overdue"}
        return True, {"store": "ok", "queue": "ok"}


def usage_element(usage: records.Usage) -> etree._Element:
    node = etree.Element(q("Usage"))
    node.attrib.update(
        {
            "address": usage.address,
            "used": str(usage.used),
            "limit": str(usage.limit),
            "messages": str(usage.messages),
            "message-bytes": str(usage.message_bytes),
            "attachment-bytes": str(usage.attachment_bytes),
            "override": "true" if usage.override else "false",
        }
    )
    return node


def usage_listing(rows: list[records.Usage]) -> etree._Element:
    root = etree.Element(q("Users"))
    for usage in rows:
        root.append(usage_element(usage))
    return root
