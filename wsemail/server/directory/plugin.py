"""In charge of the address directory plug-in, one composite (DESIGN.md §5):

- extension `directory` (password MAC, via `Extension`): Publish (opt in, with a display
  name, or change it), Unpublish, Show (the caller's own listing). Users are unlisted
  until they publish;
- top-level `Directory` (authenticated like the core operations): a search of this
  domain's listing, or — with `Domain` naming another domain — of that domain's, asked
  by this server on the user's behalf (`federated.ask`);
- top-level `DirectoryQuery` (signed by a peer server): another domain's server asking
  for its user (`federated.verify_peer`), answered with a signed envelope.

Every search, local or for a peer, counts against the asking user's rate limit
(`searches_per_minute`, token buckets of `wsemail.server.ratelimit`); a peer domain's
searches together also count against `peer_searches_per_minute`. On the PostgreSQL store
the buckets are rows (`records.take`, in the search's unit of work), so every node of the
domain counts against the same allowance; on SQLite (one process) they are in memory.
Options (server.toml `[[plugins]] ref = "directory"`): `min_query`, `max_query`, `page`,
`max_page`, `max_results`, `allow_dump` (an empty or short query lists everyone, no result cap),
`searches_per_minute`, `peer_searches_per_minute`, `federated` (answer other domains).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from lxml import etree

from wsemail.core.people import display_name
from wsemail.protocol import soap
from wsemail.protocol.errors import Forbidden, RateLimited, RequestInvalid
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.directory import federated, records, search
from wsemail.server.pipeline import Environment, ExtensionProcessor, dispatch
from wsemail.server.ratelimit import RateLimiter
from wsemail.server.sql import POSTGRESQL
from wsemail.server.store import Tx, UserRecord

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.directory")
EXTENSION_ID = "directory"
SEARCH = "Directory"
_DOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?$")
WINDOW = 60.0  # the rate limits count searches per minute
SWEEP_EVERY = 1000  # searches between two clean-ups of idle buckets in the database


class AddressDirectory(ExtensionProcessor):
    """Address directory: opt-in listing, searched by prefix, across domains signed."""

    name = "directory"
    extension_id = EXTENSION_ID

    def __init__(
        self,
        min_query: int = 2,
        max_query: int = 100,
        page: int = 20,
        max_page: int = 50,
        max_results: int = 100,
        allow_dump: bool = False,
        searches_per_minute: int = 30,
        peer_searches_per_minute: int = 300,
        federated: bool = True,
    ) -> None:
        if not (0 <= int(min_query) <= int(max_query) and 1 <= int(page) <= int(max_page)):
            raise ValueError("need 0 <= min_query <= max_query and 1 <= page <= max_page")
        self.policy = search.Policy(
            int(min_query),
            int(max_query),
            int(page),
            int(max_page),
            int(max_results),
            bool(allow_dump),
        )
        self.searches_per_minute = int(searches_per_minute)
        self.peer_searches_per_minute = int(peer_searches_per_minute)
        self.federated = bool(federated)
        self.server: Server | None = None
        self.cursors: search.Cursors | None = None
        self.per_user: RateLimiter | None = None
        self.per_domain: RateLimiter | None = None
        self._taken = 0  # searches counted in the database by this process

    # wiring -------------------------------------------------------------------------------
    def attach(self, server: Any) -> None:
        self.server = server
        server.store.ensure_schema(self.name, records.MIGRATIONS)
        self.cursors = search.Cursors(server.auth.secret)
        self.per_user = RateLimiter(self.searches_per_minute, WINDOW, clock=server.clock)
        self.per_domain = RateLimiter(self.peer_searches_per_minute, WINDOW, clock=server.clock)
        server.operations[SEARCH] = self.search
        server.operations[federated.OPERATION] = self.answer_peer

    def close(self) -> None:
        server = self.server
        if server is not None:
            server.operations.pop(SEARCH, None)
            server.operations.pop(federated.OPERATION, None)

    def _count(self, tx: Tx, limiter: RateLimiter | None, key: str, what: str) -> None:
        """One search against `key`'s allowance (RateLimited when it is used up)."""
        assert limiter is not None
        if tx.dialect == POSTGRESQL:
            kind = "domain" if limiter is self.per_domain else "user"
            allowed = records.take(tx, f"{kind}:{key}", limiter.limit, limiter.window)
            self._taken += 1
            if self._taken % SWEEP_EVERY == 0:
                records.forget_idle(tx, limiter.window)
        else:
            allowed = limiter.allow(key)
        if not allowed:
            raise RateLimited(f"too many directory searches {what}; try again in a minute")

    # the extension: one's own listing -------------------------------------------------------
    def handle(self, payload: etree._Element, env: Environment) -> etree._Element | None:
        handlers = {"Publish": self._publish, "Unpublish": self._unpublish, "Show": self._show}
        return dispatch(payload, handlers, env, EXTENSION_ID)

    def _publish(self, op: etree._Element, env: Environment) -> etree._Element:
        name = display_name(text_of(op, "Name") or "")
        records.publish(env.tx, env.principal, name)
        return self._show(op, env)

    def _unpublish(self, op: etree._Element, env: Environment) -> etree._Element:
        records.unpublish(env.tx, env.principal)
        return self._show(op, env)

    def _show(self, op: etree._Element, env: Environment) -> etree._Element:
        entry = records.entry(env.tx, env.principal)
        result = etree.Element(q("Listing"))
        element(result, "Address", env.principal)
        element(result, "Listed", "true" if entry is not None else "false")
        if entry is not None:
            element(result, "Name", entry.name)
        return result

    # searches -----------------------------------------------------------------------------
    async def search(
        self, server: Server, envelope: soap.ReceivedEnvelope, peer: str
    ) -> etree._Element:
        """A user's search: this domain's listing, or another domain's through its server."""
        op = envelope.operation
        own = server.config.domain
        domain = (text_of(op, "Domain") or "").strip().lower() or own
        policy, cursors = self.policy, self.cursors
        assert cursors is not None

        if domain == own:

            def local(tx: Tx, user: UserRecord) -> search.Answer:
                request = search.Request.from_xml(op, policy)
                self._count(tx, self.per_user, user.address, "from you")
                return search.answer(tx, request, policy, cursors)

            found = await server.authenticated(envelope, peer, local)
            return found.to_xml(own)

        def remote(tx: Tx, user: UserRecord) -> tuple[str, search.Request]:
            if not _DOMAIN.match(domain) or "." not in domain:
                raise RequestInvalid(f"not a domain: {domain[:80]!r}")
            request = search.Request.from_xml(op, policy)
            self._count(tx, self.per_user, user.address, "from you")
            return user.address, request

        asker, request = await server.authenticated(envelope, peer, remote)
        found = await federated.ask(server, domain, asker, request)
        return found.to_xml(domain)

    async def answer_peer(
        self, server: Server, envelope: soap.ReceivedEnvelope, peer: str
    ) -> etree._Element:
        """Another domain's server asking on behalf of its user."""
        if not self.federated:
            raise Forbidden(f"{server.config.domain} answers no look-ups from other domains")
        query = federated.verify_peer(server, envelope)
        policy, cursors = self.policy, self.cursors
        assert cursors is not None
        request = search.Request.from_xml(query.operation, policy)
        check = federated.remember(server, query)

        def work(tx: Tx) -> search.Answer:
            self._count(tx, self.per_domain, query.origin, f"from {query.origin}")
            self._count(tx, self.per_user, query.asker, "from you")
            check(tx)
            return search.answer(tx, request, policy, cursors)

        found = await server.store.transact(work)
        log.info(
            "answered a directory look-up for %r (%d entries)", query.asker, len(found.entries)
        )
        server.sign_answer(query.nonce)
        return found.to_xml(server.config.domain)
