"""End-to-end provenance (paper: "checked by both RS and RC"): the signed form in which a
sending server relays each message, and the receiving client's check of it.

    <w:SignedMessage>
      <w:Origin>a.test</w:Origin> <w:Destination>b.test</w:Destination>
      <w:Recipient>bob@b.test</w:Recipient>…
      <w:Content> MessageId, From, To…, Cc…, Subject, Date, Body, Attachment…,
                  Instant?, DeleteIfUndeliverable? </w:Content>
      <ds:Signature>…enveloped, by a.test's server certificate…</ds:Signature>
    </w:SignedMessage>

Destination and recipients are inside the signed content, so a signed message cannot be
replayed to anyone else; so are on-demand attachment references (server, GUID, size,
SHA-256), so the reader checks fetched bytes against what the sending server signed.
The client trusts only what it reads from the verified copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from cryptography import x509
from lxml import etree

from wsemail.dsig import verify_element
from wsemail.errors import RemoteFault, SignatureInvalid, UntrustedSigner, WsemailError
from wsemail.message import (
    Message,
    attachment_refs,
    domain_of,
    instant_flags,
    instant_flags_to_xml,
)
from wsemail.pki import TrustStore
from wsemail.soap import element, q, text_of, texts_of
from wsemail.xmlsafe import XmlLimits, parse_untrusted


def signed_form(
    origin: str, destination: str, recipients: list[str], msg: Message
) -> etree._Element:
    """The element a sending server signs (enveloped) for one destination domain."""
    root = etree.Element(q("SignedMessage"), nsmap={"w": "urn:wsemail"})
    element(root, "Origin", origin)
    element(root, "Destination", destination)
    for recipient in recipients:
        element(root, "Recipient", recipient)
    content = element(root, "Content")
    element(content, "MessageId", msg.message_id)
    element(content, "From", msg.sender)
    for address in msg.to:
        element(content, "To", address)
    for address in msg.cc:
        element(content, "Cc", address)
    element(content, "Subject", msg.subject)
    element(content, "Date", msg.date)
    element(content, "Body", msg.body)
    for ref in msg.attachments:
        ref.to_xml(content)
    instant_flags_to_xml(content, msg.instant, msg.delete_if_undeliverable)
    return root


@dataclass(frozen=True)
class SignedContent:
    origin: str
    destination: str
    recipients: list[str]
    message: Message


def read_signed(node: etree._Element) -> SignedContent:
    """Read a VERIFIED SignedMessage copy."""
    content = node.find(q("Content"))
    if node.tag != q("SignedMessage") or content is None:
        raise SignatureInvalid("not a SignedMessage")
    body = text_of(content, "Body", "") or ""
    subject = text_of(content, "Subject", "") or ""
    instant, delete = instant_flags(content)
    message = Message(
        id="",
        message_id=text_of(content, "MessageId", "") or "",
        folder="inbox",
        sender=text_of(content, "From", "") or "",
        to=texts_of(content, "To"),
        cc=texts_of(content, "Cc"),
        subject=subject,
        date=text_of(content, "Date", "") or "",
        size=len(body.encode()) + len(subject.encode()),
        seen=False,
        body=body,
        attachments=attachment_refs(content),
        instant=instant,
        delete_if_undeliverable=delete,
    )
    return SignedContent(
        origin=text_of(node, "Origin", "") or "",
        destination=text_of(node, "Destination", "") or "",
        recipients=texts_of(node, "Recipient"),
        message=message,
    )


Status = Literal["verified", "failed", "local", "unchecked", "legacy"]


@dataclass(frozen=True)
class Provenance:
    status: Status
    signer: str | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"status": self.status, "signer": self.signer, "reason": self.reason}

    def __str__(self) -> str:
        if self.status == "verified":
            return f"signed by {self.signer} ✓"
        if self.status == "failed":
            return f"signature check FAILED: {self.reason}"
        if self.status == "local":
            return "local (delivered by your own server)"
        if self.status == "legacy":
            return f"legacy email, NOT signed by a wsemail server: {self.reason}"
        return f"not checked: {self.reason}"


def check(
    message: Message, owner: str, server_signer: Callable[[x509.Certificate], str] | None
) -> tuple[Provenance, Message]:
    """Verify a retrieved message's signed form. `server_signer(cert) -> domain` checks a
    certificate against the client's trust store (None: no trust roots configured).
    Returns the provenance and the message with its content taken from the verified copy."""
    if message.signed_xml is None:
        if domain_of(message.sender) == domain_of(owner):
            return Provenance("local"), message
        return Provenance(
            "failed", None, "a message from another domain without a signature"
        ), message
    legacy = read_legacy(message.signed_xml)
    if legacy is not None:  # taken over SMTP by our own server: what it checked, no more
        return Provenance("legacy", None, legacy), message
    if server_signer is None:
        return Provenance("unchecked", message.origin, "no trust roots configured"), message
    try:
        root = parse_untrusted(message.signed_xml, XmlLimits(max_bytes=64 << 20))
        _, signer, verified = verify_element(root, server_signer)
        content = read_signed(verified)
        if content.origin != signer or domain_of(content.message.sender) != signer:
            raise UntrustedSigner(f"{signer} signed a message from {content.message.sender}")
        if owner not in content.recipients or domain_of(owner) != content.destination:
            raise SignatureInvalid("this message was signed for someone else")
    except (RemoteFault, WsemailError) as exc:
        return Provenance("failed", message.origin, str(exc)), message
    trusted = replace(
        message,
        sender=content.message.sender,
        to=content.message.to,
        cc=content.message.cc,
        subject=content.message.subject,
        date=content.message.date,
        body=content.message.body,
        message_id=content.message.message_id,
        attachments=content.message.attachments,
        instant=content.message.instant,
        delete_if_undeliverable=content.message.delete_if_undeliverable,
    )
    return Provenance("verified", signer), trusted


def read_legacy(data: bytes) -> str | None:
    """The summary of a `LegacyMessage` record (mail the SMTP gateway took), else None."""
    try:
        root = parse_untrusted(data, XmlLimits(max_bytes=1 << 20))
    except (RemoteFault, WsemailError):
        return None
    if root.tag != q("LegacyMessage"):
        return None
    dkim, spf = root.find(q("Dkim")), root.find(q("Spf"))
    summary = f"received by SMTP from {text_of(root, 'Peer', '') or '?'}"
    if dkim is not None:
        summary += f"; DKIM {dkim.get('result', 'none')}"
        summary += f" (d={dkim.get('domain')})" if dkim.get("domain") else ""
    if spf is not None:
        summary += f"; SPF {spf.get('result', 'none')}"
        summary += f" ({spf.get('domain')})" if spf.get("domain") else ""
    return summary


def certificate_domain(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [n.lower() for n in san.get_values_for_type(x509.DNSName)]


def server_domain(trust: TrustStore, cert: x509.Certificate) -> str:
    """The one domain a server certificate speaks for, after chain, role and CRL checks."""
    names = certificate_domain(cert)
    if len(names) != 1:
        raise UntrustedSigner("a server certificate names exactly one domain")
    trust.verify_server(cert, names[0])
    return names[0]
