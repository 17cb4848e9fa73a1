"""In charge of inbound federation: a `Deliver` transaction from another domain's server.

The hop signature is verified with the binding checks of `wsemail.protocol.dsig` and the signer's
chain, role and revocation (fail closed); the transaction must be fresh, name this domain as
its destination and carry an unseen nonce. Each message's own enveloped signature must be by
the same server, for this domain and these recipients, from a sender in the signer's domain:
it embeds the hop's certificate (older senders) or names it by dsig11:X509Digest, resolved
to the hop's verified certificate only (a digest of any other is a bad signature). The
stored signed form embeds the certificate either way.
Then, in one unit of work, each (origin, message id, recipient) is delivered once: a retry
after a lost answer gets the recorded result again.
"""

from __future__ import annotations

import base64
import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.core.provenance import read_signed
from wsemail.protocol.auth import NONCE_BYTES, parse_timestamp
from wsemail.protocol.dsig import (
    DS,
    cert_digest,
    embed_certificate,
    names_certificate_by_digest,
    verify_element,
    verify_envelope,
)
from wsemail.protocol.errors import (
    Forbidden,
    InvalidSecurity,
    Rejected,
    RemoteFault,
    ReplayDetected,
    RequestInvalid,
    SignatureInvalid,
    UntrustedSigner,
)
from wsemail.protocol.message import Message, domain_of
from wsemail.protocol.soap import element, q, text_of
from wsemail.server.operations import deliver_locally
from wsemail.server.pipeline import Environment
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.delivery")
# copies a Deliver may store and still run on the event loop (see `deliver`)
QUICK_COPIES = 32


@dataclass(frozen=True)
class Inbound:
    message: Message  # with origin and signed_xml set
    recipients: list[str]


def _nonce(op: etree._Element) -> str:
    raw = text_of(op, "Nonce") or ""
    try:
        value = base64.b64decode(raw, validate=True)
    except ValueError as exc:
        raise InvalidSecurity("Deliver Nonce is not base64") from exc
    if len(value) < NONCE_BYTES:
        raise InvalidSecurity(f"Deliver Nonce shorter than {NONCE_BYTES} bytes")
    return base64.b64encode(value).decode()


@dataclass(frozen=True)
class Transaction:
    """A verified Deliver: who signed it (domain and certificate), its nonce, its messages."""

    origin: str
    cert: x509.Certificate
    nonce: str
    inbound: list[Inbound]


def verify_transaction(server: Server, root: etree._Element) -> Transaction:
    """All checks that need no database."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server takes no federated deliveries")
    verified = verify_envelope(root, federation.server_signer)
    origin, op = verified.signer, verified.operation
    if op.tag != q("Deliver"):
        raise SignatureInvalid("the signed operation is not Deliver")
    server.auth.check_timestamp(verified.timestamp)
    if (text_of(op, "Destination") or "").lower() != server.config.domain:
        raise Forbidden("this transaction is addressed to another domain")
    if (text_of(op, "Origin") or "").lower() != origin:
        raise UntrustedSigner(f"{origin} signed a transaction claiming another origin")
    nonce = _nonce(op)

    def same_server(cert: x509.Certificate) -> str:
        if cert != verified.cert:
            raise UntrustedSigner("a message is signed by another key than the transaction")
        return origin

    hop_digest = cert_digest(verified.cert)

    def hop_certificate(digest: bytes) -> x509.Certificate:
        if digest != hop_digest:
            raise SignatureInvalid("a message names another certificate than the transaction")
        return verified.cert

    inbound: list[Inbound] = []
    for signed in op.findall(q("SignedMessage")):
        standalone = etree.fromstring(etree.tostring(signed))
        _, _, node = verify_element(standalone, same_server, hop_certificate)
        content = read_signed(node)
        if content.origin != origin or domain_of(content.message.sender) != origin:
            raise UntrustedSigner(f"{origin} may not sign for {content.message.sender}")
        _check_date(content.message.date)
        if content.destination != server.config.domain:
            raise Forbidden("a message is addressed to another domain")
        recipients = content.recipients
        if not recipients or any(domain_of(r) != server.config.domain for r in recipients):
            raise Forbidden("recipients outside this domain: this server does not relay")
        message = replace(content.message, origin=origin, signed_xml=_record(signed, verified.cert))
        inbound.append(Inbound(message, recipients))
    if not inbound:
        raise RequestInvalid("Deliver carries no message")
    return Transaction(origin, verified.cert, nonce, inbound)


def _check_date(date: str) -> None:
    """A relayed message's Date is what readers sort and show: an xsd:dateTime in range."""
    try:
        parse_timestamp(date, "Date")
    except RemoteFault as exc:
        raise RequestInvalid(f"a message's Date is not a valid xsd:dateTime: {exc.reason}") from exc


def _record(signed: etree._Element, cert: x509.Certificate) -> bytes:
    """The signed form as stored: a certificate named by digest is embedded (KeyInfo is
    outside SignedInfo), so records read as before (compact provenance, IM push)."""
    record = etree.fromstring(etree.tostring(signed))
    signature = record.find(q("Signature", DS))
    if signature is None or not names_certificate_by_digest(signature):
        return etree.tostring(signed)
    embed_certificate(signature, cert)
    return etree.tostring(record)


async def deliver(server: Server, root: etree._Element) -> etree._Element:
    transaction = verify_transaction(server, root)
    origin, inbound = transaction.origin, transaction.inbound
    principal = f"server:{origin}"
    der = transaction.cert.public_bytes(serialization.Encoding.DER)

    def work(tx: Tx) -> tuple[etree._Element, Environment]:
        if not tx.remember_nonce(principal, transaction.nonce, server.auth.keep_nonce):
            raise ReplayDetected("this transaction was already received")
        # verified above: what this server's clients resolve compact provenance against
        tx.put_certificate(cert_digest(transaction.cert), der)
        result = etree.Element(q("DeliverResponse"))
        env = Environment(
            principal=principal,
            domain=server.config.domain,
            tx=tx,
            request=root,
            pipeline=server.pipeline,
            clock=server.clock,
            wake_relay=server.wake_relay,  # mapped addresses may forward, auto-replies go out
        )
        for item in inbound:
            for recipient in item.recipients:
                status, reason = _deliver_one(tx, env, origin, item.message, recipient)
                node = element(result, "Result")
                node.set("MessageId", item.message.message_id)
                node.set("Recipient", recipient)
                node.set("Status", status)
                if reason:
                    node.set("Reason", reason)
        return result, env

    # a transaction of a few copies is quick (BatchStore.transact); a large one runs in the
    # writer thread
    copies = sum(len(item.recipients) for item in inbound)
    result, env = await server.store.transact(work, quick=copies <= QUICK_COPIES)
    for callback in env.after_commit:  # e.g. an IM push, once the delivery is on disk
        callback()
    if server.relay is not None:  # the origin is up: what waits for it need not wait longer
        await server.relay.peer_alive(origin)
    return result


def _deliver_one(
    tx: Tx, env: Environment, origin: str, message: Message, recipient: str
) -> tuple[str, str]:
    known = tx.delivery_status(origin, message.message_id, recipient)
    if known is not None:
        return ("duplicate" if known[0] == "delivered" else known[0]), known[1]
    tx.conn.execute("SAVEPOINT recipient")
    pending = len(env.after_commit)
    try:
        deliver_locally(message, recipient, env)
    except Rejected as exc:
        tx.conn.execute("ROLLBACK TO recipient")
        del env.after_commit[pending:]  # nothing of a refused delivery happens after commit
        status, reason = "rejected", exc.reason
    else:
        status, reason = "delivered", ""
    tx.conn.execute("RELEASE recipient")
    tx.record_delivery(origin, message.message_id, recipient, status, reason)
    return status, reason
