"""In charge of certificate login: `CertificateCall`, a client request authenticated by an
XMLDSIG signature with the user's certificate instead of the password MAC.

    Body/CertificateCall: Server (this domain), Nonce (≥16 random bytes, base64),
                          and exactly one client operation (Send, ListHeaders, Retrieve,
                          Delete, Extension)
    Header/wsse:Security: wsu:Timestamp and the ds:Signature over Body and Timestamp

Order of checks, as for the MAC (DESIGN.md §4): rate limit → timestamp window (on the
unverified copy, cheaply) → signature with all binding checks, the chain user certificate
→ this domain's issuing CA → trusted root, current CRLs, and the certificate still active
in this server's records → the signed timestamp again → destination → nonce not seen and
the operation in one unit of work. Only the verified copy is read.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cryptography import x509
from lxml import etree

from wsemail import soap
from wsemail.auth import NONCE_BYTES
from wsemail.dsig import verify_envelope
from wsemail.errors import (
    AuthenticationFailed,
    Forbidden,
    InvalidSecurity,
    ReplayDetected,
    RequestInvalid,
    SecurityFault,
    UntrustedSigner,
)
from wsemail.message import domain_of
from wsemail.pki import certificate_address
from wsemail.server.operations import AUTHENTICATED
from wsemail.server.pipeline import Environment
from wsemail.server.store import Tx
from wsemail.soap import WSSE, WSU, q, text_of

if TYPE_CHECKING:
    from wsemail.server.app import Server
    from wsemail.server.usercerts.plugin import UserCertificates

log = logging.getLogger("wsemail.usercerts")
OPERATION = "CertificateCall"


def _nonce(op: etree._Element) -> str:
    try:
        raw = base64.b64decode("".join((text_of(op, "Nonce") or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidSecurity("Nonce is not base64") from exc
    if len(raw) < NONCE_BYTES:
        raise InvalidSecurity(f"Nonce shorter than {NONCE_BYTES} bytes")
    return base64.b64encode(raw).decode("ascii")


def _inner(op: etree._Element) -> etree._Element:
    found = [
        c
        for c in op
        if isinstance(c.tag, str) and etree.QName(c).localname not in ("Server", "Nonce")
    ]
    if len(found) != 1 or etree.QName(found[0]).namespace != soap.WSEMAIL:
        raise RequestInvalid("CertificateCall carries exactly one client operation")
    if etree.QName(found[0]).localname not in AUTHENTICATED:
        raise RequestInvalid("CertificateCall carries a client operation only")
    return found[0]


def make_operation(
    plugin: UserCertificates,
) -> Callable[[Server, soap.ReceivedEnvelope, str], Awaitable[etree._Element]]:
    async def certificate_call(
        server: Server, envelope: soap.ReceivedEnvelope, peer: str
    ) -> etree._Element:
        federation = server.federation
        if federation is None:
            raise Forbidden("this server has no federation identity")
        identity = federation.identity
        claimed = f"?{peer}"  # until the certificate names someone
        server.auth.check_rate(claimed, peer)
        header = envelope.header
        stamp = (
            None if header is None else header.find(f"{q('Security', WSSE)}/{q('Timestamp', WSU)}")
        )
        server.auth.check_fresh(None if stamp is None else stamp.findtext(q("Created", WSU)))

        def resolve(cert: x509.Certificate) -> str:
            nonlocal claimed
            address = certificate_address(cert)
            claimed = address
            server.auth.check_rate(address, peer)
            if domain_of(address) != server.config.domain:
                raise UntrustedSigner("certificate login is for this domain's users only")
            federation.refresh_crls()
            plugin.current_crl()
            federation.trust.verify_user(cert, identity.issuing_cert, address)
            return address

        try:
            verified = verify_envelope(envelope.root, resolve)
            address = verified.signer
            if verified.operation.tag != q(OPERATION):
                raise InvalidSecurity("the signed operation is not CertificateCall")
            server.auth.check_fresh(verified.timestamp.findtext(q("Created", WSU)))
        except SecurityFault:
            server.auth.record_failure(claimed, peer)
            log.info("certificate login refused for %r from %s", claimed, peer)
            raise
        op = verified.operation
        if (text_of(op, "Server") or "").strip().lower() != server.config.domain:
            raise Forbidden("this request is addressed to another server")
        nonce = _nonce(op)
        inner = _inner(op)
        operation = AUTHENTICATED[etree.QName(inner).localname]
        serial = str(verified.cert.serial_number)

        def work(tx: Tx) -> tuple[etree._Element, Environment]:
            row = tx.conn.execute(
                "SELECT revoked FROM user_certs WHERE serial=? AND address=?", (serial, address)
            ).fetchone()
            if row is None or row[0] is not None:
                raise UntrustedSigner("certificate revoked or not issued here")
            if not tx.remember_nonce(f"cert:{address}", nonce, server.auth.keep_nonce):
                raise ReplayDetected("this request was already received")
            user = tx.user(address)
            if user is None:
                raise AuthenticationFailed("authentication failed")
            env = Environment(
                principal=user.address,
                domain=server.config.domain,
                tx=tx,
                request=inner,
                pipeline=server.pipeline,
                clock=server.clock,
                is_admin=user.admin,
                wake_relay=server.wake_relay,
            )
            return operation(env, inner), env

        try:
            result, env = await server.store.transact(work)
        except (UntrustedSigner, AuthenticationFailed):
            server.auth.record_failure(address, peer)
            raise
        for callback in env.after_commit:
            callback()
        return result

    return certificate_call
