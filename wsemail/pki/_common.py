"""In charge of what every PKI module shares: the role OIDs, the file layout, key and
certificate files on disk (atomic writes, private keys 0600) and small X.509 helpers."""

from __future__ import annotations

import base64
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from wsemail.protocol.errors import UsageError

WSEMAIL_SERVER_ROLE = x509.ObjectIdentifier("1.3.6.1.4.1.59417.1.1")
"""Extended key usage that marks a domain's server certificate (TLS and XMLDSIG)."""
WSEMAIL_USER_ROLE = x509.ObjectIdentifier("1.3.6.1.4.1.59417.1.2")
"""Extended key usage that marks a user certificate issued by a domain's issuing CA."""

CLOCK_SKEW = timedelta(minutes=5)
"""Certificates are back-dated by this much so a peer whose clock lags still accepts them."""

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def now_utc() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ServerFiles:
    """What `issue_server` writes into a domain server's folder."""

    server_cert: Path
    server_key: Path
    issuing_cert: Path
    issuing_key: Path
    root_cert: Path

    @classmethod
    def in_folder(cls, folder: Path) -> ServerFiles:
        return cls(
            server_cert=folder / "server.pem",
            server_key=folder / "server.key",
            issuing_cert=folder / "issuing.pem",
            issuing_key=folder / "issuing.key",
            root_cert=folder / "root.pem",
        )

    def all(self) -> tuple[Path, ...]:
        return (
            self.server_cert,
            self.server_key,
            self.issuing_cert,
            self.issuing_key,
            self.root_cert,
        )


def check_domain(domain: str) -> str:
    """The mail domain lower-cased; UsageError unless it is a plain DNS name."""
    cleaned = domain.strip().lower().removesuffix(".")
    if len(cleaned) > 253 or not all(_LABEL.match(label) for label in cleaned.split(".")):
        raise UsageError(f"not a valid mail domain: {domain[:80]!r}")
    return cleaned


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def common_name(value: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, value)])


def spki_digest(public_key: PublicKey | x509.Certificate) -> bytes:
    """SHA-256 of a public key's SubjectPublicKeyInfo: identifies an issuer across names."""
    if isinstance(public_key, x509.Certificate):
        return spki_digest(public_key_of(public_key))
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return digest.finalize()


def public_key_of(cert: x509.Certificate) -> PublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise UsageError(f"unsupported key type in certificate {cert.subject.rfc4514_string()}")
    return key


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the DER as colon-separated hex, the way operators compare roots."""
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def thumbprint(cert: x509.Certificate) -> str:
    """Base64 SHA-256 of the DER (the WS-Security thumbprint reference form)."""
    return base64.b64encode(cert.fingerprint(hashes.SHA256())).decode("ascii")


def key_identifiers(
    builder: x509.CertificateBuilder, subject_key: PublicKey, issuer: x509.Certificate | None
) -> x509.CertificateBuilder:
    """Add SKI, and AKI from the issuer's SKI unless the certificate is self-signed."""
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(subject_key), critical=False
    )
    if issuer is None:
        return builder
    ski = issuer.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return builder.add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
    )


def not_after(now: datetime, lifetime: timedelta, issuer: x509.Certificate | None) -> datetime:
    """`now + lifetime`, but never past the issuer's own expiry."""
    end = now + lifetime
    if issuer is not None:
        end = min(end, issuer.not_valid_after_utc)
    return end


# --- files -------------------------------------------------------------------------------


def _write_atomic(path: Path, data: bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_public(path: Path, data: bytes) -> None:
    _write_atomic(path, data, 0o644)


def write_cert(path: Path, cert: x509.Certificate) -> None:
    write_public(path, cert.public_bytes(serialization.Encoding.PEM))


def write_key(path: Path, key: PrivateKey) -> None:
    """A private key as unencrypted PKCS#8 PEM, readable by its owner only (0600)."""
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_atomic(path, pem, 0o600)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from exc


def read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(_read(path, "certificate"))
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM certificate") from exc


def read_crl(path: Path) -> x509.CertificateRevocationList:
    try:
        return x509.load_pem_x509_crl(_read(path, "CRL"))
    except ValueError as exc:
        raise UsageError(f"{path} is not a PEM CRL") from exc


def read_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read(path, "private key"), password=None)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{path} is not an unencrypted PEM private key") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise UsageError(f"{path}: only ECDSA and RSA keys are supported")
    return key


def same_key(key: PrivateKey, cert: x509.Certificate) -> bool:
    return spki_digest(key.public_key()) == spki_digest(cert)
