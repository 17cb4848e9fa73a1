"""In charge of finding and trusting other users' certificates: `LookupCertificate` on the
recipient's own server, then acceptance only if the certificate chains to THAT domain's
issuing CA (name-constrained to the domain) and a trusted federation root, carries the
wsemail user role and the address, is within its validity and is not revoked by a current
CRL (fail closed). Accepted certificates are cached until the earliest of the cache
lifetime, the CRL's next update and the certificate's expiry — in memory, and with a
`cache_dir` also on disk for the next process (`dircache`; checked again when read).
"""

from __future__ import annotations

import base64
import binascii
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.client.usercerts.dircache import DiskCache, Published
from wsemail.pki import TrustStore, read_cert
from wsemail.protocol import soap
from wsemail.protocol.errors import (
    NotFound,
    RemoteFault,
    ServerError,
    SignatureInvalid,
    TransportError,
    UntrustedSigner,
    WsemailError,
)
from wsemail.protocol.message import domain_of, normalize_address
from wsemail.protocol.soap import element, q, text_of, texts_of
from wsemail.protocol.xmlsafe import XmlLimits, parse_untrusted

LIMITS = XmlLimits(max_bytes=1 << 20, max_depth=16, max_elements=1000)


class NoCertificate(NotFound):
    """The recipient publishes no certificate: encrypted mail cannot be sent to them."""


@dataclass(frozen=True)
class Accepted:
    address: str
    cert: x509.Certificate
    issuer: x509.Certificate
    until: float


def _der(text: str | None, what: str) -> bytes:
    try:
        return base64.b64decode("".join((text or "").split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise UntrustedSigner(f"the directory's {what} is not base64") from exc


def parse_published(answer: etree._Element) -> Published:
    try:
        return Published(
            address=normalize_address(text_of(answer, "Address") or ""),
            cert=x509.load_der_x509_certificate(_der(text_of(answer, "Certificate"), "cert")),
            issuer=x509.load_der_x509_certificate(
                _der(text_of(answer, "IssuerCertificate"), "issuer")
            ),
            crls=tuple(x509.load_der_x509_crl(_der(t, "CRL")) for t in texts_of(answer, "Crl")),
        )
    except ValueError as exc:
        raise UntrustedSigner("the directory answered an unreadable certificate") from exc


def trust_with(
    roots: list[x509.Certificate],
    published: Iterable[x509.CertificateRevocationList],
    issuer: x509.Certificate,
    clock: Callable[[], datetime],
) -> TrustStore:
    """A trust store of the roots with whichever offered CRLs verify (root or issuer)."""
    trust = TrustStore(roots, clock=clock)
    for crl in published:
        for signer in (None, issuer):
            try:
                trust.add_crl(crl, signer)
                break
            except RemoteFault:
                continue  # not this signer's, or not trusted: checks then fail closed
    return trust


def accept(
    roots: list[x509.Certificate],
    address: str,
    published: Published,
    *,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> None:
    """Raise unless `published` is a trusted, unrevoked certificate for `address`."""
    if published.address != address:
        raise UntrustedSigner(f"the directory answered for {published.address}, not {address}")
    trust = trust_with(roots, published.crls, published.issuer, clock)
    trust.verify_user(published.cert, published.issuer, address)


class Directory:
    """Looks up and verifies users' certificates, with a cache.

    `locate(domain)` gives the SOAP endpoint URL of a domain's server; `tls_names` makes
    the TLS check expect the mail domain when the URL names a loopback address.
    """

    def __init__(
        self,
        roots: list[Path] | list[x509.Certificate],
        locate: Callable[[str], str] | Mapping[str, str],
        *,
        verify: ssl.SSLContext | bool | None = None,
        cache_seconds: float = 3600,
        clock: Callable[[], float] = time.time,
        transport: httpx.BaseTransport | None = None,
        tls_names: bool = True,
        cache_dir: Path | None = None,
    ) -> None:
        self.roots = [r if isinstance(r, x509.Certificate) else read_cert(r) for r in roots]
        if not self.roots:
            raise UntrustedSigner("checking certificates needs the federation roots")
        self._locate = locate if callable(locate) else (lambda d, m=dict(locate): _route(m, d))
        if verify is None:
            verify = ssl.create_default_context()
            verify.load_verify_locations(
                cadata="".join(
                    r.public_bytes(serialization.Encoding.PEM).decode("ascii") for r in self.roots
                )
            )
        self._http = httpx.Client(
            verify=verify,
            timeout=30,
            transport=transport,
            headers={"content-type": soap.CONTENT_TYPE},
        )
        self.cache_seconds = cache_seconds
        self._clock = clock
        self._tls_names = tls_names
        self._cache: dict[str, Accepted] = {}
        self._published: dict[str, Published] = {}
        self._disk = None if cache_dir is None else DiskCache(cache_dir)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Directory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self._clock(), UTC)

    def fetch(self, address: str) -> Published:
        """Ask `address`'s domain for its certificate (not yet checked)."""
        domain = domain_of(address)
        url = self._locate(domain)
        env, header, body = soap.new_envelope()
        env.remove(header)
        op = etree.SubElement(body, q("LookupCertificate"))
        element(op, "Address", address)
        extensions = {"sni_hostname": domain} if self._tls_names else {}
        try:
            response = self._http.post(url, content=soap.serialize(env), extensions=extensions)
        except httpx.HTTPError as exc:
            raise TransportError(f"cannot reach {domain}'s directory: {exc}") from exc
        try:
            answer = soap.split_envelope(parse_untrusted(response.content, LIMITS)).operation
        except RemoteFault as exc:
            raise ServerError(f"unreadable directory answer from {domain}") from exc
        try:
            soap.raise_if_fault(answer)
        except NotFound as exc:
            raise NoCertificate(f"{address} has no certificate for encrypted mail") from exc
        return parse_published(answer)

    def certificate(self, address: str) -> x509.Certificate:
        """`address`'s current certificate, trusted; from the cache while it is fresh."""
        address = normalize_address(address)
        now = self._clock()
        cached = self._cache.get(address)
        if cached is not None and now < cached.until:
            return cached.cert
        kept = self._from_disk(address, now)
        if kept is not None:
            published, until = kept
        else:
            published = self.fetch(address)
            accept(self.roots, address, published, clock=self._now)
            until = now + self.cache_seconds
            for crl in published.crls:
                if crl.next_update_utc is not None:
                    until = min(until, crl.next_update_utc.timestamp())
            until = min(until, published.cert.not_valid_after_utc.timestamp())
            if self._disk is not None:
                self._disk.store(published, until)
        self._cache[address] = Accepted(address, published.cert, published.issuer, until)
        self._published[address] = published
        return published.cert

    def _from_disk(self, address: str, now: float) -> tuple[Published, float] | None:
        """An answer kept on disk that is still in time AND passes the checks again."""
        kept = None if self._disk is None else self._disk.load(address, now)
        if kept is None or self._disk is None:
            return None
        try:
            accept(self.roots, address, kept[0], clock=self._now)
        except WsemailError:
            self._disk.drop(address)
            return None
        return kept

    def verify_signer(self, cert: x509.Certificate, issuer: x509.Certificate, address: str) -> None:
        """Accept `cert` (perhaps older than the published one) as `address`'s, with the
        CRLs its domain's directory currently publishes."""
        address = normalize_address(address)
        self.certificate(address)  # fresh CRLs for the domain, or an error
        published = self._published[address]
        if issuer != published.issuer:
            raise SignatureInvalid("the signer's issuing CA is not its domain's")
        trust = trust_with(self.roots, published.crls, published.issuer, self._now)
        trust.verify_user(cert, issuer, address)

    def forget(self, address: str | None = None) -> None:
        """Drop cached answers (one address or all), on disk as well."""
        if address is None:
            self._cache.clear()
        else:
            address = normalize_address(address)
            self._cache.pop(address, None)
        if self._disk is not None:
            self._disk.drop(address)


def _route(routes: Mapping[str, str], domain: str) -> str:
    url = routes.get(domain)
    if url is None:
        raise TransportError(f"no route to {domain}'s directory")
    return url
