"""In charge of end-to-end mail ("Send Encrypted", DESIGN.md §8): sealing a message's
subject and body for every recipient's certificate and the sender's own, optionally signed
by the sender's user certificate first, and opening a retrieved message again.

The servers see an ordinary message whose Subject is `ENCRYPTED_SUBJECT` and whose Body is
a `e2e:Sealed` document; routing headers (From, To, Cc, MessageId) stay readable. Inside
the encryption sits `e2e:Content` — From, To, Cc, MessageId, Subject, Body, the signer's
issuing CA, and for each encrypted attachment an `e2e:Attachment` (the GUID on the sender's
server, the real name, media type and size, the ciphertext's size and SHA-256, the file's
content key) — with an enveloped XMLDSIG signature when signed (sign, then encrypt).
Opening checks that the signed From/To/Cc/MessageId equal the envelope's, so signed content
cannot be re-sent under another sender or to other recipients.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.client.usercerts.directory import Directory
from wsemail.client.usercerts.filecrypt import SealedFile
from wsemail.client.usercerts.keystore import UserKey
from wsemail.client.usercerts.xmlenc import PLAINTEXT_LIMITS, decrypt_element, encrypt_element
from wsemail.pki import certificate_address
from wsemail.protocol.dsig import DS, Signer, verify_element
from wsemail.protocol.errors import (
    RemoteFault,
    RequestInvalid,
    SignatureInvalid,
    UsageError,
    WsemailError,
)
from wsemail.protocol.message import Message, normalize_address
from wsemail.protocol.soap import parse_int
from wsemail.protocol.xmlsafe import parse_untrusted

E2E = "urn:wsemail:e2e"
ENCRYPTED_SUBJECT = "(encrypted message)"
_MARKER = f'<e2e:Sealed xmlns:e2e="{E2E}"'
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _q(local: str) -> str:
    return f"{{{E2E}}}{local}"


def _add(parent: etree._Element, local: str, text: str) -> None:
    etree.SubElement(parent, _q(local)).text = text


@dataclass(frozen=True)
class Envelope:
    """The readable routing headers the sealed content is bound to."""

    sender: str
    to: list[str]
    cc: list[str]
    message_id: str


def content_element(
    envelope: Envelope,
    subject: str,
    body: str,
    issuer: x509.Certificate | None,
    attachments: Sequence[SealedFile] = (),
) -> etree._Element:
    content = etree.Element(_q("Content"), nsmap={"e2e": E2E})
    _add(content, "From", envelope.sender)
    for address in envelope.to:
        _add(content, "To", address)
    for address in envelope.cc:
        _add(content, "Cc", address)
    _add(content, "MessageId", envelope.message_id)
    _add(content, "Subject", subject)
    _add(content, "Body", body)
    for sealed_file in attachments:
        node = etree.SubElement(content, _q("Attachment"))
        for local, value in (
            ("Guid", sealed_file.guid),
            ("Name", sealed_file.name),
            ("MediaType", sealed_file.media_type),
            ("Size", str(sealed_file.size)),
            ("CipherSize", str(sealed_file.cipher_size)),
            ("CipherSha256", sealed_file.cipher_sha256),
            ("Key", base64.b64encode(sealed_file.key).decode("ascii")),
        ):
            _add(node, local, value)
    if issuer is not None:
        der = issuer.public_bytes(serialization.Encoding.DER)
        _add(content, "SignerIssuer", base64.b64encode(der).decode("ascii"))
    return content


def seal(
    envelope: Envelope,
    subject: str,
    body: str,
    recipients: Sequence[tuple[str, x509.Certificate]],
    sender: UserKey,
    *,
    sign: bool = True,
    attachments: Sequence[SealedFile] = (),
) -> str:
    """The Body text of an encrypted message for `recipients` and the sender's own key;
    `attachments` describe files already encrypted and uploaded (`usercerts.attachments`)."""
    issuer = sender.issuer if sign else None
    content = content_element(envelope, subject, body, issuer, attachments)
    if sign:
        content = Signer(sender.key, sender.cert).sign_element(content)
    everyone = [*recipients, (sender.address, sender.cert)]
    sealed = etree.Element(_q("Sealed"), {"Version": "1"}, nsmap={"e2e": E2E})
    sealed.append(encrypt_element(content, everyone))
    text: str = etree.tostring(sealed, encoding="unicode")
    return text


def is_sealed(message: Message) -> bool:
    return message.body.lstrip().startswith(_MARKER)


@dataclass(frozen=True)
class Opened:
    """An encrypted message after decryption; `signer` is set only when the sender's
    signature verified against the sender's domain."""

    subject: str
    body: str
    signed: bool
    signer: str | None
    attachments: tuple[SealedFile, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {
            "encrypted": True,
            "signed": self.signed,
            "signer": self.signer,
            "attachments": [a.as_dict() for a in self.attachments],
        }


def _texts(node: etree._Element, local: str) -> list[str]:
    return [(n.text or "") for n in node.findall(_q(local))]


def _one_text(node: etree._Element, local: str) -> str:
    found = _texts(node, local)
    if len(found) != 1:
        raise SignatureInvalid(f"sealed content needs exactly one {local}")
    return found[0]


def _count(node: etree._Element, local: str) -> int:
    try:
        return parse_int(_one_text(node, local), local, 0, 2**63 - 1)
    except RequestInvalid as exc:
        raise SignatureInvalid(f"sealed attachment {local} is not a whole number") from exc


def _sealed_file(node: etree._Element) -> SealedFile:
    try:
        key = base64.b64decode("".join(_one_text(node, "Key").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("unreadable attachment key") from exc
    digest = _one_text(node, "CipherSha256").strip().lower()
    if len(key) != 32 or not _HEX64.match(digest):
        raise SignatureInvalid("malformed sealed attachment")
    return SealedFile(
        guid=_one_text(node, "Guid").strip(),
        name=_one_text(node, "Name"),
        media_type=_one_text(node, "MediaType"),
        size=_count(node, "Size"),
        cipher_size=_count(node, "CipherSize"),
        cipher_sha256=digest,
        key=key,
    )


def open_sealed(message: Message, own: UserKey, directory: Directory | None) -> Opened:
    """Decrypt `message` with `own` key and verify the sender's signature if present.

    Raises SignatureInvalid (tampered, not for us, bound to other headers) or UntrustedSigner
    (the signature's certificate is not the sender's); with no `directory`, a signed message
    cannot be checked and is refused.
    """
    try:
        sealed = parse_untrusted(message.body.encode("utf-8"), PLAINTEXT_LIMITS)
    except RemoteFault as exc:
        raise SignatureInvalid("the encrypted body is not readable") from exc
    parts = [c for c in sealed if isinstance(c.tag, str)]
    if sealed.tag != _q("Sealed") or sealed.get("Version") != "1" or len(parts) != 1:
        raise SignatureInvalid("not a sealed wsemail message")
    content = decrypt_element(parts[0], [own.pair])
    if content.tag != _q("Content"):
        raise SignatureInvalid("the decrypted content is not a wsemail message")
    signer: str | None = None
    signatures = content.findall(f"{{{DS}}}Signature")
    if signatures:
        if directory is None:
            raise SignatureInvalid("a signed message needs the directory to check its signer")
        issuer_text = _one_text(content, "SignerIssuer")
        try:
            issuer = x509.load_der_x509_certificate(
                base64.b64decode("".join(issuer_text.split()), validate=True)
            )
        except (binascii.Error, ValueError) as exc:
            raise SignatureInvalid("unreadable signer issuer") from exc

        def resolve(cert: x509.Certificate) -> str:
            address = certificate_address(cert)
            if address != normalize_address(message.sender):
                raise SignatureInvalid(
                    f"signed by {address}, but the message is from {message.sender}"
                )
            directory.verify_signer(cert, issuer, address)
            return address

        _, signer, content = verify_element(content, resolve)
    elif content.findall(_q("SignerIssuer")):
        raise SignatureInvalid("sealed content names a signer but carries no signature")
    bound = (
        _one_text(content, "From"),
        _texts(content, "To"),
        _texts(content, "Cc"),
        _one_text(content, "MessageId"),
    )
    if bound != (message.sender, message.to, message.cc, message.message_id):
        raise SignatureInvalid("the sealed content belongs to another message")
    return Opened(
        subject=_one_text(content, "Subject"),
        body=_one_text(content, "Body"),
        signed=signer is not None,
        signer=signer,
        attachments=tuple(_sealed_file(n) for n in content.findall(_q("Attachment"))),
    )


def status_line(status: dict[str, object]) -> str:
    """What follows "Encrypted:" for a message's end-to-end status (`Opened.as_dict()` or
    {"encrypted": True, "error": …}); '' for a message that was not encrypted. One wording
    for `wsemail retrieve` and the TUI."""
    if not status.get("encrypted"):
        return ""
    if "error" in status:
        return f"cannot open: {status['error']}"
    signer = f"signed by {status['signer']} ✓" if status.get("signed") else "not signed"
    return f"end to end ✓, {signer}"


def open_or_error(
    message: Message, own: UserKey | None, directory: Directory | None
) -> Opened | str:
    """`open_sealed`, or the one-line reason it failed (for listings and the CLI)."""
    if own is None:
        return "no key on this device to decrypt this message"
    try:
        return open_sealed(message, own, directory)
    except WsemailError as exc:
        return str(exc)


def recipients_for(
    addresses: Sequence[str], directory: Directory
) -> list[tuple[str, x509.Certificate]]:
    """Every recipient's trusted certificate; any missing or untrusted one stops the send."""
    found: list[tuple[str, x509.Certificate]] = []
    missing: list[str] = []
    for address in dict.fromkeys(normalize_address(a) for a in addresses):
        try:
            found.append((address, directory.certificate(address)))
        except WsemailError as exc:
            missing.append(f"{address} ({exc})")
    if missing:
        raise UsageError("cannot encrypt to " + "; ".join(missing) + "; nothing was sent")
    return found
