"""End-to-end provenance (paper: "checked by both RS and RC"): the signed form in which a
sending server relays each message, and the receiving client's check of it.

    <w:SignedMessage>
      <w:Origin>a.test</w:Origin> <w:Destination>b.test</w:Destination>
      <w:Recipient>bob@b.test</w:Recipient>…
      <w:Content> MessageId, From, To…, Cc…, Subject, Date, Body, Attachment…,
                  Instant?, DeleteIfUndeliverable?, Header…, InReplyTo?, Reference…
                  </w:Content>
      <ds:Signature>…enveloped, by a.test's server certificate…</ds:Signature>
    </w:SignedMessage>

Destination and recipients are inside the signed content, so a signed message cannot be
replayed to anyone else; so are on-demand attachment references (server, GUID, size,
SHA-256), so the reader checks fetched bytes against what the sending server signed; and
so are In-Reply-To and References, so no relay can move a message into another
conversation. Blind copies are never in it: each Bcc recipient gets a signed form of its
own that names only that recipient.
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

An instant message sent directly to the recipient's server (`DirectInstant`, signed by the
sender with a short-lived identity certificate from the sender's own server) has no
server signature; RS keeps the sender's whole signed request instead, base64 in
`<w:SignedRequest>` (its Body and Timestamp are referenced by Id, so it travels as bytes,
never merged into another envelope). The reader verifies it (`check`): the binding rules,
the chain user certificate → the sender domain's issuing CA → a trusted root as at the
signed time (which must match the date RS received it within the freshness window), not
revoked by the CRLs the reader holds, the certificate naming the sender, the request
addressed to the reader's server and naming the reader; the content shown is the signed
one. Status "verified", signer "alice@a.test (direct)".
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from cryptography import x509
from lxml import etree

from wsemail.pki import TrustStore, certificate_address
from wsemail.protocol.auth import parse_timestamp, timestamp_parts
from wsemail.protocol.dsig import (
    DS,
    CertificateLookup,
    reference_certificate,
    verify_element,
    verify_envelope,
)
from wsemail.protocol.errors import RemoteFault, SignatureInvalid, UntrustedSigner, WsemailError
from wsemail.protocol.message import (
    Draft,
    Message,
    attachment_refs,
    domain_of,
    headers_of,
    headers_to_xml,
    instant_flags,
    instant_flags_to_xml,
    thread_fields,
    thread_fields_to_xml,
)
from wsemail.protocol.soap import SOAP, WSU, element, q, text_of, texts_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted


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
    headers_to_xml(content, msg.headers)
    thread_fields_to_xml(content, msg.in_reply_to, msg.references)
    return root


@dataclass(frozen=True)
class SignedContent:
    origin: str
    destination: str
    recipients: list[str]
    message: Message


def read_signed(node: etree._Element, *, strict: bool = True) -> SignedContent:
    """Read a VERIFIED SignedMessage copy. `strict`: its In-Reply-To and References must be
    message ids (RequestInvalid otherwise); RS reads its own stored records with
    strict=False, so a record changed since is answered as it is and fails the reader's
    signature check instead of failing the answer."""
    content = node.find(q("Content"))
    if node.tag != q("SignedMessage") or content is None:
        raise SignatureInvalid("not a SignedMessage")
    body = text_of(content, "Body", "") or ""
    subject = text_of(content, "Subject", "") or ""
    instant, delete = instant_flags(content)
    in_reply_to, refs = thread_fields(content, strict=strict)
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
        headers=headers_of(content),
        in_reply_to=in_reply_to,
        references=refs,
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
    content = read_signed(root, strict=False)
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


Status = Literal["verified", "failed", "local", "unchecked", "legacy", "imported", "draft"]


@dataclass(frozen=True)
class Provenance:
    status: Status
    signer: str | None = None
    reason: str = ""
    dmarc: str | None = None  # legacy mail: the gateway's DMARC result (pass, fail, none, …)

    def as_dict(self) -> dict[str, object]:
        found: dict[str, object] = {
            "status": self.status,
            "signer": self.signer,
            "reason": self.reason,
        }
        if self.status == "legacy":
            found["dmarc"] = self.dmarc
        return found

    def __str__(self) -> str:
        if self.status == "verified":
            return f"signed by {self.signer} ✓"
        if self.status == "failed":
            return f"signature check FAILED: {self.reason}"
        if self.status == "local":
            return "local (delivered by your own server)"
        if self.status == "legacy":
            dmarc = f", DMARC {self.dmarc}" if self.dmarc else ""
            return f"legacy email{dmarc}, NOT signed by a wsemail server: {self.reason}"
        if self.status == "imported":
            return f"imported, NOT signed by anyone: {self.reason}"
        if self.status == "draft":
            return "your draft: not sent, not signed"
        return f"not checked: {self.reason}"


# `user_signer(cert, issuing_ca, address, at)`: accept `cert` as `address`'s certificate
# from its domain's issuing CA, as at the time `at` (raises otherwise)
UserSigner = Callable[[x509.Certificate, x509.Certificate, str, datetime], None]


def check(
    message: Message,
    owner: str,
    server_signer: Callable[[x509.Certificate], str] | None,
    certificates: CertificateLookup | None = None,
    user_signer: UserSigner | None = None,
) -> tuple[Provenance, Message]:
    """Verify a retrieved message's signed form (whole, or compact: rebuilt from the
    message's fields, its certificate found by digest through `certificates`; or a direct
    instant message's signed request, its certificate checked by `user_signer`).
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
        return legacy, message
    kept = read_kept(message.signed_xml)
    if kept is not None:  # imported from a file, or a draft: the owner's, signed by nobody
        return kept, message
    if server_signer is None:
        return Provenance("unchecked", message.origin, "no trust roots configured"), message
    try:
        root = parse_untrusted(message.signed_xml, XmlLimits(max_bytes=64 << 20))
        if root.tag == q("SignedRequest"):
            if user_signer is None:
                raise UntrustedSigner("this client cannot check user certificates")
            return check_direct(message, owner, root, user_signer)
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
        in_reply_to=content.message.in_reply_to,
        references=content.message.references,
        bcc=[],
    )
    return Provenance("verified", signer), trusted


# direct instant messages ---------------------------------------------------------------
DIRECT_OPERATION = "DirectInstant"
DIRECT_MAX_BYTES = 4 << 20  # a server's default request limit
# RS checked the signed Created against its clock on accept: at most this old, this early
RECEIVED_PAST, RECEIVED_FUTURE = timedelta(seconds=301), timedelta(seconds=61)


def direct_record(request: bytes) -> bytes:
    """RS's record of a verified `DirectInstant` request: its bytes, base64."""
    root = etree.Element(q("SignedRequest"), nsmap={"w": "urn:wsemail"})
    root.text = base64.b64encode(request).decode("ascii")
    return etree.tostring(root)


def _issuer(op: etree._Element) -> x509.Certificate:
    try:
        text = "".join((text_of(op, "IssuerCertificate") or "").split())
        raw = base64.b64decode(text, validate=True)
        return x509.load_der_x509_certificate(raw)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("the signed request names no readable issuing CA") from exc


def check_direct(
    message: Message, owner: str, record: etree._Element, user_signer: UserSigner
) -> tuple[Provenance, Message]:
    """Verify a direct instant message's signed request (see the module doc); raises
    RemoteFault / WsemailError on any failure."""
    try:
        raw = base64.b64decode("".join((record.text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("the signed request is not base64") from exc
    envelope = parse_untrusted(raw, XmlLimits(max_bytes=DIRECT_MAX_BYTES))
    body = envelope.find(q("Body", SOAP))
    stamp = envelope.find(f".//{q('Timestamp', WSU)}")
    if body is None or not len(body) or stamp is None:
        raise SignatureInvalid("the signed request has no Body or Timestamp")
    issuing = _issuer(body[0])  # only to build the chain; compared once verified
    signed_at = parse_timestamp(stamp.findtext(q("Created", WSU)) or "")

    def resolve(cert: x509.Certificate) -> str:
        address = certificate_address(cert)
        user_signer(cert, issuing, address, signed_at)
        return address

    verified = verify_envelope(envelope, resolve, at=signed_at)
    op, sender = verified.operation, verified.signer
    if op.tag != q(DIRECT_OPERATION):
        raise SignatureInvalid(f"the signed operation is not {DIRECT_OPERATION}")
    if _issuer(op) != issuing:
        raise SignatureInvalid("the IssuerCertificate read is not the one signed")
    if parse_timestamp(verified.timestamp.findtext(q("Created", WSU)) or "") != signed_at:
        raise SignatureInvalid("the Created read is not the one signed")
    received = parse_timestamp(message.date)
    if not -RECEIVED_FUTURE <= received - signed_at <= RECEIVED_PAST:
        raise SignatureInvalid("signed at another time than your server received it")
    _, expires = timestamp_parts(verified.timestamp)
    if expires is not None:
        until = parse_timestamp(expires, "Expires")
        if until <= signed_at or received - until > RECEIVED_FUTURE:
            raise SignatureInvalid("the signed request had expired when your server received it")
    if (text_of(op, "Server") or "").strip().lower() != domain_of(owner):
        raise SignatureInvalid("this message was signed for another server")
    draft = Draft.from_xml(op.find(q("Message")))
    if owner not in draft.recipients:
        raise SignatureInvalid("this message was signed for someone else")
    trusted = replace(
        message,
        sender=sender,
        to=draft.to,
        cc=draft.cc,
        subject=draft.subject,
        body=draft.body,
        message_id=draft.message_id or message.message_id,
        attachments=[],
        instant=True,
        delete_if_undeliverable=draft.delete_if_undeliverable,
        in_reply_to=draft.in_reply_to,
        references=draft.references,
        bcc=[],
    )
    return Provenance("verified", f"{sender} (direct)"), trusted


def read_legacy(data: bytes) -> Provenance | None:
    """The provenance of a `LegacyMessage` record (mail the SMTP gateway took: what it
    checked, summed up), else None."""
    try:
        root = parse_untrusted(data, XmlLimits(max_bytes=1 << 20))
    except (RemoteFault, WsemailError):
        return None
    if root.tag != q("LegacyMessage"):
        return None
    summary = f"received by SMTP from {text_of(root, 'Peer', '') or '?'}"
    for tag, name, prefix in (("Dkim", "DKIM", "d="), ("Spf", "SPF", ""), ("Dmarc", "DMARC", "")):
        node = root.find(q(tag))
        if node is None:
            continue
        summary += f"; {name} {node.get('result', 'none')}"
        details = [f"{prefix}{node.get('domain')}"] if node.get("domain") else []
        details += [f"p={node.get('policy')}"] if node.get("policy") else []
        summary += f" ({', '.join(details)})" if details else ""
    dmarc = root.find(q("Dmarc"))
    return Provenance(
        "legacy", None, summary, dmarc.get("result", "none") if dmarc is not None else None
    )


# the owner's own: imported mail and drafts -------------------------------------------------
def imported_record(at: str, folder: str, parts: list[tuple[str, str, int]]) -> bytes:
    """The `ImportedMessage` record stored as an imported message's provenance: when and
    into which folder it was imported, and the MIME parts that were not kept (media type,
    file name, size). It is not a signature: whatever the message's headers claim, the
    reader shows "imported"."""
    root = etree.Element(q("ImportedMessage"), nsmap={"w": "urn:wsemail"})
    element(root, "At", at)
    element(root, "Folder", folder)
    for media_type, filename, size in parts:
        node = element(root, "Part")
        node.set("type", media_type)
        node.set("filename", filename)
        node.set("size", str(size))
    return etree.tostring(root)


DRAFT_RECORD = b'<w:DraftMessage xmlns:w="urn:wsemail"/>'  # a draft's provenance record


def read_kept(data: bytes) -> Provenance | None:
    """The provenance of an `ImportedMessage` or `DraftMessage` record, else None."""
    try:
        root = parse_untrusted(data, XmlLimits(max_bytes=1 << 20))
    except (RemoteFault, WsemailError):
        return None
    if root.tag == q("DraftMessage"):
        return Provenance("draft", None, "saved on your server, not sent")
    if root.tag != q("ImportedMessage"):
        return None
    summary = f"imported into {text_of(root, 'Folder', '') or '?'} on {text_of(root, 'At', '')}"
    dropped = root.findall(q("Part"))
    if dropped:
        names = ", ".join(p.get("filename") or p.get("type") or "?" for p in dropped[:5])
        summary += f"; {len(dropped)} attachment(s) not kept ({names})"
    return Provenance("imported", None, summary)


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
