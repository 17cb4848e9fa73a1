"""In charge of a user's own key pair on this device: the private key encrypted at rest in
the user data dir (PKCS#8, passphrase-based encryption), its passphrase in the OS keyring
(or WSEMAIL_KEY_PASSPHRASE for scripts and tests), the certificates the home server issued
for it, and export / import to carry the key to other devices.

    <data dir>/keys/<address>.pem   encrypted private key, then certificates newest first,
                                     then the issuing CA's certificate (all PEM)

WSEMAIL_KEYS_DIR overrides the folder.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from wsemail.client.usercerts.xmlenc import KeyPair
from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import normalize_address

KEYRING_SERVICE = "wsemail-user-key"
PASSPHRASE_ENV = "WSEMAIL_KEY_PASSPHRASE"  # noqa: S105 -- a variable name
_KEY_MARKER = b"-----BEGIN ENCRYPTED PRIVATE KEY-----"
_KEY_END = b"-----END ENCRYPTED PRIVATE KEY-----"
_CERT_MARKER = b"-----BEGIN CERTIFICATE-----"

UserPrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def keys_dir() -> Path:
    env = os.environ.get("WSEMAIL_KEYS_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("wsemail", appauthor=False)) / "keys"


def new_private_key() -> ec.EllipticCurvePrivateKey:
    """A P-256 key: signs (ECDSA) and receives encrypted mail (ECDH-ES)."""
    return ec.generate_private_key(ec.SECP256R1())


@dataclass(frozen=True, eq=False)
class UserKey:
    """A user's private key and its certificates (newest first) with their issuing CA."""

    address: str
    key: UserPrivateKey = field(repr=False)
    certs: tuple[x509.Certificate, ...]
    issuer: x509.Certificate

    @property
    def cert(self) -> x509.Certificate:
        return self.certs[0]

    @property
    def pair(self) -> KeyPair:
        return KeyPair(self.key, self.certs)

    def with_cert(self, cert: x509.Certificate, issuer: x509.Certificate) -> UserKey:
        """The same key with a newly issued certificate in front."""
        if cert.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ) != self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ):
            raise UsageError("the issued certificate is not for this key")
        return UserKey(self.address, self.key, (cert, *self.certs), issuer)

    def to_pem(self, passphrase: str) -> bytes:
        if not passphrase:
            raise UsageError("an empty passphrase cannot protect a key")
        key = self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase.encode("utf-8")),
        )
        certs = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in self.certs)
        return key + certs + self.issuer.public_bytes(serialization.Encoding.PEM)

    @classmethod
    def from_pem(cls, address: str, data: bytes, passphrase: str) -> UserKey:
        start, end = data.find(_KEY_MARKER), data.find(_KEY_END)
        if start < 0 or end < 0:
            raise UsageError("no encrypted private key in the key file")
        try:
            key = serialization.load_pem_private_key(
                data[start : end + len(_KEY_END)], passphrase.encode("utf-8")
            )
            certs = x509.load_pem_x509_certificates(data[data.find(_CERT_MARKER) :])
        except (ValueError, TypeError) as exc:
            raise UsageError(f"cannot open the key for {address}: wrong passphrase?") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise UsageError("the key file holds an unsupported key type")
        if len(certs) < 2:
            raise UsageError("the key file holds no certificate")
        return cls(normalize_address(address), key, tuple(certs[:-1]), certs[-1])


def _path(address: str) -> Path:
    return keys_dir() / f"{normalize_address(address)}.pem"


def keyring_passphrase(address: str) -> str | None:
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    try:
        return keyring.get_password(KEYRING_SERVICE, address)
    except NoKeyringError as exc:
        raise UsageError(
            f"no OS keyring is available; set {PASSPHRASE_ENV} to the key's passphrase"
        ) from exc
    except (KeyringError, RuntimeError) as exc:
        raise UsageError(f"the OS keyring failed: {exc}") from exc


def _new_passphrase(address: str) -> str:
    """The passphrase for a newly stored key: the env var, or a random one in the keyring."""
    env = os.environ.get(PASSPHRASE_ENV)
    if env:
        return env
    import keyring
    from keyring.errors import KeyringError, NoKeyringError

    passphrase = secrets.token_urlsafe(32)
    try:
        keyring.set_password(KEYRING_SERVICE, address, passphrase)
    except NoKeyringError as exc:
        raise UsageError(
            f"no OS keyring is available on this machine; set {PASSPHRASE_ENV} to a "
            "passphrase for your key instead"
        ) from exc
    except (KeyringError, RuntimeError) as exc:
        raise UsageError(f"the OS keyring refused the passphrase: {exc}") from exc
    return passphrase


def exists(address: str) -> bool:
    return _path(address).exists()


def storable(address: str) -> str:
    """Check that a new key for `address` can be stored on this device — a passphrase
    (the env var, the keyring's, or a new one kept in the keyring) and a writable keys
    folder — and return the passphrase. Run it before asking a server to certify a key:
    a certified key that cannot be kept makes mail encrypted to it unreadable."""
    passphrase = keyring_passphrase(address) or _new_passphrase(address)
    folder = _path(address).parent
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise UsageError(f"cannot keep keys in {folder}: {exc.strerror or exc}") from exc
    if not os.access(folder, os.W_OK):
        raise UsageError(f"cannot keep keys in {folder}: not writable")
    return passphrase


def save(user_key: UserKey, *, new_passphrase: bool = False, passphrase: str | None = None) -> Path:
    """Write the key file (0600, atomically); the passphrase comes from the keyring (or is
    the one `storable` returned)."""
    if passphrase is None:
        passphrase = None if new_passphrase else keyring_passphrase(user_key.address)
        passphrase = passphrase or _new_passphrase(user_key.address)
    path = _path(user_key.address)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(user_key.to_pem(passphrase))
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    return path


def load(address: str) -> UserKey:
    address = normalize_address(address)
    path = _path(address)
    if not path.exists():
        raise UsageError(f"no key for {address} on this device: run 'wsemail keys create'")
    passphrase = keyring_passphrase(address)
    if not passphrase:
        raise UsageError(f"no passphrase for {address}'s key: set {PASSPHRASE_ENV}")
    return UserKey.from_pem(address, path.read_bytes(), passphrase)


def export_key(address: str, passphrase: str) -> bytes:
    """The key and certificates protected by an export passphrase, for another device."""
    return load(address).to_pem(passphrase)


def import_key(address: str, data: bytes, passphrase: str) -> UserKey:
    """Store an exported key on this device under a passphrase of this device's own."""
    user_key = UserKey.from_pem(address, data, passphrase)
    save(user_key, new_passphrase=not exists(address))
    return user_key
