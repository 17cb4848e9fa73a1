"""In charge of who may send an instant message to whom: the recipient's block list (always
wins), the recipient's allow list (when it has one, only those), and the operator's policy
for senders from other domains (`allow`, `contacts` = only senders on the allow list,
`deny`; optionally limited to some domains). Patterns: `user@domain`, `@domain`, `*`."""

from __future__ import annotations

from dataclasses import dataclass

from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.server.im import records
from wsemail.server.store import Tx

REMOTE_POLICIES = ("allow", "contacts", "deny")


def check_pattern(raw: str) -> str:
    pattern = raw.strip()
    if pattern == "*":
        return pattern
    if pattern.startswith("@"):
        domain = normalize_address(f"x{pattern}").rpartition("@")[2]
        return f"@{domain}"
    return normalize_address(pattern)


def matches(pattern: str, sender: str) -> bool:
    if pattern == "*":
        return True
    if pattern.startswith("@"):
        return domain_of(sender) == pattern[1:]
    return sender == pattern


@dataclass(frozen=True)
class Policy:
    remote: str = "allow"
    domains: frozenset[str] | None = None  # other domains that may send (None: any)

    def __post_init__(self) -> None:
        if self.remote not in REMOTE_POLICIES:
            raise ValueError(f"remote policy must be one of {', '.join(REMOTE_POLICIES)}")

    def refusal(self, tx: Tx, sender: str, recipient: str) -> str | None:
        """Why `sender` may not send `recipient` an instant message; None if it may."""
        lists = records.acl(tx, recipient)
        if any(matches(p, sender) for p in lists["block"]):
            return "blocked"
        listed = any(matches(p, sender) for p in lists["allow"])
        if lists["allow"] and not listed:
            return "not on the recipient's allow list"
        sender_domain = domain_of(sender)
        if sender_domain != domain_of(recipient) and not listed:
            if self.remote == "deny":
                return f"instant messages from {sender_domain} are not accepted here"
            if self.remote == "contacts":
                return "senders from other domains must be on the recipient's allow list"
            if self.domains is not None and sender_domain not in self.domains:
                return f"instant messages from {sender_domain} are not accepted here"
        return None


def parse_kind(raw: str | None) -> str:
    kind = (raw or "").strip()
    if kind not in ("allow", "block"):
        raise RequestInvalid("List must be allow or block")
    return kind
