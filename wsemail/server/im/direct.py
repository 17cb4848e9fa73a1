"""In charge of "send directly to recipient" (paper §2, Fig. 1, M2): a client away from home
gets a federated identity certificate from its own server (`IssueToken`, shared with the
attachment plug-in) and posts a `DirectInstant`, XMLDSIG-signed with that certificate's
key, straight to the recipient's server. Checked here, failing closed: the chain user
certificate → its domain's name-constrained issuing CA → a trusted root (with CRLs), the
signature's binding checks, freshness, that the request names this server, an unseen nonce
and that every recipient is local; the sender is the certificate's address, never a field.
The answer says, per recipient, what became of the message (pushed | mailbox | dropped |
rejected)."""

from __future__ import annotations

import base64
import binascii
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from cryptography import x509
from lxml import etree

from wsemail import soap
from wsemail.auth import NONCE_BYTES
from wsemail.dsig import verify_envelope
from wsemail.errors import (
    Forbidden,
    InvalidSecurity,
    Rejected,
    ReplayDetected,
    RequestInvalid,
    SignatureInvalid,
    UntrustedSigner,
)
from wsemail.message import Draft, Message, domain_of, new_message_id
from wsemail.server.attachments.federated import certificate_address, issue_token
from wsemail.server.store import Tx
from wsemail.soap import WSU, element, q, text_of

if TYPE_CHECKING:
    from wsemail.server.app import Server
    from wsemail.server.im.plugin import InstantMessaging

log = logging.getLogger("wsemail.im")
OPERATION = "DirectInstant"


def register(server: Server, plugin: InstantMessaging) -> None:
    async def direct(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
        return await direct_instant(srv, envelope, peer, plugin)

    server.operations[OPERATION] = direct
    if "IssueToken" not in server.operations:  # the attachment plug-in may not be loaded

        async def issue(srv: Server, envelope: soap.ReceivedEnvelope, peer: str) -> etree._Element:
            return await issue_token(srv, envelope, peer, plugin.token_lifetime)

        server.operations["IssueToken"] = issue


def unregister(server: Server) -> None:
    server.operations.pop(OPERATION, None)


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


async def direct_instant(
    server: Server, envelope: soap.ReceivedEnvelope, peer: str, plugin: InstantMessaging
) -> etree._Element:
    federation = server.federation
    if federation is None:
        raise Forbidden("this server takes no federated requests")
    issuing = _issuer(envelope.operation)  # only to build the chain; compared once verified

    def resolve(cert: x509.Certificate) -> str:
        federation.refresh_crls()
        address = certificate_address(cert)
        federation.trust.verify_user(cert, issuing, address)
        return address

    verified = verify_envelope(envelope.root, resolve)
    op, sender = verified.operation, verified.signer
    if op.tag != q(OPERATION):
        raise SignatureInvalid(f"the signed operation is not {OPERATION}")
    if _issuer(op) != issuing:
        raise SignatureInvalid("the IssuerCertificate read is not the one signed")
    server.auth.check_fresh(verified.timestamp.findtext(q("Created", WSU)))
    domain = server.config.domain
    if (text_of(op, "Server") or "").strip().lower() != domain:
        raise Forbidden("this request is addressed to another server")
    nonce_raw = _b64(text_of(op, "Nonce"), "Nonce")
    if len(nonce_raw) < NONCE_BYTES:
        raise InvalidSecurity(f"Nonce shorter than {NONCE_BYTES} bytes")
    nonce = base64.b64encode(nonce_raw).decode("ascii")
    draft = Draft.from_xml(op.find(q("Message")))
    if draft.attachments:
        raise RequestInvalid("a direct instant message carries no attachments")
    recipients = draft.recipients
    if any(domain_of(r) != domain for r in recipients):
        raise Forbidden("recipients outside this domain: this server does not relay")
    now = datetime.fromtimestamp(server.clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    message = Message(
        id="",
        message_id=draft.message_id or new_message_id(domain_of(sender)),
        folder="inbox",
        sender=sender,
        to=draft.to,
        cc=draft.cc,
        subject=draft.subject,
        date=now,
        size=len(draft.body.encode()) + len(draft.subject.encode()),
        seen=False,
        body=draft.body,
        instant=True,
        delete_if_undeliverable=draft.delete_if_undeliverable,
    )

    def work(tx: Tx) -> tuple[list[tuple[str, str, str]], Any]:
        if not tx.remember_nonce(f"user:{sender}", nonce, server.auth.keep_nonce):
            raise ReplayDetected("this request was already received")
        env = plugin._environment(tx, f"user:{sender}")
        outcomes = []
        for recipient in recipients:
            tx.conn.execute("SAVEPOINT direct_recipient")
            try:
                outcome, reason = plugin.deliver_instant(message, recipient, env), ""
            except Rejected as exc:
                tx.conn.execute("ROLLBACK TO direct_recipient")
                outcome, reason = "rejected", exc.reason
            tx.conn.execute("RELEASE direct_recipient")
            outcomes.append((recipient, outcome, reason))
        return outcomes, env

    outcomes, env = await server.store.transact(work)
    for callback in env.after_commit:
        callback()
    log.info("direct instant message from %r (peer %s): %s", sender, peer, outcomes)
    result = etree.Element(q("DirectInstantResponse"))
    element(result, "MessageId", message.message_id)
    for recipient, outcome, reason in outcomes:
        node = element(result, "Result")
        node.set("Recipient", recipient)
        node.set("Status", outcome)
        if reason:
            node.set("Reason", reason)
    return result
