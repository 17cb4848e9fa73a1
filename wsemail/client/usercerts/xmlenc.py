"""In charge of W3C XML Encryption 1.1 for end-to-end mail: one element encrypted with
AES-256-GCM under a fresh content key, that key wrapped for each recipient certificate —
ECDH-ES (P-256, ephemeral sender key, ConcatKDF with SHA-256, AES-256 key wrap) for EC
certificates, RSA-OAEP (SHA-256, MGF1-SHA-256) for RSA certificates.

Only `cryptography` primitives and lxml; every failure to decrypt (no key for us, wrong
algorithm, tampered bytes) is one `SignatureInvalid` ("FailedCheck"), never a partial
plaintext. The decrypted bytes are parsed with the hardened parser.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidKey, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap
from lxml import etree

from wsemail.pki import has_key_usage
from wsemail.protocol.errors import SignatureInvalid, UsageError
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted

XENC = "http://www.w3.org/2001/04/xmlenc#"
XENC11 = "http://www.w3.org/2009/xmlenc11#"
DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"
AES256_GCM = XENC11 + "aes256-gcm"
KW_AES256 = XENC + "kw-aes256"
ECDH_ES = XENC11 + "ECDH-ES"
CONCAT_KDF = XENC11 + "ConcatKDF"
RSA_OAEP = XENC11 + "rsa-oaep"
MGF1_SHA256 = XENC11 + "mgf1sha256"
SHA256 = XENC + "sha256"
P256 = "urn:oid:1.2.840.10045.3.1.7"
ELEMENT = XENC + "Element"
NSMAP = {"xenc": XENC, "xenc11": XENC11, "ds": DS, "dsig11": DSIG11}
PLAINTEXT_LIMITS = XmlLimits(max_bytes=32 << 20, max_depth=32, max_elements=100_000)

Decryptor = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _q(ns: str, local: str) -> str:
    return f"{{{ns}}}{local}"


def _sub(parent: etree._Element, ns: str, local: str, **attrs: str) -> etree._Element:
    return etree.SubElement(parent, _q(ns, local), attrs)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str | None) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise SignatureInvalid("encrypted data is not base64") from exc


def cert_digest(cert: x509.Certificate) -> bytes:
    """The dsig11:X509Digest (SHA-256 of the DER) that names a recipient certificate."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def _other_info() -> bytes:
    # AlgorithmID || PartyUInfo || PartyVInfo, each a bit string without its pad byte
    return KW_AES256.encode("ascii")


def _kek(shared: bytes) -> bytes:
    return ConcatKDFHash(hashes.SHA256(), 32, _other_info()).derive(shared)


def _recipient_info(parent: etree._Element, cert: x509.Certificate) -> None:
    data = _sub(parent, DS, "X509Data")
    _sub(data, DSIG11, "X509Digest", Algorithm=SHA256).text = _b64(cert_digest(cert))


def _wrap_for(parent: etree._Element, cek: bytes, cert: x509.Certificate, name: str) -> None:
    key = cert.public_key()
    encrypted_key = _sub(parent, XENC, "EncryptedKey", Recipient=name)
    usage = "key_agreement" if isinstance(key, ec.EllipticCurvePublicKey) else "key_encipherment"
    if not has_key_usage(cert, usage):  # the holder did not ask to receive encrypted mail
        raise UsageError(f"{name}: the certificate's key usage does not allow encryption")
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise UsageError(f"{name}: only P-256 keys are supported for key agreement")
        _sub(encrypted_key, XENC, "EncryptionMethod", Algorithm=KW_AES256)
        info = _sub(encrypted_key, DS, "KeyInfo")
        agreement = _sub(info, XENC, "AgreementMethod", Algorithm=ECDH_ES)
        derivation = _sub(agreement, XENC11, "KeyDerivationMethod", Algorithm=CONCAT_KDF)
        params = _sub(
            derivation,
            XENC11,
            "ConcatKDFParams",
            AlgorithmID="00" + KW_AES256.encode("ascii").hex(),
            PartyUInfo="00",
            PartyVInfo="00",
        )
        _sub(params, DS, "DigestMethod", Algorithm=SHA256)
        ephemeral = ec.generate_private_key(ec.SECP256R1())
        point = ephemeral.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        originator = _sub(_sub(agreement, XENC, "OriginatorKeyInfo"), DS, "KeyValue")
        value = _sub(originator, DSIG11, "ECKeyValue")
        _sub(value, DSIG11, "NamedCurve", URI=P256)
        _sub(value, DSIG11, "PublicKey").text = _b64(point)
        _recipient_info(_sub(agreement, XENC, "RecipientKeyInfo"), cert)
        wrapped = aes_key_wrap(_kek(ephemeral.exchange(ec.ECDH(), key)), cek)
    elif isinstance(key, rsa.RSAPublicKey):
        method = _sub(encrypted_key, XENC, "EncryptionMethod", Algorithm=RSA_OAEP)
        _sub(method, DS, "DigestMethod", Algorithm=SHA256)
        _sub(method, XENC11, "MGF", Algorithm=MGF1_SHA256)
        _recipient_info(_sub(encrypted_key, DS, "KeyInfo"), cert)
        wrapped = key.encrypt(cek, _oaep())
    else:
        raise UsageError(f"{name}: the certificate's key cannot receive encrypted mail")
    cipher = _sub(encrypted_key, XENC, "CipherData")
    _sub(cipher, XENC, "CipherValue").text = _b64(wrapped)


def _oaep() -> padding.OAEP:
    return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def encrypt_element(
    plaintext: etree._Element, recipients: Sequence[tuple[str, x509.Certificate]]
) -> etree._Element:
    """An xenc:EncryptedData (Type Element) of `plaintext` for every (name, certificate)."""
    if not recipients:
        raise UsageError("encrypting needs at least one recipient certificate")
    cek = AESGCM.generate_key(bit_length=256)
    iv = os.urandom(12)
    data = etree.tostring(plaintext, encoding="utf-8")
    sealed = iv + AESGCM(cek).encrypt(iv, data, None)
    encrypted = etree.Element(_q(XENC, "EncryptedData"), {"Type": ELEMENT}, nsmap=NSMAP)
    _sub(encrypted, XENC, "EncryptionMethod", Algorithm=AES256_GCM)
    info = _sub(encrypted, DS, "KeyInfo")
    for name, cert in recipients:
        _wrap_for(info, cek, cert, name)
    _sub(_sub(encrypted, XENC, "CipherData"), XENC, "CipherValue").text = _b64(sealed)
    return encrypted


@dataclass(frozen=True)
class KeyPair:
    """A private key and the certificates (current and earlier) issued for it."""

    key: Decryptor
    certs: tuple[x509.Certificate, ...]


def _one(parent: etree._Element, path: str) -> etree._Element:
    found = parent.findall(path, NSMAP)
    if len(found) != 1:
        raise SignatureInvalid(f"encrypted data needs exactly one {path}")
    return found[0]


def _digest_of(holder: etree._Element) -> bytes:
    return _unb64(_one(holder, "ds:X509Data/dsig11:X509Digest").text)


def _unwrap(encrypted_key: etree._Element, key: Decryptor) -> bytes:
    method = _one(encrypted_key, "xenc:EncryptionMethod").get("Algorithm")
    wrapped = _unb64(_one(encrypted_key, "xenc:CipherData/xenc:CipherValue").text)
    try:
        if method == KW_AES256 and isinstance(key, ec.EllipticCurvePrivateKey):
            agreement = _one(encrypted_key, "ds:KeyInfo/xenc:AgreementMethod")
            params = _one(agreement, "xenc11:KeyDerivationMethod/xenc11:ConcatKDFParams")
            if (
                agreement.get("Algorithm") != ECDH_ES
                or _one(agreement, "xenc11:KeyDerivationMethod").get("Algorithm") != CONCAT_KDF
                or _one(params, "ds:DigestMethod").get("Algorithm") != SHA256
                or params.get("AlgorithmID") != "00" + KW_AES256.encode("ascii").hex()
            ):
                raise SignatureInvalid("unsupported key agreement")
            value = _one(agreement, "xenc:OriginatorKeyInfo/ds:KeyValue/dsig11:ECKeyValue")
            if _one(value, "dsig11:NamedCurve").get("URI") != P256:
                raise SignatureInvalid("unsupported curve")
            point = _unb64(_one(value, "dsig11:PublicKey").text)
            peer = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), point)
            return aes_key_unwrap(_kek(key.exchange(ec.ECDH(), peer)), wrapped)
        if method == RSA_OAEP and isinstance(key, rsa.RSAPrivateKey):
            spec = _one(encrypted_key, "xenc:EncryptionMethod")
            if (
                _one(spec, "ds:DigestMethod").get("Algorithm") != SHA256
                or _one(spec, "xenc11:MGF").get("Algorithm") != MGF1_SHA256
            ):
                raise SignatureInvalid("unsupported RSA-OAEP parameters")
            return key.decrypt(wrapped, _oaep())
    except (ValueError, InvalidUnwrap, InvalidKey) as exc:
        raise SignatureInvalid("the content key cannot be unwrapped") from exc
    raise SignatureInvalid("unsupported key transport for this key")


def _recipient_digest(encrypted_key: etree._Element) -> bytes:
    agreement = encrypted_key.findall("ds:KeyInfo/xenc:AgreementMethod", NSMAP)
    if agreement:
        return _digest_of(_one(agreement[0], "xenc:RecipientKeyInfo"))
    return _digest_of(_one(encrypted_key, "ds:KeyInfo"))


def recipients_of(encrypted: etree._Element) -> list[str]:
    """The Recipient names written next to each wrapped key (informational only)."""
    return [
        k.get("Recipient", "") for k in encrypted.findall("ds:KeyInfo/xenc:EncryptedKey", NSMAP)
    ]


def decrypt_element(encrypted: etree._Element, pairs: Iterable[KeyPair]) -> etree._Element:
    """The plaintext element of an EncryptedData, with the first key pair it was sealed for."""
    if encrypted.tag != _q(XENC, "EncryptedData") or encrypted.get("Type") != ELEMENT:
        raise SignatureInvalid("not an xenc:EncryptedData element")
    if _one(encrypted, "xenc:EncryptionMethod").get("Algorithm") != AES256_GCM:
        raise SignatureInvalid("unsupported content encryption")
    sealed = _unb64(_one(encrypted, "xenc:CipherData/xenc:CipherValue").text)
    by_digest = {cert_digest(c): pair for pair in pairs for c in pair.certs}
    for encrypted_key in encrypted.findall("ds:KeyInfo/xenc:EncryptedKey", NSMAP):
        pair = by_digest.get(_recipient_digest(encrypted_key))
        if pair is None:
            continue
        cek = _unwrap(encrypted_key, pair.key)
        if len(cek) != 32 or len(sealed) < 12 + 16:
            raise SignatureInvalid("malformed encrypted data")
        try:
            data = AESGCM(cek).decrypt(sealed[:12], sealed[12:], None)
        except InvalidTag as exc:
            raise SignatureInvalid("the encrypted content was altered") from exc
        return parse_untrusted(data, PLAINTEXT_LIMITS)
    raise SignatureInvalid("this message was not encrypted for any of your certificates")
