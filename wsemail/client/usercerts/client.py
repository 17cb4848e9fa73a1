"""In charge of the client side of user certificates: asking the home server for a
certificate (issue, renew), revoking and listing them through the `usercerts` extension,
certificate login (`CertificateClient`), and sending encrypted mail (with encrypted
on-demand attachments).
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.client.attachments import Attachments, Progress
from wsemail.client.mail import RESPONSE_LIMITS, Client, SendResult
from wsemail.client.usercerts.attachments import upload_encrypted
from wsemail.client.usercerts.directory import Directory
from wsemail.client.usercerts.keystore import UserKey, UserPrivateKey
from wsemail.client.usercerts.sealed import ENCRYPTED_SUBJECT, Envelope, recipients_for, seal
from wsemail.protocol import soap
from wsemail.protocol.auth import NONCE_BYTES, timestamp
from wsemail.protocol.dsig import Signer, add_timestamp
from wsemail.protocol.errors import RemoteFault, ServerError, TransportError, UsageError
from wsemail.protocol.message import domain_of, new_message_id, normalize_address
from wsemail.protocol.soap import WSSE, WSU, element, int_of, parse_int, q, text_of
from wsemail.protocol.xmlsafe import parse_untrusted

EXTENSION_ID = "usercerts"


def _usercerts(client: Client, request: etree._Element) -> etree._Element:
    answer = client.extension(EXTENSION_ID, request)
    if answer is None:
        raise ServerError("the usercerts extension answered nothing")
    return answer


def _cert(text: str | None) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(base64.b64decode(text or "", validate=True))
    except ValueError as exc:
        raise ServerError("the server answered an unreadable certificate") from exc


def request_certificate(
    client: Client, key: UserPrivateKey, *, lifetime_days: int | None = None
) -> UserKey:
    """A new certificate from the home server for `key` (create and renew)."""
    request = etree.Element(q("Issue"))
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    element(request, "PublicKey", base64.b64encode(spki).decode("ascii"))
    if lifetime_days is not None:
        element(request, "LifetimeDays", str(lifetime_days))
    answer = _usercerts(client, request)
    cert = _cert(text_of(answer, "Certificate"))
    issuer = _cert(text_of(answer, "IssuerCertificate"))
    return UserKey(client.username, key, (cert,), issuer)


def revoke(client: Client, serial: int | None = None) -> int:
    """Revoke one of the caller's certificates (or all of them); returns how many."""
    request = etree.Element(q("Revoke"))
    if serial is not None:
        element(request, "Serial", str(serial))
    return int_of(_usercerts(client, request), "Count", 0, 2**31, 0)


@dataclass(frozen=True)
class CertInfo:
    serial: int
    expires: str
    state: str

    def as_dict(self) -> dict[str, object]:
        return {"serial": str(self.serial), "expires": self.expires, "state": self.state}


def list_certificates(client: Client) -> list[CertInfo]:
    answer = _usercerts(client, etree.Element(q("List")))
    return [
        CertInfo(
            parse_int(n.get("serial") or "0", "serial", 0, 2**160),
            n.get("expires", ""),
            n.get("state", ""),
        )
        for n in answer.findall(q("Certificate"))
    ]


class CertificateClient(Client):
    """A client that authenticates with an XMLDSIG signature by the user's certificate
    (the `CertificateCall` operation) instead of the password MAC."""

    def __init__(self, server: str, user_key: UserKey, **options: Any) -> None:
        super().__init__(server, user_key.address, password="", **options)
        self.user_key = user_key
        self._signer = Signer(user_key.key, user_key.cert)
        self.domain = domain_of(user_key.address)

    @property
    def credentials(self) -> Any:
        raise UsageError("a certificate client has no password")

    def signed_request(self, operation: etree._Element) -> bytes:
        """The serialized CertificateCall envelope for `operation`, signed now."""
        wrapper = etree.Element(q("CertificateCall"))
        element(wrapper, "Server", self.domain)
        element(wrapper, "Nonce", base64.b64encode(os.urandom(NONCE_BYTES)).decode("ascii"))
        wrapper.append(operation)
        env, header, body = soap.new_envelope()
        body.append(wrapper)
        security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
        now = datetime.now(UTC)
        add_timestamp(security, timestamp(now), timestamp(now + timedelta(minutes=5)))
        self._signer.sign_envelope(env)
        return soap.serialize(env)

    def call(
        self, operation: etree._Element, *, authenticated: bool = True, idempotent: bool = False
    ) -> etree._Element:
        if not authenticated:
            return super().call(operation, authenticated=False)
        data = self.signed_request(operation)
        try:
            response = self.http.post(self.server, content=data, extensions=self.extensions)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {self.server}: {exc}") from exc
        try:
            answer = soap.split_envelope(parse_untrusted(response.content, RESPONSE_LIMITS))
        except RemoteFault as exc:
            raise ServerError(
                f"unreadable answer (HTTP {response.status_code}) from {self.server}"
            ) from exc
        soap.raise_if_fault(answer.operation)
        return answer.operation


def send_encrypted(
    client: Client,
    own: UserKey,
    directory: Directory,
    to: Sequence[str],
    subject: str = "",
    body: str = "",
    *,
    cc: Sequence[str] | None = None,
    sign: bool = True,
    attachments: Sequence[Path | str] = (),
    progress: Callable[[Path], AbstractContextManager[Progress | None]] | None = None,
) -> SendResult:
    """Encrypt subject, body and `attachments` (file paths) end to end for every recipient
    (certificates from their own domains' directories, checked) and for the sender; refuse
    before uploading or sending anything if any recipient has no trusted certificate.

    Each file is encrypted under its own key while it streams to the sender's server as an
    on-demand attachment (`wsemail.client.usercerts.attachments`); its name and key are sealed in
    the message. `progress(path)` may give, for each file, a context manager around its
    upload that yields a progress callback (bytes of the file done, its size) or None."""
    if normalize_address(own.address) != client.username:
        raise UsageError(f"the key is {own.address}'s, not {client.username}'s")
    to_list = [normalize_address(a) for a in to]
    cc_list = [normalize_address(a) for a in cc or []]
    recipients = recipients_for([*to_list, *cc_list], directory)
    files = [Path(p) for p in attachments]
    for path in files:
        if not path.is_file():
            raise UsageError(f"cannot attach {path}: not a readable file; nothing was sent")
        try:  # the name travels as XML text in the sealed content
            etree.Element("Name").text = path.name
        except ValueError as exc:
            raise UsageError(f"cannot attach {path.name!r}: not a usable file name") from exc
    box = Attachments(client)
    sealed_files = []
    for index, path in enumerate(files, 1):
        with progress(path) if progress else nullcontext(None) as callback:
            sealed_files.append(upload_encrypted(box, path, index=index, progress=callback))
    message_id = new_message_id(domain_of(client.username))
    envelope = Envelope(client.username, to_list, cc_list, message_id)
    text = seal(envelope, subject, body, recipients, own, sign=sign, attachments=sealed_files)
    return client.send(
        to_list,
        ENCRYPTED_SUBJECT,
        text,
        cc=cc_list,
        message_id=message_id,
        attachments=[f.guid for f in sealed_files],
    )
