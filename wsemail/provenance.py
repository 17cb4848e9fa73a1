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

RS keeps the whole signed form, but Retrieve carries only its compact provenance: the
Content is the retrieved message itself, and the signing certificate is named by digest
(the reader's client fetches it once from its own server, which verified it on accept):

    <w:CompactProvenance>
      <w:Origin/> <w:Destination/> <w:Recipient/>…
      <ds:Signature>… <ds:KeyInfo><ds:X509Data><dsig11:X509Digest/>…</ds:Signature>
    </w:CompactProvenance>

The reader rebuilds the signed form from the retrieved fields (`expand`) and verifies it
exactly as the whole one: any field changed on the way no longer matches the signature.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from cryptography import x509
from lxml import etree

from wsemail.dsig import DS, CertificateLookup, reference_certificate, verify_element
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


def compact(signed_xml: bytes, stored: Message) -> tuple[Message, x509.Certificate] | None:
    """RS's Retrieve form of a relayed message whose whole signed form RS verified and
    stored: the message with the signed content's fields (attachments and flags included)
    and, as `signed_xml`, its compact provenance; plus the signing certificate (to be
    answered by digest). None for records that are not a SignedMessage (e.g. legacy)."""
    root = parse_untrusted(signed_xml, XmlLimits(max_bytes=64 << 20))
    signature = root.find(q("Signature", DS))
    if root.tag != q("SignedMessage") or signature is None:
        return None
    content = read_signed(root)
    cert = _embedded_certificate(signature)
    if cert is None:
        return None
    holder = etree.Element(q("CompactProvenance"), nsmap={"w": "urn:wsemail"})
    element(holder, "Origin", content.origin)
    element(holder, "Destination", content.destination)
    for recipient in content.recipients:
        element(holder, "Recipient", recipient)
    holder.append(signature)
    reference_certificate(signature, cert)
    message = replace(
        content.message,
        id=stored.id,
        folder=stored.folder,
        size=stored.size,
        seen=stored.seen,
        origin=stored.origin,
        signed_xml=etree.tostring(holder),
    )
    return message, cert


def _embedded_certificate(signature: etree._Element) -> x509.Certificate | None:
    path = f"{q('KeyInfo', DS)}/{q('X509Data', DS)}/{q('X509Certificate', DS)}"
    node = signature.find(path)
    if node is None:
        return None
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((node.text or "").split())))
    except ValueError:
        return None


def expand(message: Message, compact_root: etree._Element) -> etree._Element:
    """The reader's side: the whole signed form rebuilt from the retrieved fields and the
    compact provenance's signature (checked afterwards like any signed form)."""
    allowed = {q("Origin"), q("Destination"), q("Recipient"), q("Signature", DS)}
    signatures = compact_root.findall(q("Signature", DS))
    if len(signatures) != 1 or any(child.tag not in allowed for child in compact_root):
        raise SignatureInvalid("compact provenance holds unexpected elements")
    origin = text_of(compact_root, "Origin", "") or ""
    destination = text_of(compact_root, "Destination", "") or ""
    form = signed_form(origin, destination, texts_of(compact_root, "Recipient"), message)
    form.append(signatures[0])
    return form


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
    message: Message,
    owner: str,
    server_signer: Callable[[x509.Certificate], str] | None,
    certificates: CertificateLookup | None = None,
) -> tuple[Provenance, Message]:
    """Verify a retrieved message's signed form (whole, or compact: rebuilt from the
    message's fields, its certificate found by digest through `certificates`).
    `server_signer(cert) -> domain` checks a certificate against the client's trust store
    (None: no trust roots configured). Returns the provenance and the message with its
    content taken from the verified copy."""
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
        if root.tag == q("CompactProvenance"):
            root = expand(message, root)
        _, signer, verified = verify_element(root, server_signer, certificates)
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
