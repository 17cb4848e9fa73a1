"""In charge of deciding whether a peer's certificate is trusted: chains to the federation
roots only (never the system or web PKI), the wsemail role, the name it vouches for, and
revocation against current CRLs, failing closed when a CRL is missing or stale.

Chains are built and checked by cryptography's `x509.verification` (WebPKI profile): it
refuses a cA=TRUE leaf, wants SKI/AKI on non-root certificates, checks validity periods,
keyCertSign on CAs and the issuing CA's name constraints (rfc822Name and dNSName). This
module adds what that verifier does not know: roles, exact names, CRLs, and the key usage
of what signs. Every leaf accepted here signs something (a Deliver or answer, a relayed
message, a request, a login, an approval, a wheel, a TLS handshake), so `verify_server` and
`verify_user` want a KeyUsage extension with digitalSignature; a CRL's issuer wants
cRLSign. (signxml is given the certificate with `x509_cert=`, which skips its own checks:
this module is the one place they are made.)

Revocation, per chain element below the root:
- server certificates and issuing CAs: the root's CRL must be known and current
  (``now <= next_update``), else `RevocationUnavailable` (retry after a refresh);
- user certificates valid for more than `SHORT_LIVED`: the issuing CA's CRL, same rule;
- user certificates valid for at most `SHORT_LIVED` (federated identity certificates):
  their short life stands in for revocation; a known CRL of their issuing CA is still
  consulted, and a listed serial is refused even if that CRL is stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from wsemail.pki._common import (
    CLOCK_SKEW,
    WSEMAIL_SERVER_ROLE,
    WSEMAIL_USER_ROLE,
    now_utc,
    public_key_of,
    read_cert,
    read_crl,
    spki_digest,
)
from wsemail.protocol.errors import (
    RemoteFault,
    RequestInvalid,
    RevocationUnavailable,
    SignatureInvalid,
    UntrustedSigner,
    UsageError,
)
from wsemail.protocol.message import domain_of, normalize_address

SHORT_LIVED = timedelta(hours=24)
"""User certificates living at most this long (plus the back-dating) need no CRL."""


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _has_role(cert: x509.Certificate, role: x509.ObjectIdentifier) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return role in eku


def has_key_usage(cert: x509.Certificate, usage: str) -> bool:
    """Whether `cert` has a KeyUsage extension with `usage` (an attribute of
    `x509.KeyUsage`: "digital_signature", "key_agreement", ...) set."""
    try:
        value = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return False
    return bool(getattr(value, usage))


def _require_signing(cert: x509.Certificate) -> None:
    if not has_key_usage(cert, "digital_signature"):
        raise UntrustedSigner(
            "certificate may not sign: no digitalSignature key usage", detail=_name(cert)
        )


def _san(cert: x509.Certificate) -> x509.SubjectAlternativeName:
    try:
        return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise UntrustedSigner("certificate names no subject", detail=_name(cert)) from exc


def _crl_order(crl: x509.CertificateRevocationList) -> tuple[int, datetime]:
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except x509.ExtensionNotFound:
        number = -1
    return number, crl.last_update_utc


class TrustStore:
    """Federation roots plus the newest verified CRL of each known issuer."""

    def __init__(
        self,
        roots: list[x509.Certificate],
        crls: Iterable[x509.CertificateRevocationList] = (),
        *,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        if not roots:
            raise UsageError("a trust store needs at least one federation root")
        self.roots = list(roots)
        self._store = Store(self.roots)
        self._clock = clock
        self._crls: dict[bytes, x509.CertificateRevocationList] = {}
        for crl in crls:
            self.add_crl(crl)

    @classmethod
    def load(
        cls,
        root_files: Iterable[Path],
        crl_files: Iterable[Path] = (),
        *,
        clock: Callable[[], datetime] = now_utc,
    ) -> TrustStore:
        """Roots and root-signed CRLs from PEM files (UsageError if unreadable)."""
        return cls(
            [read_cert(p) for p in root_files], [read_crl(p) for p in crl_files], clock=clock
        )

    # --- CRLs ----------------------------------------------------------------------------

    def add_crl(
        self, crl: x509.CertificateRevocationList, issuer: x509.Certificate | None = None
    ) -> None:
        """Keep `crl` if its signature verifies, replacing an older one from the same issuer.

        Without `issuer` the CRL must be signed by a trusted root; an issuing CA's CRL comes
        with that CA's certificate, which must be issued directly by a trusted root.
        Raises SignatureInvalid for a CRL that does not verify or has no next update, and
        UntrustedSigner for an issuer that is not trusted. An older CRL (lower CRL number,
        or earlier last update) than the one kept is ignored, so a refresh never rolls back.
        """
        if crl.next_update_utc is None:
            raise SignatureInvalid("CRL without a next update", detail=crl.issuer.rfc4514_string())
        if issuer is None:
            candidates = [r for r in self.roots if r.subject == crl.issuer]
        else:
            self._check_issuing_ca(issuer)
            candidates = [issuer] if issuer.subject == crl.issuer else []
        if not candidates:
            raise UntrustedSigner("CRL from an unknown issuer", detail=crl.issuer.rfc4514_string())
        for candidate in candidates:
            if not has_key_usage(candidate, "crl_sign"):
                raise UntrustedSigner(
                    "CRL issuer lacks the cRLSign key usage", detail=_name(candidate)
                )
            if crl.is_signature_valid(public_key_of(candidate)):
                key = spki_digest(candidate)
                old = self._crls.get(key)
                if old is None or _crl_order(old) <= _crl_order(crl):
                    self._crls[key] = crl
                return
        raise SignatureInvalid("CRL signature does not verify", detail=crl.issuer.rfc4514_string())

    def _check_issuing_ca(self, issuer: x509.Certificate) -> None:
        try:
            ca = issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            ca = False
        if ca:
            for root in self.roots:
                try:
                    issuer.verify_directly_issued_by(root)
                except (ValueError, TypeError, InvalidSignature):
                    continue
                return
        raise UntrustedSigner("CRL issuer is not a CA of a trusted root", detail=_name(issuer))

    def _check_revocation(
        self,
        cert: x509.Certificate,
        issuer: x509.Certificate,
        now: datetime,
        *,
        required: bool = True,
    ) -> None:
        crl = self._crls.get(spki_digest(issuer))
        if crl is not None and crl.get_revoked_certificate_by_serial_number(cert.serial_number):
            raise UntrustedSigner("certificate revoked", detail=_name(cert))
        if not required:
            return
        if crl is None:
            raise RevocationUnavailable("no CRL from the issuer", detail=_name(issuer))
        next_update = crl.next_update_utc
        if next_update is None or now > next_update:
            raise RevocationUnavailable(
                "the issuer's CRL is out of date", detail=f"{_name(issuer)}: {next_update}"
            )

    # --- verification --------------------------------------------------------------------

    def _builder(self, now: datetime) -> PolicyBuilder:
        return PolicyBuilder().store(self._store).time(now)

    def verify_server(self, cert: x509.Certificate, domain: str) -> None:
        """Accept `cert` as the server certificate of `domain`, or raise.

        UntrustedSigner: not issued directly by a trusted root, expired, a CA, not a wsemail
        server, not for `domain`, or revoked. RevocationUnavailable: no current root CRL.
        """
        domain = domain.strip().lower().removesuffix(".")
        now = self._clock()
        try:
            verifier = self._builder(now).build_server_verifier(x509.DNSName(domain))
            chain = verifier.verify(cert, [])
        except (VerificationError, ValueError) as exc:
            raise UntrustedSigner(
                f"server certificate not trusted for {domain}", detail=str(exc)
            ) from exc
        if len(chain) != 2:
            raise UntrustedSigner("server certificate not issued by a federation root")
        if not _has_role(cert, WSEMAIL_SERVER_ROLE):
            raise UntrustedSigner("not a wsemail server certificate", detail=_name(cert))
        _require_signing(cert)
        names = [n.lower() for n in _san(cert).get_values_for_type(x509.DNSName)]
        if names != [domain]:
            raise UntrustedSigner(f"server certificate not for {domain}", detail=str(names))
        self._check_revocation(chain[0], chain[1], now)

    def verify_user(self, cert: x509.Certificate, issuing: x509.Certificate, address: str) -> None:
        """Accept `cert` as `address`'s certificate issued by its domain's `issuing` CA.

        UntrustedSigner: the chain user → issuing CA → trusted root fails (expiry, name
        constraints, a CA leaf), the issuing CA is not constrained to the address's domain,
        not a wsemail user certificate, not for `address`, or revoked.
        RevocationUnavailable: no current CRL where one is required (see the module doc).
        """
        try:
            address = normalize_address(address)
        except RequestInvalid as exc:
            raise UntrustedSigner("not a valid address", detail=exc.reason) from exc
        now = self._clock()
        try:
            verified = self._builder(now).build_client_verifier().verify(cert, [issuing])
        except VerificationError as exc:
            raise UntrustedSigner(
                f"user certificate not trusted for {address}", detail=str(exc)
            ) from exc
        chain = verified.chain
        if len(chain) != 3 or chain[1] != issuing:
            raise UntrustedSigner("user certificate not issued by its domain's issuing CA")
        if not _has_role(cert, WSEMAIL_USER_ROLE):
            raise UntrustedSigner("not a wsemail user certificate", detail=_name(cert))
        _require_signing(cert)
        names = [_mailbox(n) for n in _san(cert).get_values_for_type(x509.RFC822Name)]
        if names != [address]:
            raise UntrustedSigner(f"user certificate not for {address}", detail=str(names))
        if domain_of(address) not in _permitted_mail_domains(issuing):
            raise UntrustedSigner(
                f"issuing CA not constrained to {domain_of(address)}", detail=_name(issuing)
            )
        self._check_revocation(issuing, chain[2], now)
        validity = cert.not_valid_after_utc - cert.not_valid_before_utc
        self._check_revocation(cert, issuing, now, required=validity > SHORT_LIVED + CLOCK_SKEW)


def certificate_address(cert: x509.Certificate) -> str:
    """The one rfc822Name a user certificate names (read, not yet trusted)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise UntrustedSigner("the certificate names no address") from exc
    names = san.get_values_for_type(x509.RFC822Name)
    if len(names) != 1:
        raise UntrustedSigner("a user certificate names exactly one address")
    try:
        return normalize_address(names[0])
    except RemoteFault as exc:
        raise UntrustedSigner("the certificate's address is not valid") from exc


def _mailbox(value: str) -> str:
    local, _, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}"


def _permitted_mail_domains(issuing: x509.Certificate) -> set[str]:
    try:
        constraints = issuing.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return set()
    permitted = constraints.permitted_subtrees or []
    return {n.value.lower() for n in permitted if isinstance(n, x509.RFC822Name)}
