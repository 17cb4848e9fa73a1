"""In charge of a domain server's own PKI identity: its server certificate and key (TLS,
XMLDSIG) and its issuing CA, with which it issues certificates to its own users only.

Loaded once at server start: parsing keys per request is slow.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from wsemail.pki._common import (
    CLOCK_SKEW,
    WSEMAIL_USER_ROLE,
    PrivateKey,
    PublicKey,
    ServerFiles,
    common_name,
    key_identifiers,
    not_after,
    now_utc,
    read_cert,
    read_key,
    same_key,
    thumbprint,
    write_public,
)
from wsemail.protocol.errors import RequestInvalid, UsageError
from wsemail.protocol.message import domain_of, normalize_address


def _user_key_usage(public_key: PublicKey, encryption: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=encryption and isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=encryption and isinstance(public_key, ec.EllipticCurvePublicKey),
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


MIN_RSA_BITS = 2048


@dataclass(frozen=True, eq=False)
class ServerIdentity:
    """A domain server's certificates and keys, as written by `issue_server`."""

    domain: str
    cert: x509.Certificate
    key: PrivateKey = field(repr=False)
    issuing_cert: x509.Certificate
    issuing_key: PrivateKey = field(repr=False)
    root_cert: x509.Certificate
    cert_pem: bytes = field(repr=False)
    thumbprint: str

    @classmethod
    def load(cls, folder: Path) -> ServerIdentity:
        """Read server.pem/.key, issuing.pem/.key and root.pem from `folder`."""
        files = ServerFiles.in_folder(folder)
        cert = read_cert(files.server_cert)
        key = read_key(files.server_key)
        issuing_cert = read_cert(files.issuing_cert)
        issuing_key = read_key(files.issuing_key)
        root_cert = read_cert(files.root_cert)
        if not same_key(key, cert):
            raise UsageError(f"{files.server_key} does not belong to {files.server_cert}")
        if not same_key(issuing_key, issuing_cert):
            raise UsageError(f"{files.issuing_key} does not belong to {files.issuing_cert}")
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound as exc:
            raise UsageError(f"{files.server_cert} names no domain (no subjectAltName)") from exc
        names = san.get_values_for_type(x509.DNSName)
        if len(names) != 1:
            raise UsageError(f"{files.server_cert} must name exactly one domain, not {names}")
        return cls(
            domain=names[0].lower(),
            cert=cert,
            key=key,
            issuing_cert=issuing_cert,
            issuing_key=issuing_key,
            root_cert=root_cert,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            thumbprint=thumbprint(cert),
        )

    def issue_user_cert(
        self,
        address: str,
        public_key: PublicKey,
        *,
        lifetime: timedelta,
        now: datetime | None = None,
        encryption: bool = False,
    ) -> x509.Certificate:
        """A certificate for one of this domain's users, signed by the issuing CA.

        SAN rfc822Name = the address; never valid past the issuing CA. Short lifetimes (up to
        `SHORT_LIVED`, see `wsemail.pki.trust`) need no user CRL at the verifier. With
        `encryption` the key may also receive mail encrypted to it (key agreement for EC
        keys, key encipherment for RSA keys), as `wsemail keys create` asks.
        """
        try:
            address = normalize_address(address)
        except RequestInvalid as exc:
            raise UsageError(exc.reason) from exc
        if domain_of(address) != self.domain:
            raise UsageError(f"{address} is not in this server's domain {self.domain}")
        if lifetime <= timedelta(0):
            raise UsageError("a certificate lifetime must be positive")
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < MIN_RSA_BITS:
                raise UsageError(f"RSA keys need at least {MIN_RSA_BITS} bits")
        elif not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise UsageError("only ECDSA and RSA public keys can be certified")
        now = now or now_utc()
        builder = (
            x509.CertificateBuilder()
            .subject_name(common_name(address))
            .issuer_name(self.issuing_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(not_after(now, lifetime, self.issuing_cert))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_user_key_usage(public_key, encryption), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.RFC822Name(address)]), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [
                        ExtendedKeyUsageOID.CLIENT_AUTH,
                        ExtendedKeyUsageOID.EMAIL_PROTECTION,
                        WSEMAIL_USER_ROLE,
                    ]
                ),
                critical=False,
            )
        )
        builder = key_identifiers(builder, public_key, self.issuing_cert)
        return builder.sign(self.issuing_key, hashes.SHA256())

    def user_crl(
        self,
        revoked: Mapping[int, datetime],
        *,
        days: int = 1,
        now: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """A CRL signed by the issuing CA listing revoked user certificates (serial → date).

        The CRL number is the issue time in microseconds, so it only grows.
        """
        if days < 1:
            raise UsageError(f"days must be at least 1, not {days}")
        now = now or now_utc()
        ski = self.issuing_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        builder = (
            x509.CertificateRevocationListBuilder()
            .issuer_name(self.issuing_cert.subject)
            .last_update(now)
            .next_update(now + timedelta(days=days))
            .add_extension(x509.CRLNumber(int(now.timestamp() * 1_000_000)), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski.value),
                critical=False,
            )
        )
        for serial, when in sorted(revoked.items()):
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
            )
        return builder.sign(self.issuing_key, hashes.SHA256())

    def write_user_crl(
        self,
        path: Path,
        revoked: Mapping[int, datetime],
        *,
        days: int = 1,
        now: datetime | None = None,
    ) -> x509.CertificateRevocationList:
        """`user_crl`, also written to `path` as PEM (atomically)."""
        crl = self.user_crl(revoked, days=days, now=now)
        write_public(path, crl.public_bytes(serialization.Encoding.PEM))
        return crl
