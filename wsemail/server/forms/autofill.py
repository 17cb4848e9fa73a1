"""In charge of the forms plug-in's `Autofill` operation (the timesheet's "Autofill…"):
a web service of the user's own organisation, called with the user's federated identity
certificate (the `IssueToken` key, as for `FetchAttachment`).

The request is a top-level operation `Autofill(Address, Server, Nonce,
IssuerCertificate)`, XMLDSIG-signed by the user certificate's key over Body and Timestamp.
Checked here, failing closed: `verify_identity_request` (the chain user certificate → its
domain's issuing CA → a trusted root with CRLs, the signature's binding checks, freshness,
that the request names this server), then that the issuing CA is THIS domain's own, that
`Address` is the certificate's own address, and an unseen nonce (kept in
the plug-in's own table, so a replay is refused after a restart too). The answer is that
address's record and nobody else's."""

from __future__ import annotations

import base64
import binascii
import logging
import sqlite3
from collections.abc import Mapping
from typing import TYPE_CHECKING

from cryptography import x509
from lxml import etree

from wsemail import soap
from wsemail.errors import (
    Forbidden,
    NotFound,
    ReplayDetected,
    RequestInvalid,
    UntrustedSigner,
)
from wsemail.message import domain_of
from wsemail.server.attachments.federated import verify_identity_request
from wsemail.server.store import Tx
from wsemail.soap import element, q, text_of

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.forms")
OPERATION = "Autofill"
MIGRATIONS = [
    "CREATE TABLE IF NOT EXISTS forms_autofill_nonces ("
    " address TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,"
    " PRIMARY KEY (address, nonce));"
    "CREATE INDEX IF NOT EXISTS forms_autofill_nonces_expires"
    " ON forms_autofill_nonces(expires)"
]


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid(f"{what} is not base64") from exc


def _issuer(op: etree._Element) -> x509.Certificate:
    found = op.findall(q("IssuerCertificate"))
    if len(found) != 1:
        raise UntrustedSigner(f"{OPERATION} needs exactly one IssuerCertificate")
    try:
        return x509.load_der_x509_certificate(_b64(found[0].text, "IssuerCertificate"))
    except ValueError as exc:
        raise UntrustedSigner("unreadable IssuerCertificate") from exc


def remember(tx: Tx, address: str, nonce: str, keep_seconds: float) -> bool:
    """Insert (address, nonce) into the durable replay table; False if already there."""
    tx.conn.execute("DELETE FROM forms_autofill_nonces WHERE expires < ?", (tx.now,))
    try:
        tx.conn.execute(
            "INSERT INTO forms_autofill_nonces(address, nonce, expires) VALUES (?,?,?)",
            (address, nonce, tx.now + keep_seconds),
        )
    except sqlite3.IntegrityError:
        return False
    return True


async def autofill(
    server: Server,
    envelope: soap.ReceivedEnvelope,
    peer: str,
    employees: Mapping[str, Mapping[str, str]],
) -> etree._Element:
    """Verify a signed Autofill and answer with the signer's own record."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server takes no federated requests")
    domain = server.config.domain
    request = verify_identity_request(server, envelope, OPERATION)
    op, address, nonce = request.operation, request.address.lower(), request.nonce
    if domain_of(address) != domain or _issuer(op) != federation.identity.issuing_cert:
        raise UntrustedSigner(f"{OPERATION} serves only users of {domain}")
    if (text_of(op, "Address") or "").strip().lower() != address:
        raise Forbidden(f"{address} may ask only for its own record")
    keep = server.auth.keep_nonce

    def work(tx: Tx) -> None:
        if not remember(tx, address, nonce, keep):
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
