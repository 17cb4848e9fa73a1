"""In charge of the forms plug-in's `Autofill` operation (the timesheet's "Autofill…"):
a web service of the user's own organisation, called with the user's federated identity
certificate (the `IssueToken` key, as for `FetchAttachment`).

The request is a top-level operation `Autofill(Address, Server, Nonce,
IssuerCertificate)`, XMLDSIG-signed by the user certificate's key over Body and Timestamp.
Checked here, failing closed: `verify_identity_request` (the chain user certificate → its
domain's issuing CA → a trusted root with CRLs, the signature's binding checks, freshness,
that the request names this server), then that the issuing CA is THIS domain's own, that
`Address` is the certificate's own address, and an unseen nonce (in the server's durable
replay cache, so a replay is refused after a restart too). The answer is that address's
record and nobody else's."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

from lxml import etree

from wsemail.protocol import soap
from wsemail.protocol.errors import (
    Forbidden,
    NotFound,
    ReplayDetected,
)
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.attachments.federated import verify_own_user_request
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.forms")
OPERATION = "Autofill"


async def autofill(
    server: Server,
    envelope: soap.ReceivedEnvelope,
    peer: str,
    employees: Mapping[str, Mapping[str, str]],
) -> etree._Element:
    """Verify a signed Autofill and answer with the signer's own record."""
    request = verify_own_user_request(server, envelope, OPERATION)
    op, address, nonce = request.operation, request.address, request.nonce
    if (text_of(op, "Address") or "").strip().lower() != address:
        raise Forbidden(f"{address} may ask only for its own record")
    keep = server.auth.keep_nonce

    def work(tx: Tx) -> None:
        if not tx.remember_nonce(f"user:{address}", nonce, keep):
            raise ReplayDetected("this request was already received")

    await server.store.transact(work)
    record = employees.get(address)
    if record is None:
        raise NotFound(f"no employee record for {address}")
    log.info("autofill for %r from %s", address, peer)
    result = etree.Element(q("AutofillResponse"))
    element(result, "Address", address)
    for name, value in sorted(record.items()):
        node = element(result, "Field", value)
        node.set("name", name)
    return result
