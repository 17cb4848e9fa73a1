"""In charge of stamps: a server's countersignature of something one of its own users signed
(a form's approval act, a form plug-in's wheel signature), which fixes the time that
counts for it. The signer's own `At` is only a claim; the stamp's `At` is the server's
clock, and certificates are checked as at that time.

    <wf:Stamp> <wf:Kind>act|wheel</wf:Kind> <wf:Signed/> (SHA-256 of the signed element's
      exclusive c14n, its signature included) <wf:Signer/> <wf:FormId/> <wf:Step/> (acts)
      <wf:Server/> <wf:At/> <ds:Signature/> (enveloped, by the server certificate) </wf:Stamp>

A server stamps (`claim_for`, then `make`) only what its authenticated user signed with a
certificate valid and unrevoked NOW (the server's clock and CRLs), naming that user as
signer, with an `At` at most `STAMP_WINDOW` old and `FUTURE_SKEW` ahead. A verifier
(`check`) accepts a stamp signed by a federation root's server certificate for the
signer's own domain, valid as at the stamp's time, naming exactly this element; the
element's own `At` must lie within `STAMP_WINDOW` before the stamp's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta

from cryptography import x509
from lxml import etree

from wsemail.core.forms.document import WF, FormError, w
from wsemail.core.provenance import certificate_domain
from wsemail.pki import certificate_address
from wsemail.protocol.dsig import Signer, verify_element
from wsemail.protocol.errors import RemoteFault, UntrustedSigner
from wsemail.protocol.message import domain_of
from wsemail.protocol.xmlsafe import XmlLimits, c14n, parse_untrusted

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
STAMP_WINDOW = timedelta(minutes=10)
FUTURE_SKEW = timedelta(minutes=5)
MAX_SIGNED = 64 << 10  # bytes of one element sent to be stamped
_FORM_ID = re.compile(r"^form-[0-9a-f]{24}$")
# what each kind of signed element names its signer with
_SIGNER_FIELD = {w("Act"): ("act", "Signer"), w("WheelSignature"): ("wheel", "Publisher")}


class Clock:
    """A clock a `TrustStore` reads, set to each stamp's time in turn."""

    def __init__(self, moment: datetime) -> None:
        self.moment = moment

    def __call__(self) -> datetime:
        return self.moment


@dataclass(frozen=True)
class Claim:
    """What a stamp says about the element it countersigns."""

    kind: str  # act | wheel
    signed: str  # SHA-256 hex of the element's c14n
    signer: str
    form_id: str = ""
    step: int = 0
    # an act's decision (Kind and Delegate): not in the stamp, for the server's once-per-step
    decision: str = field(default="", compare=False)


def parse_time(text: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise FormError(f"bad time {text[:40]!r}") from exc


def _text(node: etree._Element, tag: str) -> str:
    return (node.findtext(w(tag)) or "").strip()


def digest(element: etree._Element) -> str:
    return hashlib.sha256(c14n(element)).hexdigest()


def issuing_certificate(element: etree._Element) -> x509.Certificate:
    try:
        raw = base64.b64decode(_text(element, "IssuingCertificate"), validate=True)
        return x509.load_der_x509_certificate(raw)
    except (binascii.Error, ValueError) as exc:
        raise FormError("unreadable issuing certificate") from exc


def claim_of(element: etree._Element) -> Claim:
    """The claim a stamp of this (verified) element makes."""
    kind, field = _SIGNER_FIELD.get(element.tag, ("", ""))
    if not kind:
        raise FormError("only a form act or a wheel signature is stamped")
    signer = _text(element, field)
    if kind == "wheel":
        return Claim(kind, digest(element), signer)
    form_id, step = _text(element, "FormId"), _text(element, "Step")
    if not _FORM_ID.match(form_id) or not re.fullmatch(r"[1-9][0-9]?", step):
        raise FormError("an act names a form id and a step from 1 to 99")
    decision = f"{element.get('Kind', '')} {_text(element, 'Delegate')}".strip()
    return Claim(kind, digest(element), signer, form_id, int(step), decision)


# the server's side ------------------------------------------------------------------------
UserCheck = Callable[[x509.Certificate, x509.Certificate, str], None]


def claim_for(data: bytes, address: str, verify_user: UserCheck, now: datetime) -> Claim:
    """Check an element `address` sent to be stamped (see the module doc); FormError or a
    SecurityFault if it must not be."""
    if len(data) > MAX_SIGNED:
        raise FormError(f"a signed element to stamp is at most {MAX_SIGNED} bytes")
    try:
        root = parse_untrusted(data, XmlLimits(max_bytes=MAX_SIGNED))
    except RemoteFault as exc:
        raise FormError(f"unreadable signed element: {exc}") from exc
    issuer = issuing_certificate(root)

    def resolve(cert: x509.Certificate) -> str:
        signer = certificate_address(cert)
        if signer != address:
            raise UntrustedSigner(f"signed by {signer}, not by {address}")
        verify_user(cert, issuer, signer)
        return signer

    _, _, verified = verify_element(etree.tostring(root), resolve)
    claim = claim_of(root)  # the digest covers the signature too; the rest is read verified
    if replace(claim_of(verified), signed=claim.signed) != claim or claim.signer != address:
        raise FormError(f"the element names another signer than {address}")
    at = parse_time(_text(verified, "At"))
    if not now - STAMP_WINDOW <= at <= now + FUTURE_SKEW:
        raise FormError(f"signed at {at:%Y-%m-%dT%H:%M:%SZ}, not now: sign it again")
    return claim


def make(claim: Claim, server: str, signer: Signer, now: datetime) -> etree._Element:
    node = etree.Element(w("Stamp"), nsmap={"wf": WF})
    fields = [("Kind", claim.kind), ("Signed", claim.signed), ("Signer", claim.signer)]
    if claim.kind == "act":
        fields += [("FormId", claim.form_id), ("Step", str(claim.step))]
    fields += [("Server", server), ("At", now.strftime(TIME_FORMAT))]
    for tag, value in fields:
        etree.SubElement(node, w(tag)).text = value
    return signer.sign_element(node)


def _step(text: str) -> int:
    if not text:
        return 0
    return int(text) if text.isascii() and text.isdecimal() and len(text) <= 3 else -1


# the verifier's side ----------------------------------------------------------------------
def check(
    stamp: etree._Element | None,
    element: etree._Element,
    trust_clock: Clock,
    verify_server: Callable[[x509.Certificate, str], None],
    now: datetime,
) -> datetime:
    """Verify `stamp` as the countersignature of `element` by its signer's own server;
    returns the stamp's time, and leaves `trust_clock` set to it (so the element's own
    certificate is checked as at that time next)."""
    if stamp is None:
        raise FormError("not countersigned by the signer's server")
    claimed = parse_time(_text(stamp, "At"))
    if claimed > now + FUTURE_SKEW:
        raise FormError("countersigned in the future")
    trust_clock.moment = claimed

    def resolve(cert: x509.Certificate) -> str:
        names = certificate_domain(cert)
        if len(names) != 1:
            raise UntrustedSigner("a server certificate names exactly one domain")
        verify_server(cert, names[0])
        return names[0]

    try:
        _, server, verified = verify_element(etree.tostring(stamp), resolve, at=claimed)
    except RemoteFault as exc:
        raise FormError(f"its stamp does not verify: {exc}") from exc
    if parse_time(_text(verified, "At")) != claimed:
        raise FormError("the stamp's time read is not the one signed")
    claim = claim_of(element)
    said = Claim(
        _text(verified, "Kind"),
        _text(verified, "Signed"),
        _text(verified, "Signer"),
        _text(verified, "FormId"),
        _step(_text(verified, "Step")),
    )
    if said != claim:
        raise FormError("its stamp countersigns something else")
    if _text(verified, "Server") != server or domain_of(claim.signer) != server:
        raise FormError(f"stamped by {server}, not by the signer's own server")
    return claimed


def check_own_time(element: etree._Element, stamped: datetime) -> None:
    """The element's own `At` lies within `STAMP_WINDOW` before its stamp's time."""
    own = parse_time(_text(element, "At"))
    if not stamped - STAMP_WINDOW <= own <= stamped + FUTURE_SKEW:
        raise FormError("signed at another time than its server stamped it")
