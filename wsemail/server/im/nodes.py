"""In charge of the IM plug-in on several nodes of one domain that share one PostgreSQL
database: a listener may hold its push stream on node A while the message comes in at node B.

- presence: each node keeps its count of instant sessions per user in `im_presence` and
  says it is alive in `im_nodes` (every `BEAT` seconds; a node silent for `ALIVE` seconds
  counts no more), so node B knows that the recipient is live on A;
- pushes: B keeps the instant message pending as on one node (the whole message, in the
  delivering transaction) and NOTIFYs channel `records.IM_CHANNEL` in the same transaction;
  A's listener hears it after the commit, reads the pending row and pushes it to its
  sessions. Each session is sent it once, by the node that holds it; none moves it on
  early: unacknowledged, the sweeper of any node moves it on at its deadline, once (the
  pending row is taken by one transaction);
- acknowledgements: an `Ack` taken by another node is announced too, so that the node
  holding the session does not take it for dead;
- notices ("your instant message was dropped") to the sender's sessions elsewhere;
- new mail: the trigger of `records` NOTIFYs `records.NEW_MAIL_CHANNEL` with the owner; the
  listener wakes that owner's sessions (and the IMAP plug-in's IDLE) here.

One LISTEN connection per node (`wsemail.server.postgres.notify.Listener`), in a thread; it
reconnects when the database comes back and then looks for new mail it may have missed.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from typing import Any

from wsemail.server.im import records
from wsemail.server.im.hub import Hub, Push, event
from wsemail.server.im.newmail import MailFeed
from wsemail.server.postgres.notify import Listener
from wsemail.server.store import BatchStore, Tx

log = logging.getLogger("wsemail.im")
BEAT = 2.0  # seconds between a node's "alive" rows
ALIVE = 10.0  # a node silent this long holds no live session for the others


class Nodes:
    """This node among the others: shared presence, and the listener that hears them."""

    def __init__(
        self,
        store: BatchStore,
        hub: Hub,
        mail: MailFeed,
        payload: Any,
    ) -> None:
        self.store = store
        self.hub = hub
        self.mail = mail
        self.payload = payload  # (message, recipient, push id) → the push's JSON data
        # this process among the others (the store's: the data dir's id and the worker; a
        # restarted process is the same node again)
        self.node = store.node or secrets.token_hex(8)
        self._beat = 0.0
        url = str(getattr(store, "url", ""))
        self.listener = Listener(
            url,
            [records.NEW_MAIL_CHANNEL, records.IM_CHANNEL],
            self._heard,
            on_reconnect=self._reconnected,
            name="wsemail-im-nodes",
        )

    def start(self) -> None:
        def alive(tx: Tx) -> None:
            records.forget_node(tx, self.node)  # sessions of this node before a crash
            records.node_alive(tx, self.node, tx.now + ALIVE)

        self.store.transact_sync(alive)
        self.hub.on_presence = self._presence
        self.hub.on_notice = self.announce_notice
        self.mail.heard = self.listener.connected.is_set
        self.listener.start()

    def close(self) -> None:
        self.listener.close()
        self.mail.heard = None
        self.hub.on_presence = None
        self.hub.on_notice = None
        try:
            self.store.submit(lambda tx: records.forget_node(tx, self.node)).result(10)
        except Exception as exc:  # the database is away: the others forget us by age
            log.warning("node %s not forgotten: %s", self.node, exc)

    def beat(self) -> None:
        """(The sweeper.) Say this node is still alive, every BEAT seconds."""
        now = time.monotonic()
        if now - self._beat < BEAT:
            return
        self._beat = now
        self.store.submit(lambda tx: records.node_alive(tx, self.node, tx.now + ALIVE))

    # presence -----------------------------------------------------------------------------
    def _presence(self, address: str) -> None:
        """The count of `address`'s sessions here changed: written by the writer thread,
        which reads it when it runs (so the last write holds the latest count)."""
        hub, node = self.hub, self.node

        def write(tx: Tx) -> None:
            records.set_presence(tx, node, address, hub.live(address))

        def done(future: Any) -> None:
            if not future.cancelled() and future.exception() is not None:
                self.store.submit(write)  # once more (the writer connects again); after
                # that the next (re)connection of the listener writes every count

        self.store.submit(write).add_done_callback(done)

    def elsewhere(self, tx: Tx, address: str) -> int:
        """`address`'s live sessions on the other nodes."""
        return records.live_elsewhere(tx, address, self.node)

    def online(self, tx: Tx) -> dict[str, int]:
        """Everyone's live sessions: here (as the hub counts them) and on the other nodes."""
        counts = records.online_elsewhere(tx, self.node)
        for address, sessions in self.hub.online().items():
            counts[address] = counts.get(address, 0) + sessions
        return counts

    # telling the other nodes (inside the transaction: heard once it commits) --------------
    def announce_push(self, tx: Tx, recipient: str, push_id: str) -> None:
        self._announce(tx, {"kind": "push", "to": recipient, "id": push_id})

    def announce_acked(self, tx: Tx, address: str, push_ids: list[str]) -> None:
        if push_ids:
            self._announce(tx, {"kind": "ack", "to": address, "ids": push_ids})

    def announce_notice(self, tx: Tx, address: str, data: dict[str, Any]) -> None:
        self._announce(tx, {"kind": "notice", "to": address, "data": data})

    def _announce(self, tx: Tx, what: dict[str, Any]) -> None:
        records.announce(tx, json.dumps({"node": self.node, **what}, separators=(",", ":")))

    # hearing them -------------------------------------------------------------------------
    def _heard(self, got: list[tuple[str, str]]) -> None:
        owners = [payload for channel, payload in got if channel == records.NEW_MAIL_CHANNEL]
        if owners:
            self.mail.wake(list(dict.fromkeys(owners)))
        for channel, payload in got:
            if channel != records.IM_CHANNEL:
                continue
            try:
                what = json.loads(payload)
                if what["node"] == self.node:
                    continue  # released here already
                self._act(what)
            except (ValueError, KeyError, TypeError):
                log.warning("a notification not understood: %r", payload[:200])

    def _act(self, what: dict[str, Any]) -> None:
        address = str(what["to"])
        if not self.hub.live(address):
            return  # none of its sessions are here
        if what["kind"] == "push":
            self._push(address, str(what["id"]))
        elif what["kind"] == "ack":
            self.hub.acked(address, [str(i) for i in what["ids"]])
        elif what["kind"] == "notice":
            self.hub.notify(address, event("notice", dict(what["data"])))

    def _reconnected(self) -> None:
        """Listening (again): what the other nodes announced meanwhile was not heard. New
        mail is looked for; what waits for an acknowledgement goes to the sessions here
        that were not sent it. This node first says again that it is alive (after an
        outage longer than ALIVE the others take it for gone) and who is live here (a
        change written while the database was away was lost)."""
        hub, node = self.hub, self.node

        def alive(tx: Tx) -> None:
            records.node_alive(tx, node, tx.now + ALIVE)
            records.sync_presence(tx, node, hub.online())

        for _ in range(2):  # the writer's connection may be stale too: the first unit finds out
            try:
                self.store.submit(alive).result(10)
                break
            except Exception as exc:  # the next unit connects again
                log.info("node %s not marked alive yet: %s", self.node, exc)
        self.mail.check_now()
        for address in self.hub.online():
            self._waiting(address)

    def _waiting(self, address: str) -> None:
        hub, payload = self.hub, self.payload

        def done(future: Any) -> None:
            if future.cancelled() or future.exception() is not None:
                return  # the deadline moves them on
            for p in future.result():
                data = event("message", payload(p.message, address, p.push_id), p.push_id)
                hub.push_here(Push(p.push_id, address, p.message, data, shared=True))

        def waiting(tx: Tx) -> list[records.Pending]:
            return records.pending_for(tx, address, tx.now)

        self.store.submit(waiting).add_done_callback(done)

    def _push(self, address: str, push_id: str, tries: int = 3) -> None:
        """A push another node released: read it (still pending?) and send it here."""
        hub, payload = self.hub, self.payload

        def done(future: Any) -> None:
            if future.cancelled():
                return
            if future.exception() is not None:  # e.g. the writer found its connection gone
                if tries > 1:
                    self._push(address, push_id, tries - 1)
                return  # else the deadline moves it on
            pending = future.result()
            if pending is None or pending.owner != address:
                return  # acknowledged or moved on meanwhile
            data = event("message", payload(pending.message, address, push_id), push_id)
            hub.push_here(Push(push_id, address, pending.message, data, shared=True))

        self.store.submit(lambda tx: records.pending_one(tx, push_id)).add_done_callback(done)
