"""In charge of directory look-ups across domains, server to server, signed as relayed
mail is (DESIGN.md §4):

- asking (`ask`): this server signs a `DirectoryQuery` with its server key (Body and
  Timestamp, exclusive c14n), naming itself (Origin), the domain asked (Destination), the
  user it asks for (Asker), a fresh nonce and the search; it POSTs it over TLS that
  trusts only the federation roots, and accepts only an answer signed by the server
  certificate of the domain asked, fresh, bound to that nonce (InResponseTo), listing
  addresses of that domain only;
- answering (`answer_peer`): the hop signature with the binding checks, chain, role and
  CRLs of the signer (`Federation.server_signer`), Origin = the signer's domain, the Asker
  in that domain, Destination = this domain, freshness, a durable nonce; rate limits per
  peer domain and per asker; then the same search, limits and listing rules as for this
  server's own users, and an answer signed with this server's key.
"""

from __future__ import annotations

import base64
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from lxml import etree

from wsemail.core.people import display_name
from wsemail.protocol import soap
from wsemail.protocol.auth import IN_RESPONSE_TO, NONCE_BYTES, timestamp
from wsemail.protocol.dsig import add_timestamp, verify_envelope
from wsemail.protocol.errors import (
    Forbidden,
    InvalidSecurity,
    NoRoute,
    NotFound,
    RateLimited,
    RemoteFault,
    ReplayDetected,
    RequestInvalid,
    RoutingError,
    ServerBusy,
    ServerError,
    SignatureInvalid,
    UntrustedSigner,
)
from wsemail.protocol.message import domain_of, is_address, normalize_address
from wsemail.protocol.soap import WSSE, WSU, element, q, text_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted
from wsemail.server.directory import search
from wsemail.server.store import Tx

if TYPE_CHECKING:
    import httpx

    from wsemail.server.app import Server

log = logging.getLogger("wsemail.directory")
OPERATION = "DirectoryQuery"
ANSWER_LIMITS = XmlLimits(max_bytes=1 << 20, max_depth=16, max_elements=10_000)
TIMEOUT = 10.0
# a peer's refusal reaches the user as the same kind of fault; anything else (its security
# faults, say) as Forbidden, so it never reads as the user's own login failing
PASSED_ON: tuple[type[RemoteFault], ...] = (RateLimited, RequestInvalid, NotFound, Forbidden)


@dataclass(frozen=True)
class PeerQuery:
    """A verified DirectoryQuery: the asking domain, the user it asks for, its nonce."""

    origin: str
    asker: str
    nonce: str
    operation: etree._Element


# asking -----------------------------------------------------------------------------------
def query_envelope(
    server: Server, domain: str, asker: str, request: search.Request
) -> tuple[bytes, str]:
    """A freshly signed DirectoryQuery to `domain`, and its nonce."""
    federation = server.federation
    assert federation is not None
    env, header, body = soap.new_envelope()
    security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
    now = server.clock()
    add_timestamp(
        security,
        timestamp(datetime.fromtimestamp(now, UTC)),
        timestamp(datetime.fromtimestamp(now + 300, UTC)),
    )
    op = etree.SubElement(body, q(OPERATION))
    nonce = base64.b64encode(os.urandom(NONCE_BYTES)).decode("ascii")
    element(op, "Origin", federation.domain)
    element(op, "Destination", domain)
    element(op, "Asker", asker)
    element(op, "Nonce", nonce)
    request.to_xml(op)
    federation.signer.sign_envelope_fast(env)
    return soap.serialize(env), nonce


async def ask(server: Server, domain: str, asker: str, request: search.Request) -> search.Answer:
    """Search `domain`'s directory for `asker` (a user of this server)."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server is not part of a federation")
    try:
        targets = await federation.resolver.resolve(domain)
    except NoRoute as exc:
        raise NotFound(f"{domain} has no wsemail service") from exc
    except RoutingError as exc:
        raise ServerBusy(f"cannot resolve {domain} now; try again later") from exc
    last = f"no server of {domain} answered"
    import httpx  # a server that never asks another's directory does not load it

    async with httpx.AsyncClient(verify=federation.tls_context(), timeout=TIMEOUT) as http:
        for target in targets:
            data, nonce = query_envelope(server, domain, asker, request)
            try:
                body = await _post(http, target.url, data, domain)
            except httpx.HTTPError as exc:
                last = f"no server of {domain} answered ({type(exc).__name__})"
                log.info("directory of %s at %s: %r", domain, target.url, exc)
                continue
            return _checked_answer(server, body, domain, nonce)
    raise ServerBusy(last)


async def _post(http: httpx.AsyncClient, url: str, data: bytes, domain: str) -> bytes:
    """The answer's bytes, read up to the answer limit (a larger one is refused)."""
    chunks: list[bytes] = []
    size = 0
    headers = {"content-type": soap.CONTENT_TYPE}
    extensions = {"sni_hostname": domain}
    async with http.stream(
        "POST", url, content=data, headers=headers, extensions=extensions
    ) as response:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > ANSWER_LIMITS.max_bytes:
                raise ServerError(f"the directory of {domain} answered too much")
            chunks.append(chunk)
    return b"".join(chunks)


def _checked_answer(server: Server, body: bytes, domain: str, nonce: str) -> search.Answer:
    federation = server.federation
    assert federation is not None
    try:
        root = parse_untrusted(body, ANSWER_LIMITS)
        answer = soap.split_envelope(root).operation
    except RemoteFault as exc:
        raise ServerError(f"unreadable answer from the directory of {domain}") from exc
    try:
        soap.raise_if_fault(answer)
    except PASSED_ON as exc:
        raise type(exc)(f"{domain}: {exc.reason}") from exc
    except RemoteFault as exc:
        raise Forbidden(f"{domain} refused the look-up: {exc.reason}") from exc
    try:
        verified = verify_envelope(root, federation.server_signer)
        if verified.signer != domain:
            raise UntrustedSigner(f"signed by the server of {verified.signer}, not {domain}")
        server.auth.check_timestamp(verified.timestamp)
        op = verified.operation
        if op.tag != q("DirectoryResponse") or op.get(IN_RESPONSE_TO) != nonce:
            raise SignatureInvalid("the answer does not answer this query")
        found = search.read_answer(op)
        for entry in found.entries:
            if not is_address(entry.address) or domain_of(entry.address).lower() != domain:
                raise UntrustedSigner(f"{domain} answered an address outside its domain")
            display_name(entry.name)
    except RemoteFault as exc:
        log.warning("directory answer from %s refused: %s", domain, exc.reason)
        raise ServerError(f"the answer of {domain}'s directory was refused: {exc.reason}") from exc
    return found


# answering -------------------------------------------------------------------------------
def verify_peer(server: Server, envelope: soap.ReceivedEnvelope) -> PeerQuery:
    """Every check of a peer's DirectoryQuery that needs no database."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server answers no federated look-ups")
    verified = verify_envelope(envelope.root, federation.server_signer)
    origin, op = verified.signer, verified.operation
    if op.tag != q(OPERATION):
        raise SignatureInvalid(f"the signed operation is not {OPERATION}")
    server.auth.check_timestamp(verified.timestamp)
    if (text_of(op, "Destination") or "").strip().lower() != server.config.domain:
        raise Forbidden("this look-up is addressed to another domain")
    if (text_of(op, "Origin") or "").strip().lower() != origin:
        raise UntrustedSigner(f"{origin} signed a look-up claiming another origin")
    asker = normalize_address(text_of(op, "Asker") or "")
    if domain_of(asker) != origin:
        raise UntrustedSigner(f"{origin} may not ask for {asker}")
    raw = text_of(op, "Nonce") or ""
    try:
        value = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise InvalidSecurity("Nonce is not base64") from exc
    if len(value) < NONCE_BYTES:
        raise InvalidSecurity(f"Nonce shorter than {NONCE_BYTES} bytes")
    return PeerQuery(origin, asker, raw, op)


def remember(server: Server, query: PeerQuery) -> Callable[[Tx], None]:
    """The check that runs first in the answer's unit of work: the nonce, once."""
    canonical = base64.b64encode(base64.b64decode(query.nonce)).decode("ascii")

    def check(tx: Tx) -> None:
        if not tx.remember_nonce(f"directory:{query.origin}", canonical, server.auth.keep_nonce):
            raise ReplayDetected("this look-up was already received")

    return check
