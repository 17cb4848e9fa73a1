"""Sending processor: where local users may send. The server's own domain always; other
domains when listed in `allow` (exact names, `*.suffix`, or `*` for every domain — the
default, since only authenticated local users can submit). Unauthenticated peers can never
make the server relay: federated `Deliver` only delivers to this domain."""

from __future__ import annotations

from wsemail.protocol.errors import RelayDenied
from wsemail.protocol.message import Message, domain_of
from wsemail.server.pipeline import Environment, SendingProcessor


class RelayPolicy(SendingProcessor):
    """Refuse recipients outside the local domain unless their domain is allowed."""

    name = "relay-policy"

    def __init__(self, allow: list[str] | None = None) -> None:
        self.allow = [a.lower() for a in (allow or [])]

    def permits(self, domain: str, local_domain: str) -> bool:
        if domain == local_domain:
            return True
        return any(
            a == "*" or domain == a or (a.startswith("*.") and domain.endswith(a[1:]))
            for a in self.allow
        )

    def process_outgoing(self, message: Message, env: Environment) -> None:
        denied = [r for r in message.recipients if not self.permits(domain_of(r), env.domain)]
        if denied:
            raise RelayDenied("relaying denied for " + ", ".join(sorted(set(denied))))
