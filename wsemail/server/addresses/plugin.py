"""The built-in mapped-address plug-in `aliases` (role `mapped-address`)."""

from __future__ import annotations

import logging
from typing import Any

from wsemail.protocol.message import Message, domain_of
from wsemail.server import autoreply
from wsemail.server.addresses import records
from wsemail.server.addresses.rules import may_forward_to
from wsemail.server.pipeline import AddressMap, Claim, Environment

log = logging.getLogger("wsemail.addresses")


class Aliases(AddressMap):
    """Aliases, role addresses and auto-responders (`wsemail alias …`)."""

    name = "aliases"

    def __init__(self, external: list[str] | None = None) -> None:
        # outside domains an alias may point at ("*": any); none by default
        if external is not None and not (
            isinstance(external, list) and all(isinstance(d, str) for d in external)
        ):
            raise ValueError("aliases option external must be a list of domains")
        self.external = [d.lower() for d in external or []]

    def attach(self, server: Any) -> None:
        server.store.ensure_schema(records.COMPONENT, records.MIGRATIONS)

    def claim(self, address: str, env: Environment) -> Claim | None:
        found = records.get(env.tx, address)
        if found is None:
            return None
        targets = tuple(
            t
            for t in found.targets
            if domain_of(t) == env.domain or may_forward_to(domain_of(t), self.external)
        )
        if len(targets) < len(found.targets):
            log.warning("%s: outside targets no longer allowed are left out", address)
        return Claim(found.kind, targets)

    def take(self, message: Message, address: str, env: Environment) -> None:
        found = records.get(env.tx, address)
        if found is None or found.kind != "autoresponse":
            return
        why = autoreply.refusal(message, address)
        if why is not None:
            log.info("%s does not answer %s: %s", address, message.sender, why)
            return
        autoreply.reply(message, address, found.subject, found.body, env)
