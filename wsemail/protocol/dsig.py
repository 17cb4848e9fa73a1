"""In charge of XMLDSIG (DESIGN.md §4): server-hop signatures over a SOAP envelope's Body
and Timestamp, enveloped signatures over relayed messages (end-to-end provenance), and the
verification that binds what is processed to what was signed.

signxml does the cryptography with keys loaded once (`Signer`). It accepts wrapped
documents on its own (a signed Body moved into a header, a forged Body in its place), so
`verify_envelope` adds the binding checks: exactly one Signature at the fixed path, one
Timestamp, one Body with one child; every id-like attribute value unique; reference URIs
exactly {#Body id, #Timestamp id}; the signed bytes equal the canonical form of the nodes
at the fixed paths; and callers read only the verified copies it returns. Inputs reaching
here have already passed the hardened parser (`wsemail.protocol.xmlsafe`); signxml re-reads those
same bytes with its own entity-free parser.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureConstructionMethod, SignatureMethod
from signxml.exceptions import InvalidInput, SignXMLException
from signxml.signer import XMLSigner
from signxml.verifier import SignatureConfiguration, XMLVerifier

from wsemail.protocol.errors import SignatureInvalid
from wsemail.protocol.soap import SOAP, WSEMAIL, WSSE, WSU, q
from wsemail.protocol.xmlsafe import c14n

DS = "http://www.w3.org/2000/09/xmldsig#"
DSIG11 = "http://www.w3.org/2009/xmldsig11#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"
ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
ECDSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha256"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
WSU_ID = f"{{{WSU}}}Id"
_METHODS = frozenset({SignatureMethod.ECDSA_SHA256, SignatureMethod.RSA_SHA256})
_DIGESTS = frozenset({DigestAlgorithm.SHA256})

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
# a certificate named by dsig11:X509Digest (SHA-256 of the DER) instead of embedded
CertificateLookup = Callable[[bytes], x509.Certificate]


def cert_digest(cert: x509.Certificate) -> bytes:
    """SHA-256 of the certificate's DER: the dsig11:X509Digest that names it."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()


def reference_certificate(signature: etree._Element, cert: x509.Certificate) -> None:
    """Replace the signature's KeyInfo by a dsig11:X509Digest reference to `cert` (KeyInfo
    is outside SignedInfo: the signature stays valid)."""
    for old in signature.findall(q("KeyInfo", DS)):
        signature.remove(old)
    key_info = etree.SubElement(signature, q("KeyInfo", DS))
    data = etree.SubElement(key_info, q("X509Data", DS))
    digest = etree.SubElement(data, q("X509Digest", DSIG11), nsmap={"dsig11": DSIG11})
    digest.set("Algorithm", SHA256)
    digest.text = base64.b64encode(cert_digest(cert)).decode("ascii")


def embed_certificate(signature: etree._Element, cert: x509.Certificate) -> None:
    """Replace the signature's KeyInfo by `cert` embedded as ds:X509Certificate (the
    counterpart of `reference_certificate`; the signature stays valid)."""
    for old in signature.findall(q("KeyInfo", DS)):
        signature.remove(old)
    key_info = etree.SubElement(signature, q("KeyInfo", DS))
    data = etree.SubElement(key_info, q("X509Data", DS))
    der = cert.public_bytes(serialization.Encoding.DER)
    etree.SubElement(data, q("X509Certificate", DS)).text = base64.b64encode(der).decode("ascii")


def names_certificate_by_digest(signature: etree._Element) -> bool:
    """Whether the signature's KeyInfo names its certificate by dsig11:X509Digest."""
    path = f"{q('KeyInfo', DS)}/{q('X509Data', DS)}/{q('X509Digest', DSIG11)}"
    return signature.find(path) is not None


class Signer:
    """Signs with one server key and certificate, both loaded once."""

    def __init__(self, key: PrivateKey, cert: x509.Certificate) -> None:
        self.key = key
        self.cert = cert
        self.cert_digest = cert_digest(cert)
        self._cert_b64 = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
        self._digest_b64 = base64.b64encode(self.cert_digest).decode()
        alg = "ecdsa-sha256" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa-sha256"
        self._method = ECDSA_SHA256 if alg == "ecdsa-sha256" else RSA_SHA256
        self._detached = XMLSigner(
            method=SignatureConstructionMethod.detached,
            signature_algorithm=alg,
            digest_algorithm="sha256",
            c14n_algorithm=EXC_C14N,
        )
        self._enveloped = XMLSigner(
            method=SignatureConstructionMethod.enveloped,
            signature_algorithm=alg,
            digest_algorithm="sha256",
            c14n_algorithm=EXC_C14N,
        )

    def sign_envelope(self, envelope: etree._Element) -> None:
        """Sign Body and Timestamp of `envelope`; the Signature goes into wsse:Security."""
        security, body, timestamp = _signed_parts(envelope)
        signature = self._detached.sign(
            envelope,
            key=self.key,
            cert=[self.cert],
            id_attribute="Id",
            reference_uri=[f"#{body.get(WSU_ID)}", f"#{timestamp.get(WSU_ID)}"],
        )
        security.append(signature)

    def sign_envelope_fast(self, envelope: etree._Element, *, embed: bool = True) -> None:
        """The same detached signature as `sign_envelope` (Body and Timestamp, exclusive
        c14n, SHA-256), built here without signxml for the per-response hot path: digest
        the two canonical nodes, build SignedInfo, sign its canonical form. `embed=False`
        names the certificate by dsig11:X509Digest (the peer already holds it)."""
        security, body, timestamp = _signed_parts(envelope)
        refs = "".join(
            _REFERENCE.format(uri=f"#{node.get(WSU_ID)}", transforms=_EXC, digest=_digest(node))
            for node in (body, timestamp)
        )
        security.append(self._signature(refs, embed))

    def sign_element_fast(self, element: etree._Element, *, embed: bool = True) -> etree._Element:
        """The same enveloped signature as `sign_element` (whole element, enveloped +
        exclusive c14n transforms, SHA-256), built without signxml: a signed standalone copy
        of `element` (which is not changed). `embed=False` names the certificate by
        dsig11:X509Digest (e.g. a relayed message whose Deliver hop signature embeds it)."""
        copy = etree.fromstring(etree.tostring(element))
        refs = _REFERENCE.format(uri="", transforms=_ENVELOPED + _EXC, digest=_digest(copy))
        copy.append(self._signature(refs, embed))
        return copy

    def signed_envelope(
        self, payload: etree._Element, created: str, expires: str, *, embed: bool = True
    ) -> bytes:
        """A whole SOAP envelope for `payload` with a wsu:Timestamp (`created`, `expires`:
        ISO 8601 UTC) and the signature `sign_envelope_fast` makes, written as bytes for
        the per-answer hot path: the Timestamp in its canonical form, the Body serialized
        once, no envelope tree."""
        n = next(_IDS)
        body_id, stamp_id = f"b-{_ID_PREFIX}{n:x}", f"t-{_ID_PREFIX}{n:x}"
        body = etree.Element(
            q("Body", SOAP), {WSU_ID: body_id}, nsmap={"s": SOAP, "w": WSEMAIL, "wsu": WSU}
        )
        body.append(payload)
        stamp = (
            f'<wsu:Timestamp{_WSU_DECL} wsu:Id="{stamp_id}"><wsu:Created>{created}'
            f"</wsu:Created><wsu:Expires>{expires}</wsu:Expires></wsu:Timestamp>"
        )
        stamp_digest = base64.b64encode(hashlib.sha256(stamp.encode()).digest()).decode()
        refs = _REFERENCE.format(uri=f"#{body_id}", transforms=_EXC, digest=_digest(body))
        refs += _REFERENCE.format(uri=f"#{stamp_id}", transforms=_EXC, digest=stamp_digest)
        # on the wire the Envelope declares s, w and wsu once (the canonical forms above
        # carry their own declarations, which exclusive c14n renders anyway)
        head = (
            f'<s:Envelope xmlns:s="{SOAP}" xmlns:w="{WSEMAIL}"{_WSU_DECL}><s:Header>'
            f'<wsse:Security xmlns:wsse="{WSSE}">{stamp.replace(_WSU_DECL, "", 1)}'
            f"{self._signature_text(refs, embed)}</wsse:Security></s:Header>"
        )
        data = etree.tostring(body, encoding="utf-8")
        if data.startswith(_BODY_DECLS):
            data = b"<s:Body" + data[len(_BODY_DECLS) :]
        return head.encode() + data + b"</s:Envelope>"

    def _signature(self, refs: str, embed: bool) -> etree._Element:
        return etree.fromstring(self._signature_text(refs, embed))

    def _signature_text(self, refs: str, embed: bool) -> str:
        """A ds:Signature over `refs`. SignedInfo is written directly in its exclusive
        canonical form (empty elements as start/end pairs, ds declared on it): that text is
        what is signed."""
        info = _SIGNED_INFO.format(method=self._method, refs=refs)
        value = base64.b64encode(self._raw_signature(info.encode())).decode()
        if embed:
            key = f"<ds:X509Data><ds:X509Certificate>{self._cert_b64}</ds:X509Certificate>"
        else:
            key = (
                f'<ds:X509Data><dsig11:X509Digest xmlns:dsig11="{DSIG11}" Algorithm="{SHA256}">'
                f"{self._digest_b64}</dsig11:X509Digest>"
            )
        wire = info.replace(_DS_DECL, "", 1)  # the same SignedInfo, written shorter
        for name in ("CanonicalizationMethod", "SignatureMethod", "Transform", "DigestMethod"):
            wire = wire.replace(f'"></ds:{name}>', '"/>')
        return (
            f'<ds:Signature xmlns:ds="{DS}">{wire}'
            f"<ds:SignatureValue>{value}"
            f"</ds:SignatureValue><ds:KeyInfo>{key}</ds:X509Data></ds:KeyInfo></ds:Signature>"
        )

    def _raw_signature(self, data: bytes) -> bytes:
        """XMLDSIG SignatureValue bytes: ECDSA as r || s (RFC 4050 form), RSA PKCS#1 v1.5."""
        if self._method == ECDSA_SHA256:
            assert isinstance(self.key, ec.EllipticCurvePrivateKey)
            r, s = decode_dss_signature(self.key.sign(data, _ECDSA))
            size = (self.key.curve.key_size + 7) // 8
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        assert isinstance(self.key, rsa.RSAPrivateKey)
        return self.key.sign(data, padding.PKCS1v15(), hashes.SHA256())

    def sign_element(self, element: etree._Element) -> etree._Element:
        """An enveloped signature over a standalone copy of `element` (which is not changed)."""
        copy = etree.fromstring(etree.tostring(element))
        signed: etree._Element = self._enveloped.sign(copy, key=self.key, cert=[self.cert])
        return signed


_SIGNED_INFO = (
    f'<ds:SignedInfo xmlns:ds="{DS}"><ds:CanonicalizationMethod Algorithm="{EXC_C14N}">'
    '</ds:CanonicalizationMethod><ds:SignatureMethod Algorithm="{method}">'
    "</ds:SignatureMethod>{refs}</ds:SignedInfo>"
)
_REFERENCE = (
    '<ds:Reference URI="{uri}"><ds:Transforms>{transforms}</ds:Transforms>'
    f'<ds:DigestMethod Algorithm="{SHA256}"></ds:DigestMethod>'
    "<ds:DigestValue>{digest}</ds:DigestValue></ds:Reference>"
)
_DS_DECL = f' xmlns:ds="{DS}"'
_WSU_DECL = f' xmlns:wsu="{WSU}"'
_BODY_DECLS = f'<s:Body xmlns:s="{SOAP}" xmlns:w="{WSEMAIL}"{_WSU_DECL}'.encode()
_EXC = f'<ds:Transform Algorithm="{EXC_C14N}"></ds:Transform>'
_ENVELOPED = f'<ds:Transform Algorithm="{ENVELOPED}"></ds:Transform>'


def _digest(node: etree._Element) -> str:
    return base64.b64encode(hashlib.sha256(c14n(node)).digest()).decode()


_ECDSA = ec.ECDSA(hashes.SHA256())
# wsu:Id values only need to be unique within one document: a per-process random prefix
# and a counter (a urandom call per id showed up in the per-answer profile)
_ID_PREFIX = secrets.token_hex(6)
_IDS = itertools.count()


def _signed_parts(
    envelope: etree._Element,
) -> tuple[etree._Element, etree._Element, etree._Element]:
    """(wsse:Security, Body, wsu:Timestamp) of an envelope to sign, Body and Timestamp
    given wsu:Id attributes."""
    security = envelope.find(f"{q('Header', SOAP)}/{q('Security', WSSE)}")
    body = envelope.find(q("Body", SOAP))
    timestamp = None if security is None else security.find(q("Timestamp", WSU))
    if security is None or body is None or timestamp is None:
        raise ValueError("signing needs Header/Security/Timestamp and Body")
    for node, prefix in ((body, "b"), (timestamp, "t")):
        if node.get(WSU_ID) is None:
            node.set(WSU_ID, f"{prefix}-{_ID_PREFIX}{next(_IDS):x}")
    return security, body, timestamp


def add_timestamp(security: etree._Element, created: str, expires: str) -> etree._Element:
    stamp = etree.SubElement(security, q("Timestamp", WSU))
    etree.SubElement(stamp, q("Created", WSU)).text = created
    etree.SubElement(stamp, q("Expires", WSU)).text = expires
    return stamp


@dataclass(frozen=True)
class VerifiedEnvelope:
    """What a verified hop signature vouches for: read only these verified copies."""

    cert: x509.Certificate
    signer: str  # what resolve_signer returned for the certificate (the signer's domain)
    operation: etree._Element  # verified copy of the Body's single child
    timestamp: etree._Element  # verified copy of wsu:Timestamp


def _only(nodes: list[Any], what: str) -> Any:
    if len(nodes) != 1:
        raise SignatureInvalid(f"exactly one {what} is required")
    return nodes[0]


def _unique_ids(root: etree._Element) -> None:
    seen: set[str] = set()
    for node in root.iter():
        if not isinstance(node.tag, str):
            continue
        for name, value in node.attrib.items():
            local = etree.QName(name).localname
            if local.lower() == "id":  # Id, ID, id in any namespace, and xml:id
                text = value if isinstance(value, str) else value.decode()
                if text in seen:
                    raise SignatureInvalid("duplicate id attribute value")
                seen.add(text)


def _certificate(
    signature: etree._Element, lookup: CertificateLookup | None = None
) -> x509.Certificate:
    """The embedded certificate, or the one a dsig11:X509Digest names (through `lookup`,
    and only if its digest really is that value)."""
    data = f"{q('KeyInfo', DS)}/{q('X509Data', DS)}"
    digests = signature.findall(f"{data}/{q('X509Digest', DSIG11)}")
    if digests and lookup is not None:
        node = _only(digests, "X509Digest")
        if (
            node.get("Algorithm") != SHA256
            or signature.find(f"{data}/{q('X509Certificate', DS)}") is not None
        ):
            raise SignatureInvalid("a certificate reference must be one SHA-256 X509Digest")
        try:
            digest = base64.b64decode("".join((node.text or "").split()), validate=True)
        except ValueError as exc:
            raise SignatureInvalid("X509Digest is not base64") from exc
        cert = lookup(digest)
        if cert_digest(cert) != digest:
            raise SignatureInvalid("the certificate found does not match its X509Digest")
        return cert
    text = _only(signature.findall(f"{data}/{q('X509Certificate', DS)}"), "X509Certificate")
    try:
        return x509.load_der_x509_certificate(base64.b64decode("".join((text.text or "").split())))
    except ValueError as exc:
        raise SignatureInvalid("unreadable signing certificate") from exc


def _references(signature: etree._Element) -> list[str]:
    refs = signature.findall(f"{q('SignedInfo', DS)}/{q('Reference', DS)}")
    return [ref.get("URI", "") for ref in refs]


def _verify(
    data: etree._Element,
    cert: x509.Certificate,
    location: str,
    count: int,
    id_attribute: str | None,
    at: datetime | None = None,
) -> list[Any]:
    # signxml checks the certificate's validity too: as at `at` when the caller checked
    # the chain as at a time bound by someone else (a server's stamp or receipt), else now
    config = SignatureConfiguration(
        location=location,
        expect_references=count,
        signature_methods=_METHODS,
        digest_algorithms=_DIGESTS,
        verification_time=at,
    )
    try:
        result = XMLVerifier().verify(
            data,
            x509_cert=cert,
            expect_config=config,
            id_attribute=id_attribute,
        )
    except (SignXMLException, InvalidInput, ValueError) as exc:
        raise SignatureInvalid(f"signature does not verify: {exc}") from exc
    return result if isinstance(result, list) else [result]


def verify_envelope(
    root: etree._Element,
    resolve_signer: Callable[[x509.Certificate], str],
    lookup: CertificateLookup | None = None,
    *,
    at: datetime | None = None,
) -> VerifiedEnvelope:
    """Verify a hop signature; `resolve_signer` checks the certificate's chain, role and
    revocation (raising on failure) and returns the signer's domain. With `lookup`, the
    certificate may be named by its dsig11:X509Digest instead of embedded."""
    body = _only([c for c in root if c.tag == q("Body", SOAP)], "Body")
    header = _only([c for c in root if c.tag == q("Header", SOAP)], "Header")
    security = _only(header.findall(q("Security", WSSE)), "wsse:Security")
    timestamp = _only(security.findall(q("Timestamp", WSU)), "wsu:Timestamp")
    _only([c for c in body if isinstance(c.tag, str)], "Body child")
    # exactly one Signature in the header, and it sits in wsse:Security; signatures inside
    # the Body are payload (e.g. relayed messages' own), covered by this one's digest
    signature = _only(list(header.iter(q("Signature", DS))), "ds:Signature in the Header")
    if signature.getparent() is not security:
        raise SignatureInvalid("the Signature must sit in the wsse:Security header")
    _unique_ids(root)
    body_id, stamp_id = body.get(WSU_ID), timestamp.get(WSU_ID)
    if not body_id or not stamp_id:
        raise SignatureInvalid("Body and Timestamp need wsu:Id attributes")
    if sorted(_references(signature)) != sorted([f"#{body_id}", f"#{stamp_id}"]):
        raise SignatureInvalid("the signature must reference exactly the Body and the Timestamp")
    cert = _certificate(signature, lookup)
    signer = resolve_signer(cert)
    location = f"./{q('Header', SOAP)}/{q('Security', WSSE)}/"
    results = _verify(root, cert, location, 2, "Id", at)
    verified: dict[bytes, etree._Element] = {}
    for result in results:
        node = result.signed_xml
        if not isinstance(node, etree._Element):
            raise SignatureInvalid("a reference did not resolve to an element")
        verified[c14n(node)] = node
    body_c14n, stamp_c14n = c14n(body), c14n(timestamp)
    if body_c14n not in verified or stamp_c14n not in verified:
        raise SignatureInvalid("signed content differs from the Body and Timestamp read")
    verified_body = verified[body_c14n]
    operation = _only([c for c in verified_body if isinstance(c.tag, str)], "signed Body child")
    return VerifiedEnvelope(cert, signer, operation, verified[stamp_c14n])


def verify_element(
    data: bytes | etree._Element,
    resolve_signer: Callable[[x509.Certificate], str],
    lookup: CertificateLookup | None = None,
    *,
    at: datetime | None = None,
) -> tuple[x509.Certificate, str, etree._Element]:
    """Verify an enveloped signature over a standalone element; return (cert, signer,
    verified copy of the element without its signature). With `lookup`, the certificate
    may be referenced by its dsig11:X509Digest instead of embedded."""
    root = data if isinstance(data, etree._Element) else etree.fromstring(data)
    signature = _only([c for c in root if c.tag == q("Signature", DS)], "ds:Signature")
    if len(list(root.iter(q("Signature", DS)))) != 1:
        raise SignatureInvalid("exactly one ds:Signature is required")
    _unique_ids(root)
    if _references(signature) != [""]:
        raise SignatureInvalid("a relayed message's signature must cover the whole element")
    transforms = signature.findall(
        f".//{q('Reference', DS)}/{q('Transforms', DS)}/{q('Transform', DS)}"
    )
    if [t.get("Algorithm") for t in transforms] not in ([ENVELOPED, EXC_C14N], [ENVELOPED]):
        raise SignatureInvalid("unexpected signature transforms")
    cert = _certificate(signature, lookup)
    signer = resolve_signer(cert)
    result = _verify(root, cert, "./", 1, None, at)[0]
    node = result.signed_xml
    if not isinstance(node, etree._Element):
        raise SignatureInvalid("the signature did not resolve to an element")
    unsigned = etree.fromstring(etree.tostring(root))
    for sig in unsigned.findall(q("Signature", DS)):
        unsigned.remove(sig)
    if c14n(node) != c14n(unsigned):
        raise SignatureInvalid("signed content differs from the element read")
    return cert, signer, node
