"""In charge of the two federated-identity operations of the on-demand attachment protocol
(ICWS 2005 paper §4, Msg6–Msg9):

- `IssueToken` (RC → RS, password MAC): a short-lived certificate for the caller's own
  address and public key, issued with this domain's name-constrained issuing CA;
- `FetchAttachment` (RC → SS, XMLDSIG by the token's key): the chain user certificate →
  its domain's issuing CA → a trusted root, the signature's binding checks, freshness, the
  destination, a durable nonce, that the address is a recipient of THAT attachment and that
  it is still active; the answer is a one-time download ticket for the byte stream.

Both are top-level operations registered through `Server.operations`, so they do their own
authentication; the MAC check follows `Server.dispatch` exactly (rate limit → freshness →
nonce → MAC in the unit of work that issues the certificate).
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from wsemail.pki import SHORT_LIVED
from wsemail.pki import certificate_address as certificate_address  # re-exported
from wsemail.protocol import soap
from wsemail.protocol.auth import NONCE_BYTES
from wsemail.protocol.dsig import verify_envelope
from wsemail.protocol.errors import (
    Forbidden,
    InvalidSecurity,
    NotFound,
    ReplayDetected,
    RequestInvalid,
    SignatureInvalid,
    UntrustedSigner,
    UsageError,
)
from wsemail.protocol.message import domain_of
from wsemail.protocol.soap import element, int_of, q, text_of
from wsemail.server.attachments import records
from wsemail.server.store import Tx, UserRecord

if TYPE_CHECKING:
    from wsemail.server.app import Server

log = logging.getLogger("wsemail.attachments")
T = TypeVar("T")
DOWNLOAD_PATH = "/wsemail/attachments/download"
MAX_TOKEN_SECONDS = 10**9  # what IssueToken reads as Lifetime (then cut to the limit)


async def mac_authenticated(
    server: Server,
    envelope: soap.ReceivedEnvelope,
    peer: str,
    work: Callable[[Tx, UserRecord], T],
) -> T:
    """Run `work` for the caller of a password-MAC request, in the unit of work that
    remembers its nonce (`Server.authenticated`, the same path as the core operations)."""
    return await server.authenticated(envelope, peer, work, mac_only=True)


def _b64(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestInvalid(f"{what} is not base64") from exc


def _der(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode("ascii")


async def issue_token(
    server: Server, envelope: soap.ReceivedEnvelope, peer: str, max_lifetime: float
) -> etree._Element:
    """Msg6/Msg7: a federated identity certificate for the caller's key."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server issues no federated identities")
    op = envelope.operation
    try:
        key = serialization.load_der_public_key(_b64(text_of(op, "PublicKey"), "PublicKey"))
    except ValueError as exc:
        raise RequestInvalid("PublicKey is not a DER SubjectPublicKeyInfo") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise RequestInvalid("only ECDSA and RSA keys can be certified")
    limit = min(max_lifetime, SHORT_LIVED.total_seconds())
    asked = int_of(op, "Lifetime", 0, MAX_TOKEN_SECONDS, 0)  # 0: as long as allowed
    lifetime = timedelta(seconds=max(60, min(asked or limit, limit)))
    identity = federation.identity

    def work(tx: Tx, user: UserRecord) -> x509.Certificate:
        now = datetime.fromtimestamp(server.clock(), UTC)
        try:
            return identity.issue_user_cert(user.address, key, lifetime=lifetime, now=now)
        except UsageError as exc:
            raise RequestInvalid(str(exc)) from exc

    cert = await mac_authenticated(server, envelope, peer, work)
    result = etree.Element(q("IssueTokenResponse"))
    element(result, "Certificate", _der(cert))
    element(result, "IssuerCertificate", _der(identity.issuing_cert))
    element(result, "Expires", cert.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%SZ"))
    log.info(
        "issued a federated identity to %s until %s",
        cert.subject.rfc4514_string(),
        cert.not_valid_after_utc,
    )
    return result


def issuer_certificate(op: etree._Element) -> x509.Certificate:
    found = op.findall(q("IssuerCertificate"))
    if len(found) != 1:
        raise UntrustedSigner("FetchAttachment needs exactly one IssuerCertificate")
    try:
        return x509.load_der_x509_certificate(_b64(found[0].text, "IssuerCertificate"))
    except ValueError as exc:
        raise UntrustedSigner("unreadable IssuerCertificate") from exc


def _nonce(op: etree._Element) -> str:
    raw = _b64(text_of(op, "Nonce"), "Nonce")
    if len(raw) < NONCE_BYTES:
        raise InvalidSecurity(f"Nonce shorter than {NONCE_BYTES} bytes")
    return base64.b64encode(raw).decode("ascii")


@dataclass(frozen=True)
class IdentityRequest:
    """A verified request signed with a user's federated identity certificate: who sent it
    (the certificate's address, chained to its domain's issuing CA and a trusted root), the
    verified operation element, and its nonce (to remember in the request's unit of work as
    `tx.remember_nonce(f"user:{address}", nonce, ...)`)."""

    address: str
    operation: etree._Element
    nonce: str


def verify_identity_request(
    server: Server, envelope: soap.ReceivedEnvelope, operation: str
) -> IdentityRequest:
    """The checks every identity-signed request gets (FetchAttachment, a direct instant
    message, autofill): chain and address via `TrustStore.verify_user`, the hop binding
    checks of `verify_envelope`, the signed operation and issuer, freshness, that it is
    addressed to this server, and a well-formed nonce."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server serves no federated requests")
    issuing = issuer_certificate(
        envelope.operation
    )  # only to build the chain; compared once verified

    def resolve(cert: x509.Certificate) -> str:
        federation.refresh_crls()
        address = certificate_address(cert)
        federation.trust.verify_user(cert, issuing, address)
        return address

    verified = verify_envelope(envelope.root, resolve)
    op, address = verified.operation, verified.signer
    if op.tag != q(operation):
        raise SignatureInvalid(f"the signed operation is not {operation}")
    if issuer_certificate(op) != issuing:
        raise SignatureInvalid("the IssuerCertificate read is not the one signed")
    server.auth.check_timestamp(verified.timestamp)
    if (text_of(op, "Server") or "").strip().lower() != server.config.domain:
        raise Forbidden("this request is addressed to another server")
    return IdentityRequest(address, op, _nonce(op))


def verify_own_user_request(
    server: Server, envelope: soap.ReceivedEnvelope, operation: str
) -> IdentityRequest:
    """`verify_identity_request` for operations that serve only this domain's own users
    (autofill, countersigning): the signer must be a user of this domain whose certificate
    this server's issuing CA made."""
    federation = server.federation
    if federation is None:
        raise Forbidden("this server takes no federated requests")
    domain = server.config.domain
    request = verify_identity_request(server, envelope, operation)
    op = request.operation
    address = request.address.lower()
    if domain_of(address) != domain or issuer_certificate(op) != federation.identity.issuing_cert:
        raise UntrustedSigner(f"{operation} serves only users of {domain}")
    return IdentityRequest(address, op, request.nonce)


async def fetch_attachment(
    server: Server, envelope: soap.ReceivedEnvelope, peer: str, ticket_lifetime: float
) -> etree._Element:
    """Msg8: check the requester's federated identity and hand out a download ticket."""
    request = verify_identity_request(server, envelope, "FetchAttachment")
    op, address, nonce = request.operation, request.address, request.nonce
    guid = (text_of(op, "Guid") or "").strip()
    keep = server.auth.keep_nonce

    def work(tx: Tx) -> tuple[str, records.Blob]:
        if not tx.remember_nonce(f"user:{address}", nonce, keep):
            raise ReplayDetected("this request was already received")
        blob = records.get(tx, guid) if len(guid) <= 64 else None
        if blob is None or blob.state not in ("bound", "revoked", "superseded"):
            raise NotFound("no such attachment")
        if not records.is_recipient(tx, guid, address):
            raise Forbidden(f"{address} is not a recipient of this attachment")
        if blob.state == "revoked":
            raise Forbidden("the sender revoked this attachment")
        if blob.state == "superseded":
            raise Forbidden(
                f"the sender replaced this attachment by a newer version: {blob.replaced_by}"
            )
        ticket = records.issue_download(tx, guid, address, tx.now + ticket_lifetime)
        records.audit(tx, guid, address, "authorized")
        return ticket, blob

    ticket, blob = await server.store.transact(work)
    log.info("fetch of %s authorized for %r from %s", guid, address, peer)
    result = etree.Element(q("FetchAttachmentResponse"))
    element(result, "Guid", blob.guid)
    element(result, "Ticket", ticket)
    element(result, "Path", DOWNLOAD_PATH)
    element(result, "Size", str(blob.size))
    element(result, "Sha256", blob.sha256 or "")
    return result
