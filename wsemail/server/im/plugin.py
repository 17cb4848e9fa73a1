"""In charge of the IM plug-in as one composite (paper §4.1, DESIGN.md §5, §8):

- sending processor: reads the `Instant` / `DeleteIfUndeliverable` flags of a submitted
  message onto it (they then travel inside the signed form to other domains);
- delivery processor: an instant message for a user with a live session is stored as
  pending (the whole message, in the same unit of work) and pushed after it commits; a
  listener acknowledges it by id (`Ack`) within `ack_timeout` seconds, or the sweeper
  moves it on; with no live session it moves on at once. Moving on: into the mailbox
  marked as meant as an instant message, or — when the sender asked — dropped and the
  sender told (a notice in a local sender's inbox; for another domain's sender, a
  refusal while the Deliver runs, a notice mail from mailer-daemon after it). Pending
  ones from before a restart move on when the plug-in starts. The recipient's allow /
  block lists and the operator's policy for other domains apply;
- extension `im` (password MAC): OpenStream (a one-time ticket for the push stream), Ack,
  Who, GetAcl / SetAcl, History, Missed, OpenChannel (a party line, `channel`: the
  listener is started and every participant, the opener too, is invited by an instant
  message from the opener with host, port, channel id and the listener's certificate
  fingerprint);
- the push stream route (`hub`) and the `DirectInstant` operation (`direct`); a stream
  may also follow new mail (`newmail`): after a delivery the sessions of its recipients are
  woken (and every sweep, for mail that came another way: a bounce, a notice).
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from lxml import etree

from wsemail.protocol.errors import (
    Rejected,
    RequestInvalid,
    ServerError,
    UnknownRecipient,
    WsemailError,
)
from wsemail.protocol.message import (
    Message,
    domain_of,
    instant_flags,
    new_message_id,
    normalize_address,
)
from wsemail.protocol.soap import element, int_of, q, text_of, texts_of
from wsemail.server.im import channel, direct, notices, records
from wsemail.server.im.channel import Channels
from wsemail.server.im.hub import STREAM_PATH, Hub, Push, event
from wsemail.server.im.newmail import MailFeed
from wsemail.server.im.policy import REMOTE_POLICIES, Policy, check_pattern, parse_kind
from wsemail.server.operations import deliver_locally
from wsemail.server.pipeline import (
    DeliveryProcessor,
    Environment,
    ExtensionProcessor,
    SendingProcessor,
    Verdict,
    dispatch,
)
from wsemail.server.sql import POSTGRESQL
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server
    from wsemail.server.im.nodes import Nodes

log = logging.getLogger("wsemail.im")
EXTENSION_ID = "im"
MAX_HISTORY = 500
MAX_IDLE_TIMEOUT = 7 * 86400  # what OpenChannel reads; the plug-in's own maximum applies
MAX_HEARTBEAT = 30.0
MAX_ACKS = 100  # ids in one Ack


def push_payload(message: Message, recipient: str, push_id: str) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": push_id,
        "message_id": message.message_id,
        "from": message.sender,
        "to": message.to,
        "cc": message.cc,
        "recipient": recipient,
        "subject": message.subject,
        "body": message.body,
        "date": message.date,
    }
    if message.origin:
        payload["origin"] = message.origin
    if message.signed_xml is not None:  # the sending server's signed form, for the reader
        payload["signed"] = message.signed_xml.decode()
    return payload


class InstantMessaging(SendingProcessor, DeliveryProcessor, ExtensionProcessor):
    """Instant messages on the mail identity: live push, mailbox fallback, access control."""

    name = "im"
    extension_id = EXTENSION_ID

    def __init__(
        self,
        remote_policy: str = "allow",
        remote_domains: list[str] | None = None,
        ticket_lifetime: float = 60,
        heartbeat: float = 10,
        ack_timeout: float = 5,
        max_sessions_per_user: int = 16,
        max_sessions: int = 10_000,
        token_lifetime: float = 3600,
        channel_host: str | None = None,
        channel_advertise: str | None = None,
        channel_idle_timeout: float = 600,
        max_channels: int = 64,
    ) -> None:
        if remote_policy not in REMOTE_POLICIES:
            raise ValueError(f"remote_policy must be one of {', '.join(REMOTE_POLICIES)}")
        domains = None if remote_domains is None else frozenset(d.lower() for d in remote_domains)
        self.policy = Policy(remote_policy, domains)
        self.ticket_lifetime = float(ticket_lifetime)
        self.heartbeat = float(heartbeat)
        if not 0 < self.heartbeat <= MAX_HEARTBEAT:
            # clients give up on a stream silent for three beats (60 s if none is named)
            raise ValueError(f"heartbeat must be between 0 and {MAX_HEARTBEAT:g} seconds")
        self.ack_timeout = float(ack_timeout)
        if not 0 < self.ack_timeout <= 300:
            raise ValueError("ack_timeout must be between 0 and 300 seconds")
        self.max_sessions_per_user = int(max_sessions_per_user)
        self.max_sessions = int(max_sessions)
        if self.max_sessions_per_user < 1 or self.max_sessions < 1:
            raise ValueError("max_sessions_per_user and max_sessions must be at least 1")
        self.token_lifetime = float(token_lifetime)
        self.channel_host = channel_host
        self.channel_advertise = channel_advertise
        self.channel_idle_timeout = float(channel_idle_timeout)
        self.max_channels = int(max_channels)
        self.server: Server | None = None
        self._hub: Hub | None = None
        self._mail: MailFeed | None = None
        # other plug-ins that follow new mail too (the IMAP plug-in's IDLE): each is called
        # (from any thread) with the owners a commit gave new mail, as the hub is
        self.mail_listeners: list[Callable[[list[str]], Any]] = []
        self._channels: Channels | None = None
        self._nodes: Nodes | None = None  # the other nodes of this domain (PostgreSQL)
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None

    # wiring -----------------------------------------------------------------------------
    @property
    def hub(self) -> Hub:
        if self._hub is None:
            raise ServerError("the IM plug-in is not attached to a server")
        return self._hub

    def attach(self, server: Any) -> None:
        self.server = server
        server.store.ensure_schema(self.name, records.MIGRATIONS)
        mail = MailFeed(server.store, self._new_mail)
        server.store.transact_sync(mail.attach)
        self._mail = mail
        self._hub = Hub(
            server,
            self._fallback,
            heartbeat=self.heartbeat,
            ack_timeout=self.ack_timeout,
            waiting=self._waiting,
            max_sessions_per_user=self.max_sessions_per_user,
            max_sessions=self.max_sessions,
            mail=mail,
        )
        hub = self._hub
        mail.listening = lambda: hub.follows_mail() or bool(self.mail_listeners)
        if server.store.dialect == POSTGRESQL:  # several nodes may share the database
            from wsemail.server.im.nodes import Nodes

            self._nodes = Nodes(server.store, self._hub, mail, push_payload)
            self._nodes.start()
            self._check_advertised(server)
        # no session is live here yet: whatever waited for one before this start moves on
        # now (but for a recipient live on another node, which may still be sent it)
        after: list[Any] = []
        held = self._nodes.elsewhere if self._nodes is not None else None
        moved = server.store.transact_sync(lambda tx: self._sweep(tx, float("inf"), after, held))
        _run_all(after)
        if moved:
            log.info("%d instant message(s) unacknowledged before the start moved on", moved)
        server.routes[STREAM_PATH] = self._hub.stream
        direct.register(server, self)
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweeping, name="wsemail-im-acks", daemon=True)
        self._sweeper.start()

    def _check_advertised(self, server: Server) -> None:
        """A node of a shared store: warn at start when its party lines' invitations could
        name another node (once per node, in worker 0; none without a federation identity)."""
        config = server.config
        if config.identity_dir is None or config.worker != 0:
            return
        bind = self.channel_host or config.host
        warning = channel.shared_store_warning(bind, self.channel_advertise, config.domain)
        if warning is not None:
            log.warning("%s", warning)

    def _new_mail(self, owners: list[str]) -> None:
        self.hub.wake_mail(owners)
        for listener in list(self.mail_listeners):
            try:
                listener(owners)
            except Exception:  # a follower's failure must not stop the push
                log.exception("a new-mail listener failed")

    def live_counts(self) -> tuple[int, int]:
        """(live push sessions, open party lines), for the admin status and the metrics."""
        channels = self._channels
        return self.hub.count(), channels.count() if channels is not None else 0

    def stopping(self) -> None:
        """The server stops: end every push stream now (new ones are refused)."""
        if self._hub is not None:
            self._hub.close()

    def close(self) -> None:
        self._stop.set()
        if self._sweeper is not None:
            self._sweeper.join(10)
            self._sweeper = None
        server = self.server
        if server is not None:
            if server.routes.get(STREAM_PATH) == getattr(self._hub, "stream", None):
                del server.routes[STREAM_PATH]
            direct.unregister(server)
        if self._hub is not None:
            self._hub.close()
        if self._nodes is not None:
            self._nodes.close()
            self._nodes = None
        if self._channels is not None:
            self._channels.close()

    # sending ----------------------------------------------------------------------------
    def process_outgoing(self, message: Message, env: Environment) -> None:
        node = env.request.find(q("Message")) if env.request.tag == q("Send") else None
        if node is None:
            return
        instant, delete = instant_flags(node)
        message.instant = instant
        message.delete_if_undeliverable = instant and delete

    # delivery ---------------------------------------------------------------------------
    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        if self._mail is not None:  # once this unit has committed: new mail to tell about?
            self._mail.check_soon()
        if not message.instant:
            return Verdict.PASS
        self.deliver_instant(message, recipient, env)
        return Verdict.TAKEN

    def deliver_instant(self, message: Message, recipient: str, env: Environment) -> str:
        """Push, keep or drop one instant message; returns pushed | mailbox | dropped."""
        tx = env.tx
        if tx.user(recipient) is None:
            raise UnknownRecipient(f"no such user: {recipient}")
        reason = self.policy.refusal(tx, message.sender, recipient)
        if reason is not None:
            log.info("IM from %r to %r refused: %s", message.sender, recipient, reason)
            raise Rejected(f"{recipient} does not take instant messages from you ({reason})")
        push_id = secrets.token_hex(12)
        hub, nodes = self.hub, self._nodes
        elsewhere = nodes.elsewhere(tx, recipient) if nodes is not None else 0
        if hub.live(recipient) or elsewhere:
            data = event("message", push_payload(message, recipient, push_id), push_id)
            records.record(
                tx, push_id, recipient, message.sender, message.message_id, message.body, "pending"
            )
            records.add_pending(tx, push_id, recipient, message, tx.now + self.ack_timeout)
            if nodes is not None and elsewhere:  # the other nodes push it to theirs
                nodes.announce_push(tx, recipient, push_id)
            hub.hold(Push(push_id, recipient, message, data, shared=bool(elsewhere)))
            env.after_commit.append(lambda: hub.release(push_id))
            self._release_when_committed(push_id)
            return "pushed"
        if message.delete_if_undeliverable:
            if domain_of(message.sender) == env.domain:
                notices.notice(env, message, recipient, self.hub)
                return "dropped"
            raise Rejected(
                f"{recipient} is not online; the instant message was deleted as its sender asked"
            )
        self._to_mailbox(tx, env, message, recipient, push_id)
        return "mailbox"

    def _release_when_committed(self, push_id: str) -> None:
        """For units whose runner does not call `after_commit` (a `Deliver` from another
        domain): a follow-up job in the writer thread runs after this unit's batch has
        committed or rolled back, and releases the push only if its row is there."""
        assert self.server is not None
        hub = self.hub
        future = self.server.store.submit(lambda tx: records.committed(tx, push_id))

        def done(f: Any) -> None:
            if f.exception() is None and f.result():
                hub.release(push_id)
            else:
                hub.discard(push_id)

        future.add_done_callback(done)

    def _to_mailbox(
        self, tx: Tx, env: Environment, message: Message, recipient: str, push_id: str
    ) -> None:
        mta = env.pipeline.local_mta
        if mta is None:
            raise ServerError("no local delivery plug-in is loaded")
        public_id = mta.store(message, recipient, env)
        records.mark_missed(tx, recipient, public_id)
        records.record(
            tx, push_id, recipient, message.sender, message.message_id, message.body, "mailbox"
        )

    def _fallback(self, push: Push) -> None:
        """A push that found no live session after all: it moves on now."""
        server = self.server
        if server is None:
            return

        after: list[Any] = []

        def work(tx: Tx) -> None:
            after.clear()
            if records.take_pending(tx, push.push_id):
                self._move_on(tx, push.push_id, push.recipient, push.message, after)

        log.info("no live session took %s for %r: moved on", push.push_id, push.recipient)
        future = server.store.submit(work)
        future.add_done_callback(lambda f: _run_all(after) if f.exception() is None else None)

    def _move_on(
        self, tx: Tx, push_id: str, recipient: str, message: Message, after: list[Any]
    ) -> None:
        """An instant message no listener acknowledged (its pending row already taken):
        into the mailbox, flagged, or — "delete if undeliverable" — dropped, sender told."""
        assert self.server is not None
        env = self._environment(tx, f"im:{self.server.config.domain}")
        if message.delete_if_undeliverable:
            notices.undeliverable(env, message, recipient, self.hub)
            records.set_outcome(tx, push_id, "dropped")
        else:
            mta = env.pipeline.local_mta
            if mta is None:
                raise ServerError("no local delivery plug-in is loaded")
            public_id = mta.store(message, recipient, env)
            records.mark_missed(tx, recipient, public_id)
            records.set_outcome(tx, push_id, "mailbox")
        after.extend(env.after_commit)  # the caller runs them once the unit has committed

    def _sweep(
        self,
        tx: Tx,
        now: float,
        after: list[Any],
        held: Callable[[Tx, str], int] | None = None,
    ) -> int:
        """Move on every pending push whose deadline is past `now` (but those whose
        recipient `held` says is live elsewhere)."""
        after.clear()
        moved = 0
        while True:
            late = records.overdue(tx, now)
            before = moved
            for pending in late:
                if held is not None and held(tx, pending.owner):
                    continue
                if not records.take_pending(tx, pending.push_id):
                    continue
                moved += 1
                try:
                    self._move_on(tx, pending.push_id, pending.owner, pending.message, after)
                except WsemailError as exc:  # e.g. the recipient was removed meanwhile
                    log.warning("instant message %s dropped: %s", pending.push_id, exc)
                    records.set_outcome(tx, pending.push_id, "dropped")
            if len(late) < 200 or moved == before:
                return moved

    def _sweeping(self) -> None:
        """The sweeper thread: late pushes move on, sessions that acknowledge nothing end."""
        server = self.server
        assert server is not None
        interval = min(1.0, max(0.05, self.ack_timeout / 4))
        while not self._stop.wait(interval):
            try:
                self._sweep_now(server)
            except Exception:  # a store hiccup: the next round tries again
                if self._stop.is_set():
                    return
                log.exception("moving unacknowledged instant messages on failed")
            if self._hub is not None:
                self._hub.reap()
            if self._nodes is not None:
                self._nodes.beat()
            if self._mail is not None:
                try:
                    self._mail.check_soon()
                    self._mail.prune_now()
                except Exception:
                    if self._stop.is_set():
                        return
                    log.exception("new-mail events not checked")

    def _sweep_now(self, server: Server) -> None:
        after: list[Any] = []
        server.store.submit(lambda tx: self._sweep(tx, tx.now, after)).result(timeout=30)
        _run_all(after)

    async def _waiting(self, address: str) -> list[Push]:
        """`address`'s pushes still waiting for an acknowledgement, for a new session."""
        server = self.server
        assert server is not None
        found = await server.store.transact(lambda tx: records.pending_for(tx, address, tx.now))
        return [
            Push(
                p.push_id,
                address,
                p.message,
                event("message", push_payload(p.message, address, p.push_id), p.push_id),
            )
            for p in found
        ]

    def _environment(self, tx: Tx, principal: str) -> Environment:
        assert self.server is not None
        server = self.server
        return Environment(
            principal=principal,
            domain=server.config.domain,
            tx=tx,
            request=etree.Element(q("Internal")),
            pipeline=server.pipeline,
            clock=server.clock,
            wake_relay=self._wake_relay,
        )

    def _wake_relay(self) -> None:
        relay = self.server.relay if self.server is not None else None
        if relay is not None:
            relay.wake_threadsafe()

    # extension --------------------------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        handlers = {
            "OpenStream": self._open_stream,
            "Ack": self._ack,
            "Who": self._who,
            "GetAcl": self._get_acl,
            "SetAcl": self._set_acl,
            "History": self._history,
            "Missed": self._missed,
            "OpenChannel": self._open_channel,
        }
        return dispatch(payload, handlers, env, "im")

    def _open_stream(self, op: etree._Element, env: Environment) -> etree._Element:
        ticket = records.issue_ticket(env.tx, env.principal, self.ticket_lifetime)
        result = etree.Element(q("StreamTicket"))
        element(result, "Ticket", ticket)
        element(result, "Path", STREAM_PATH)
        element(result, "Lifetime", str(int(self.ticket_lifetime)))
        element(result, "Heartbeat", f"{self.heartbeat:g}")
        element(result, "AckTimeout", f"{self.ack_timeout:g}")
        return result

    def _ack(self, op: etree._Element, env: Environment) -> etree._Element:
        """The listener took these pushes (by id): each answered acked, or what became of
        it instead (mailbox | dropped, when the acknowledgement came too late), or unknown."""
        ids = [i.strip() for i in texts_of(op, "Id")]
        if not ids or len(ids) > MAX_ACKS or any(not 1 <= len(i) <= 64 for i in ids):
            raise RequestInvalid(f"Ack names 1 to {MAX_ACKS} push ids")
        result = etree.Element(q("Acked"))
        acked: list[str] = []
        for push_id in dict.fromkeys(ids):
            status = records.acknowledge(env.tx, env.principal, push_id)
            if status == "acked":
                acked.append(push_id)
            element(result, "Id", push_id).set("status", status)
        hub = self.hub
        principal = env.principal
        env.after_commit.append(lambda: hub.acked(principal, acked))
        if self._nodes is not None:  # the session may be on another node
            self._nodes.announce_acked(env.tx, principal, acked)
        return result

    def _who(self, op: etree._Element, env: Environment) -> etree._Element:
        """Presence of the named addresses (or of everyone online here) as the caller may
        see it: someone who would refuse the caller's instant messages shows as offline."""
        asked = [normalize_address(a) for a in texts_of(op, "Address")][:100]
        nodes = self._nodes
        online = self.hub.online() if nodes is None else nodes.online(env.tx)
        names = asked or sorted(a for a in online if a != env.principal)
        result = etree.Element(q("Presence"))
        for address in names:
            node = element(result, "Contact")
            node.set("address", address)
            if domain_of(address) != env.domain or env.tx.user(address) is None:
                node.set("status", "unknown")
                continue
            visible = self.policy.refusal(env.tx, env.principal, address) is None
            sessions = online.get(address, 0) if visible else 0
            node.set("status", "online" if sessions else "offline")
            node.set("sessions", str(sessions))
        return result

    def _get_acl(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("Acl"))
        for kind, patterns in records.acl(env.tx, env.principal).items():
            for pattern in patterns:
                element(result, "Entry", pattern).set("list", kind)
        return result

    def _set_acl(self, op: etree._Element, env: Environment) -> etree._Element:
        kind = parse_kind(text_of(op, "List"))
        pattern = check_pattern(text_of(op, "Pattern") or "")
        present = (text_of(op, "Present") or "true").strip()
        if present not in ("true", "false"):
            raise RequestInvalid("Present must be true or false")
        records.set_acl(env.tx, env.principal, kind, pattern, present == "true")
        return self._get_acl(op, env)

    def _history(self, op: etree._Element, env: Environment) -> etree._Element:
        peer_raw = (text_of(op, "Peer") or "").strip()
        peer = normalize_address(peer_raw) if peer_raw else None
        limit = int_of(op, "Limit", 1, MAX_HISTORY, 50)
        result = etree.Element(q("History"))
        for entry in records.history(env.tx, env.principal, peer, limit):
            node = element(result, "Entry")
            node.set("from", entry.peer)
            node.set("message-id", entry.message_id)
            node.set("at", f"{entry.at:.3f}")
            node.set("outcome", entry.outcome)
            node.text = entry.body
        return result

    def _missed(self, op: etree._Element, env: Environment) -> etree._Element:
        result = etree.Element(q("Missed"))
        for public_id in records.missed(env.tx, env.principal):
            element(result, "Id", public_id)
        return result

    # party line -------------------------------------------------------------------------
    @property
    def channels(self) -> Channels:
        """The party lines (made on first use: a server that never opens one binds nothing)."""
        server = self.server
        if server is None or server.federation is None or server.config.identity_dir is None:
            raise ServerError("this server has no federation identity for a party line")
        if self._channels is None:
            federation = server.federation
            identity_dir = server.config.identity_dir
            bind = self.channel_host or server.config.host
            advertise = channel.advertised_host(bind, self.channel_advertise, server.config.domain)

            def admit(der: bytes | None, issuer: object) -> str:
                federation.refresh_crls()
                verify = federation.trust.verify_user
                return channel.peer_address(der, channel.load_issuer(issuer), verify)

            self._channels = Channels(
                domain=server.config.domain,
                bind_host=bind,
                advertise_host=advertise,
                context=lambda: channel.server_context(identity_dir, federation.root_files),
                certificate=federation.identity.cert,
                admit=admit,
                max_channels=self.max_channels,
                max_idle=self.channel_idle_timeout,
            )
        return self._channels

    def _open_channel(self, op: etree._Element, env: Environment) -> etree._Element:
        addresses = [normalize_address(a) for a in texts_of(op, "Address")]
        idle = int_of(op, "IdleTimeout", 1, MAX_IDLE_TIMEOUT, 0)  # 0: the plug-in's default
        info = self.channels.open(env.principal, addresses, float(idle) if idle else None)
        outcomes = self._invite(info, env)
        result = etree.Element(q("Channel"))
        element(result, "Id", info.id)
        element(result, "Host", info.host)
        element(result, "Port", str(info.port))
        element(result, "Fingerprint", info.fingerprint)
        element(result, "Domain", info.domain)
        element(result, "IdleTimeout", str(int(info.idle_timeout)))
        for address in info.invited:
            node = element(result, "Invited", address)
            node.set("status", outcomes[address])
        return result

    def _invite(self, info: channel.ChannelInfo, env: Environment) -> dict[str, str]:
        """One instant message from the opener to every participant: pushed or kept here,
        queued (signed by this server) for other domains; a local refusal is reported."""
        body = info.invitation()
        date = datetime.fromtimestamp(env.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        message = Message(
            id="",
            message_id=new_message_id(env.domain),
            folder="sent",
            sender=env.principal,
            to=list(info.invited),
            cc=[],
            subject="Party line invitation",
            date=date,
            size=len(body.encode()),
            seen=True,
            body=body,
            instant=True,
        )
        outcomes: dict[str, str] = {}
        remote: dict[str, list[str]] = {}
        for address in info.invited:
            domain = domain_of(address)
            if domain != env.domain:
                remote.setdefault(domain, []).append(address)
                outcomes[address] = "queued"
                continue
            try:
                deliver_locally(message, address, env)
                outcomes[address] = "invited"
            except Rejected as exc:
                log.info("channel %s: invitation to %r refused: %s", info.id, address, exc.reason)
                outcomes[address] = "refused"
        queue = env.pipeline.queue
        for domain, recipients in sorted(remote.items()):
            if queue is None:
                raise ServerError("no mail queue is loaded")
            queue.enqueue(message, domain, recipients, env)
        return outcomes


def _run_all(callbacks: list[Any]) -> None:
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after an instant message moved on")
