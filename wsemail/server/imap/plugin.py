"""The `imap` server plug-in (off unless listed, or `wsemail serve --imap-port P`): IMAP4rev1
for existing mail programs over the user's wsemail mailbox.

Options: `host` (127.0.0.1), `port` (993 with TLS, 143 without), `tls` = auto | implicit |
starttls | none (auto: implicit TLS when the server has a certificate, else plain, which is
allowed on a loopback address only), `loopback_plain_login` (true: LOGIN without TLS from a
loopback peer; false: never without TLS), `max_append` (bytes of an APPEND), `max_literal`
(bytes of any other literal), `idle_poll` (seconds between IDLE looks at the store besides
the wake-up a delivery sends), `max_connections` (all), `max_connections_per_peer` (per
address, IPv6 per /64).

IDLE is fed by the same new-mail push as `wsemail watch` and the TUI: with the `im`
plug-in loaded, its new-mail feed (`im/newmail.py`, events written by a trigger with every
copy that arrives) wakes the owner's IMAP sessions too. Without it, the plug-in's own
delivery processor wakes them once a local delivery's unit of work has committed (and
passes the message on). Either way a session also looks every `idle_poll` seconds, which
catches what the feed does not announce (flags or moves made elsewhere).
"""

from __future__ import annotations

import ssl
from typing import Any

from wsemail.protocol.message import Message
from wsemail.server.im import InstantMessaging
from wsemail.server.imap import records
from wsemail.server.imap.parser import Limits
from wsemail.server.imap.service import Service
from wsemail.server.imap.session import Session
from wsemail.server.pipeline import DeliveryProcessor, Environment, Verdict


class Imap(DeliveryProcessor):
    """IMAP4rev1 (RFC 3501) for existing mail programs: sync, read, flag, move, delete."""

    name = "imap"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: str = "auto",
        loopback_plain_login: bool = True,
        max_append: int = 25 << 20,
        max_literal: int = 64 << 10,
        idle_poll: float = 15.0,
        max_connections: int = 1000,
        max_connections_per_peer: int = 64,
    ) -> None:
        if int(max_append) <= 0 or int(max_literal) <= 0 or float(idle_poll) <= 0:
            raise ValueError("max_append, max_literal and idle_poll must be positive")
        if int(max_connections) <= 0 or int(max_connections_per_peer) <= 0:
            raise ValueError("max_connections and max_connections_per_peer must be positive")
        if tls not in ("auto", "implicit", "starttls", "none"):
            raise ValueError("tls is one of auto, implicit, starttls, none")
        self.host, self.port, self.tls = str(host), port, str(tls)
        self.loopback_plain_login = bool(loopback_plain_login)
        self.limits = Limits(max_literal=int(max_literal), max_append=int(max_append))
        self.idle_poll, self.max_connections = float(idle_poll), int(max_connections)
        self.max_connections_per_peer = int(max_connections_per_peer)
        self.service: Service | None = None
        self.server: Any = None
        self.feed: InstantMessaging | None = None

    def attach(self, server: Any) -> None:
        config = server.config
        context = None
        if config.tls_cert is not None and config.tls_key is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(str(config.tls_cert), str(config.tls_key))
        mode = self.tls
        if mode == "auto":
            mode = "implicit" if context is not None else "none"
        port = self.port if self.port is not None else (143 if mode != "implicit" else 993)
        server.store.ensure_schema(self.name, records.MIGRATIONS)
        self.service = Service(
            server,
            Session,
            self.host,
            int(port),
            tls=mode,
            context=context,
            loopback_plain_login=self.loopback_plain_login,
            limits=self.limits,
            idle_poll=self.idle_poll,
            max_connections=self.max_connections,
            max_connections_per_peer=self.max_connections_per_peer,
        ).start()
        self.server = server
        for entry in server.pipeline.listing():
            if isinstance(entry.plugin, InstantMessaging):
                self.feed = entry.plugin
                self.feed.mail_listeners.append(self.new_mail)

    @property
    def address(self) -> tuple[str, int]:
        assert self.service is not None, "not attached"
        return self.service.address

    def new_mail(self, owners: list[str]) -> None:
        """(Any thread.) The new-mail feed says these users have new mail."""
        service = self.service
        if service is not None:
            for owner in owners:
                service.wake_threadsafe(owner)

    def close(self) -> None:
        feed, self.feed = self.feed, None
        if feed is not None and self.new_mail in feed.mail_listeners:
            feed.mail_listeners.remove(self.new_mail)
        service, self.service = self.service, None
        if service is not None:
            service.stop()

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        service = self.service
        if service is not None and self.server is not None and self.feed is None:
            # no new-mail feed (no `im` plug-in): a follow-up job in the writer thread runs
            # once this unit's batch has committed
            follow_up = self.server.store.submit(lambda tx: None)
            follow_up.add_done_callback(lambda _: service.wake_threadsafe(recipient))
        return Verdict.PASS
