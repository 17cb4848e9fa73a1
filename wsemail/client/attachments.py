"""In charge of the client's side of on-demand attachments (SC and RC in the ICWS 2005
paper's nine-message protocol): streaming uploads to the sender's own server, listing a
message's attachment references (from the VERIFIED signed form for mail from another
domain), federated identity tokens from the reader's own server, signed FetchAttachment
requests to the attachment's server, and resumable downloads checked against the SHA-256
that the sending server signed.

    with Client(url, "bob@b.test", password, trust_roots=[root]) as client:
        box = Attachments(client)
        for ref in box.list(message_id).refs:
            box.fetch(ref, Path(ref.name))
"""

from __future__ import annotations

import base64
import hashlib
import mimetypes
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
from lxml import etree

from wsemail.client.mail import RESPONSE_LIMITS, Client
from wsemail.protocol import soap
from wsemail.protocol.auth import timestamp
from wsemail.protocol.errors import (
    RemoteFault,
    ServerError,
    SignatureInvalid,
    TransportError,
    UsageError,
)
from wsemail.protocol.message import (
    NAME_BYTES,
    AttachmentRef,
    Message,
    attachment_refs,
    utf8_prefix,
)
from wsemail.protocol.soap import WSSE, WSU, element, q, text_of
from wsemail.protocol.xmlsafe import parse_untrusted

if TYPE_CHECKING:
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from wsemail.core.provenance import Provenance

# Keys, certificates and signatures (cryptography, signxml) load when a token is issued or a
# request signed, not with the module: the inbox holds an IM client but signs nothing.

EXTENSION_ID = "attachments"
CHUNK = 1 << 20
Progress = Callable[[int, int], None]  # (bytes done, bytes in all)


@dataclass(frozen=True)
class Uploaded:
    guid: str
    name: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Listing:
    """A message's attachments: references the reader may rely on, and where they come
    from (the verified signature of the sending server, or the reader's own server)."""

    message: Message
    provenance: Provenance
    refs: list[AttachmentRef]
    states: dict[str, str] = field(default_factory=dict)  # guid → state (own server only)


@dataclass(frozen=True, repr=False)
class Token:
    """A federated identity: a fresh key and the short-lived certificate for it."""

    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    issuer: x509.Certificate

    def __repr__(self) -> str:
        return f"Token({self.cert.subject.rfc4514_string()}, until {self.expires})"

    @property
    def expires(self) -> datetime:
        return self.cert.not_valid_after_utc


# what a download adds to the name while it runs: `.encrypted.part` (encrypted mail)
SUFFIX_ROOM = len(".encrypted.part")


def safe_file_name(name: str) -> str:
    """A name from a message as a plain file name in the target folder (never a path),
    cut to `NAME_BYTES` UTF-8 bytes less the room the download's own suffixes need."""
    cleaned = "".join(
        c for c in name if ord(c) >= 32 and c not in "/\\\x7f" and not 0xD800 <= ord(c) < 0xE000
    ).strip()
    if cleaned in ("", ".", "..") or cleaned.startswith(".."):
        cleaned = cleaned.lstrip(".") or "attachment"
    limit = NAME_BYTES - SUFFIX_ROOM
    if len(cleaned.encode()) <= limit:
        return cleaned
    stem, dot, ext = cleaned.rpartition(".")
    if stem and dot and len(ext.encode()) <= 16:  # keep a short extension: report.pdf
        return utf8_prefix(stem, limit - len(ext.encode()) - 1).rstrip() + "." + ext
    return utf8_prefix(cleaned, limit).rstrip() or "attachment"


def _url(base: str, path: str, ticket: str) -> httpx.URL:
    return httpx.URL(base).copy_with(path=path, query=f"ticket={ticket}".encode())


def _answer(response: httpx.Response, where: str) -> etree._Element:
    try:
        root = parse_untrusted(response.content, RESPONSE_LIMITS)
        answer = soap.split_envelope(root).operation
    except RemoteFault as exc:
        raise ServerError(f"unreadable answer (HTTP {response.status_code}) from {where}") from exc
    soap.raise_if_fault(answer)
    return answer


class Attachments:
    def __init__(self, client: Client, *, token_lifetime: int = 3600) -> None:
        self.client = client
        self.token_lifetime = token_lifetime
        self._token: Token | None = None

    # sending (SC → SS) ------------------------------------------------------------------
    def upload(
        self,
        path: Path,
        *,
        name: str | None = None,
        media_type: str | None = None,
        progress: Progress | None = None,
    ) -> Uploaded:
        """Stream a file to the own server; the server's SHA-256 must match ours."""
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc

        def chunks() -> Iterator[bytes]:
            try:
                with open(path, "rb") as handle:
                    while chunk := handle.read(CHUNK):
                        yield chunk
            except OSError as exc:
                raise UsageError(f"cannot read {path}: {exc}") from exc

        name = name or path.name
        media_type = media_type or mimetypes.guess_type(name)[0]
        return self.upload_stream(chunks(), size, name, media_type, progress=progress)

    def upload_stream(
        self,
        chunks: Iterable[bytes],
        size: int,
        name: str,
        media_type: str | None = None,
        *,
        progress: Progress | None = None,
    ) -> Uploaded:
        """Stream `size` bytes (produced piece by piece, e.g. while encrypting) to the own
        server under `name`; the server's SHA-256 must match the bytes sent."""
        request = etree.Element(q("BeginUpload"))
        try:
            element(request, "Name", name)
            element(request, "MediaType", media_type or "application/octet-stream")
        except ValueError as exc:  # lxml: control characters
            raise UsageError(f"not a usable attachment name: {name!r}") from exc
        element(request, "Size", str(size))
        ticket = self.client.extension(EXTENSION_ID, request)
        if ticket is None:
            raise ServerError("BeginUpload without an answer")
        digest = hashlib.sha256()

        def counted() -> Iterator[bytes]:
            done = 0
            for chunk in chunks:
                digest.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, size)
                yield chunk

        url = _url(self.client.server, text_of(ticket, "Path", "") or "", _text(ticket, "Ticket"))
        try:
            response = self.client.http.put(
                url,
                content=counted(),
                headers={"content-type": "application/octet-stream", "content-length": str(size)},
                extensions=self.client.extensions,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"upload to {self.client.server} failed: {exc}") from exc
        answer = _answer(response, self.client.server)
        uploaded = Uploaded(_text(answer, "Guid"), name, size, _text(answer, "Sha256"))
        if uploaded.sha256 != digest.hexdigest():
            raise TransportError("the server stored other bytes than were sent")
        return uploaded

    def send(
        self,
        to: list[str],
        subject: str,
        body: str,
        files: list[Path],
        *,
        cc: list[str] | None = None,
        progress: Progress | None = None,
    ) -> tuple[str, str]:
        """Upload `files` and send a message that references them: (id, message id)."""
        uploads = [self.upload(p, progress=progress).guid for p in files]
        result = self.client.send(to, subject, body, cc=cc, attachments=uploads)
        return result.id, result.message_id

    # listing ----------------------------------------------------------------------------
    def list(self, message_id: str, *, peek: bool = False) -> Listing:
        """The attachments of a message in one's mailbox. Mail from another domain must
        carry a verified signature by the domain whose server holds the attachments.
        `peek`: the message is not marked seen."""
        message = self.client.retrieve(message_id, peek=peek)
        proof, trusted = self.client.verify(message)
        if message.signed_xml is not None and proof.status != "legacy":
            if proof.status != "verified":
                raise SignatureInvalid(f"attachment references cannot be trusted: {proof}")
            for ref in trusted.attachments:
                if ref.server != proof.signer:
                    raise SignatureInvalid(f"{proof.signer} signed a reference to {ref.server}")
            return Listing(trusted, proof, list(trusted.attachments))
        request = etree.Element(q("List"))
        element(request, "MessageId", message.message_id)
        answer = self.client.extension(EXTENSION_ID, request)
        nodes = [] if answer is None else answer.findall(q("Attachment"))
        refs = [] if answer is None else attachment_refs(answer)
        states = {
            ref.guid: text_of(n, "State", "") or "" for ref, n in zip(refs, nodes, strict=True)
        }
        return Listing(message, proof, refs, states)

    def audit(self, message_id: str) -> etree._Element:
        """Who fetched the attachments of a message one sent (own server's log)."""
        message = self.client.retrieve(message_id)
        request = etree.Element(q("Audit"))
        element(request, "MessageId", message.message_id)
        answer = self.client.extension(EXTENSION_ID, request)
        return answer if answer is not None else etree.Element(q("AuditLog"))

    def revoke(self, guid: str) -> None:
        request = etree.Element(q("Revoke"))
        element(request, "Guid", guid)
        self.client.extension(EXTENSION_ID, request)

    def replace(self, old: str, new: str) -> None:
        request = etree.Element(q("Replace"))
        element(request, "Old", old)
        element(request, "New", new)
        self.client.extension(EXTENSION_ID, request)

    # federated identity (RC → RS, Msg6/Msg7) -------------------------------------------
    def token(self) -> Token:
        """A federated identity certificate from the own server, reused until near expiry."""
        now = datetime.now(UTC)
        if self._token is not None and self._token.expires - now > timedelta(minutes=2):
            return self._token
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        key = ec.generate_private_key(ec.SECP256R1())
        spki = key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        op = etree.Element(q("IssueToken"))
        element(op, "PublicKey", base64.b64encode(spki).decode("ascii"))
        element(op, "Lifetime", str(self.token_lifetime))
        answer = self.client.call(op)
        try:
            cert = x509.load_der_x509_certificate(base64.b64decode(_text(answer, "Certificate")))
            issuer = x509.load_der_x509_certificate(
                base64.b64decode(_text(answer, "IssuerCertificate"))
            )
        except ValueError as exc:
            raise ServerError("unreadable certificate in IssueTokenResponse") from exc
        self._token = Token(key, cert, issuer)
        return self._token

    # fetching (RC → SS, Msg8/Msg9) ------------------------------------------------------
    def authorize(self, ref: AttachmentRef, token: Token | None = None) -> tuple[str, str]:
        """A signed FetchAttachment to the attachment's server: (download path, ticket)."""
        data = fetch_request(ref, token or self.token())
        try:
            response = self.client.http.post(
                ref.url,
                content=data,
                headers={"content-type": soap.CONTENT_TYPE},
                extensions={"sni_hostname": ref.server},
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {ref.url}: {exc}") from exc
        answer = _answer(response, ref.url)
        return _text(answer, "Path"), _text(answer, "Ticket")

    def fetch(self, ref: AttachmentRef, dest: Path, *, progress: Progress | None = None) -> Path:
        """Download to `dest` (resuming `dest.part`); succeed only if size and SHA-256 equal
        the signed reference."""
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        have = part.stat().st_size if part.exists() else 0
        if have > ref.size:
            part.unlink()
            have = 0
        try:
            if have:
                with open(part, "rb") as handle:
                    while chunk := handle.read(CHUNK):
                        digest.update(chunk)
            if have < ref.size or ref.size == 0:
                have, digest = self._download(ref, part, have, digest, progress)
        except OSError as exc:
            raise UsageError(f"cannot write {part}: {exc}") from exc
        if have != ref.size or digest.hexdigest() != ref.sha256.lower():
            part.unlink(missing_ok=True)
            raise SignatureInvalid(
                f"{ref.name}: the bytes received differ from the signed reference (SHA-256)"
            )
        os.replace(part, dest)
        return dest

    def _download(
        self,
        ref: AttachmentRef,
        part: Path,
        have: int,
        digest: hashlib._Hash,
        progress: Progress | None,
    ) -> tuple[int, hashlib._Hash]:
        path, ticket = self.authorize(ref)
        headers = {"range": f"bytes={have}-"} if have else {}
        try:
            with self.client.http.stream(
                "GET",
                _url(ref.url, path, ticket),
                headers=headers,
                extensions={"sni_hostname": ref.server},
            ) as response:
                if response.status_code not in (200, 206):
                    response.read()
                    _answer(response, ref.url)
                    raise ServerError(f"HTTP {response.status_code} from {ref.url}")
                if response.status_code == 200 and have:  # the server sent everything again
                    have, digest = 0, hashlib.sha256()
                # the pieces as they come off the connection (a TLS record each, up to 16 KB):
                # iter_bytes(CHUNK) would join them into CHUNK-sized copies; the file's own
                # buffer gathers them into CHUNK-sized writes instead
                with open(part, "ab" if have else "wb", buffering=CHUNK) as out:
                    for chunk in response.iter_bytes():
                        if have + len(chunk) > ref.size:
                            raise SignatureInvalid(f"{ref.name}: more bytes than signed")
                        out.write(chunk)
                        digest.update(chunk)
                        have += len(chunk)
                        if progress is not None:
                            progress(have, ref.size)
        except httpx.HTTPError as exc:
            raise TransportError(f"download from {ref.url} broke off: {exc}") from exc
        return have, digest


def fetch_request(
    ref: AttachmentRef, token: Token, *, now: datetime | None = None, nonce: bytes | None = None
) -> bytes:
    """Msg8: FetchAttachment(Guid, Server, Nonce, IssuerCertificate) signed with the token's
    key (XMLDSIG over Body and Timestamp, the user certificate in KeyInfo)."""
    from cryptography.hazmat.primitives import serialization

    from wsemail.protocol.dsig import Signer, add_timestamp

    env, header, body = soap.new_envelope()
    security = etree.SubElement(header, q("Security", WSSE), nsmap={"wsse": WSSE, "wsu": WSU})
    now = now or datetime.now(UTC)
    add_timestamp(security, timestamp(now), timestamp(now + timedelta(minutes=5)))
    op = etree.SubElement(body, q("FetchAttachment"))
    element(op, "Guid", ref.guid)
    element(op, "Server", ref.server)
    element(op, "Nonce", base64.b64encode(nonce or os.urandom(16)).decode("ascii"))
    issuer = token.issuer.public_bytes(serialization.Encoding.DER)
    element(op, "IssuerCertificate", base64.b64encode(issuer).decode("ascii"))
    Signer(token.key, token.cert).sign_envelope(env)
    return soap.serialize(env)


def _text(node: etree._Element, name: str) -> str:
    value = (text_of(node, name) or "").strip()
    if not value:
        raise ServerError(f"{etree.QName(node).localname} without {name}")
    return value
