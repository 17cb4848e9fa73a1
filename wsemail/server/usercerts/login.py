"""In charge of the certificate side of certificate login: `CertificateCall`, a client
request authenticated by an XMLDSIG signature with the user's certificate instead of the
password MAC.

    Body/CertificateCall: Server (this domain), Nonce (≥16 random bytes, base64),
                          and exactly one client operation (Send, ListHeaders, Retrieve,
                          Delete, Extension)
    Header/wsse:Security: wsu:Timestamp and the ds:Signature over Body and Timestamp

The request goes through the server's one authentication path (`Server.login` in
`wsemail.server.app`), which applies the rules shared with the password MAC: rate limit,
freshness, destination, the nonce in the durable replay table in the same unit of work as
the effect, the same faults. This module only answers the two questions that are about
certificates: is the signature good (all binding checks; the chain user certificate → this
domain's issuing CA → trusted root, current CRLs), and is the certificate still active in
this server's records (checked inside the unit of work).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from cryptography import x509

from wsemail.pki import certificate_address
from wsemail.protocol import soap
from wsemail.protocol.dsig import VerifiedEnvelope, verify_envelope
from wsemail.protocol.errors import Forbidden, UntrustedSigner
from wsemail.protocol.message import domain_of
from wsemail.server.store import Tx

if TYPE_CHECKING:
    from wsemail.server.app import Server


class UserCertificates(Protocol):
    """What certificate login needs of the user-certificate plug-in (`plugin.py`)."""

    def current_crl(self) -> x509.CertificateRevocationList: ...


class CertificateLogin:
    """The certificate checks `Server.login` asks the user-certificate plug-in for."""

    def __init__(self, plugin: UserCertificates, server: Server) -> None:
        self.plugin = plugin
        self.server = server

    def verify(
        self, envelope: soap.ReceivedEnvelope, claim: Callable[[str], None]
    ) -> VerifiedEnvelope:
        """The verified envelope (only its verified copy is read from then on); `claim`
        hears the address the certificate names before its chain is checked."""
        server = self.server
        federation = server.federation
        if federation is None:
            raise Forbidden("this server has no federation identity")
        identity = federation.identity

        def resolve(cert: x509.Certificate) -> str:
            address = certificate_address(cert)
            claim(address)
            if domain_of(address) != server.config.domain:
                raise UntrustedSigner("certificate login is for this domain's users only")
            federation.refresh_crls()
            self.plugin.current_crl()
            federation.trust.verify_user(cert, identity.issuing_cert, address)
            return address

        return verify_envelope(envelope.root, resolve)

    @staticmethod
    def active(tx: Tx, address: str, cert: x509.Certificate) -> bool:
        """The certificate was issued here to `address` and is not revoked."""
        row = tx.conn.execute(
            "SELECT revoked FROM user_certs WHERE serial=? AND address=?",
            (str(cert.serial_number), address),
        ).fetchone()
        return row is not None and row[0] is None
