"""In charge of a form's approval chain (paper §4.2): signing an act (approve, reject,
delegate) with the signer's user certificate, the signer's server's countersignature (a
stamp) that fixes when the act was made, and verifying a whole chain offline.

Each act is an enveloped XMLDSIG signature (ECDSA/RSA, SHA-256, exclusive c14n) over

    <wf:Act Kind="approve">
      <wf:FormId/> <wf:Plugin/> (name version) <wf:Step/> <wf:Role/> <wf:Signer/> <wf:At/>
      <wf:Delegate/> (delegations only) <wf:Covers/> (the hash chain of the form with the
      earlier acts and stamps only, `FormDocument.digests`) <wf:IssuingCertificate/>
    </wf:Act>

followed by its stamp, an enveloped signature by the server certificate of the signer's
own domain over

    <wf:Stamp> <wf:Act/> (SHA-256 of the act's c14n, signature included) <wf:FormId/>
      <wf:Step/> <wf:Signer/> <wf:Server/> <wf:At/> (the server's clock) </wf:Stamp>

The server stamps an act only for its own authenticated user (the `StampAct` request is
signed with the same kind of identity certificate), after checking the act's signature
and certificate against its own clock and CRLs, and the act's own `At` within
`STAMP_WINDOW` of that clock; and once per (form, step, signer). So the time that counts
is one the signer cannot choose: a key whose certificate expired, or was revoked, gets no
stamp, whatever `At` it writes.

Verification, per act in order, in one pass (linear in the number of acts): the stamp's
signature and its server certificate (a federation root's, for the signer's domain) and
the act's signature and its chain user → its domain's issuing CA → a trusted root, all as
at the stamp's time with the CRLs given (a certificate those CRLs list is refused,
whenever it was revoked); stamps in time order and not in the future; the stamp names this
act, form, step and signer; the act's own time at most `STAMP_WINDOW` before its stamp;
form id, plug-in and covered digest match this form; then the workflow rules: the signer
may sign the current step (an approver or a delegate of one), steps in order, one act per
signer and step, nobody approves twice, nothing after a rejection or the last step,
delegations never loop and are at most `MAX_DELEGATION_DEPTH` deep, at most
`MAX_ACTS_PER_STEP` acts per step. Everything read comes from the verified copies.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from wsemail.core.forms import stamps
from wsemail.core.forms.contract import Step
from wsemail.core.forms.document import WF, FormDocument, FormError, w
from wsemail.pki import TrustStore
from wsemail.protocol.dsig import PrivateKey, Signer, verify_element
from wsemail.protocol.errors import RemoteFault, RequestInvalid, UntrustedSigner, WsemailError
from wsemail.protocol.message import normalize_address
from wsemail.protocol.soap import parse_int

KINDS = ("approve", "reject", "delegate")
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
FUTURE_SKEW = stamps.FUTURE_SKEW
STAMP_WINDOW = stamps.STAMP_WINDOW  # an act's own At, at most this before its stamp
MAX_DELEGATION_DEPTH = 3  # approver → delegate → delegate → delegate
MAX_ACTS_PER_STEP = 8
MAX_STEP = 999  # what an act's Step may say (the route decides which exist)


@dataclass(frozen=True)
class Entry:
    kind: str
    step: int
    role: str
    signer: str
    at: str
    delegate: str = ""
    on_behalf_of: str = ""

    def __str__(self) -> str:
        what = {"approve": "approved", "reject": "REJECTED", "delegate": "delegated"}[self.kind]
        extra = f" to {self.delegate}" if self.delegate else ""
        behalf = f" (for {self.on_behalf_of})" if self.on_behalf_of else ""
        return f"step {self.step} {self.role}: {self.signer}{behalf} {what}{extra} at {self.at}"


@dataclass
class Chain:
    """A verified chain: who did what, and where the workflow stands."""

    route: list[Step]
    entries: list[Entry] = field(default_factory=list)
    current: int = 0  # index of the step waiting for a signature
    rejected: bool = False
    delegates: dict[int, dict[str, str]] = field(default_factory=dict)  # step → delegate → by
    acted: set[tuple[int, str]] = field(default_factory=set)  # (step index, signer)
    approvers: set[str] = field(default_factory=set)  # who approved a step
    per_step: dict[int, int] = field(default_factory=dict)  # step index → acts

    @property
    def complete(self) -> bool:
        return not self.rejected and self.current >= len(self.route)

    @property
    def status(self) -> str:
        if self.rejected:
            return "rejected"
        return "approved" if self.complete else f"waiting for step {self.current + 1}"

    def may_sign(self, address: str) -> bool:
        if self.rejected or self.complete:
            return False
        step = self.route[self.current]
        return address in step.approvers or address in self.delegates.get(self.current, {})

    def next_approvers(self) -> list[str]:
        if self.rejected or self.complete:
            return []
        step = self.route[self.current]
        return [*step.approvers, *self.delegates.get(self.current, {})]

    # the workflow rules ---------------------------------------------------------------
    def depth(self, address: str) -> int:
        """How many delegations away from a route approver `address` signs this step."""
        delegates = self.delegates.get(self.current, {})
        depth, who = 0, address
        while who in delegates and depth <= MAX_DELEGATION_DEPTH:
            who, depth = delegates[who], depth + 1
        return depth

    def apply(self, kind: str, step: int, signer: str, delegate: str) -> Entry:
        if self.rejected or self.complete:
            raise FormError(f"{signer} signed after the workflow ended")
        if (self.current, signer) in self.acted:
            raise FormError(f"{signer} already acted on step {self.current + 1} of this form")
        if kind == "approve" and signer in self.approvers:
            raise FormError(f"{signer} approved this form twice")
        later = any(signer in s.approvers for s in self.route[self.current + 1 :])
        if not self.may_sign(signer):
            if later or step != self.current + 1:
                raise FormError(f"{signer} signed out of order (step {self.current + 1} is next)")
            raise FormError(f"{signer} is not on the route for step {self.current + 1}")
        if step != self.current + 1:
            raise FormError(f"{signer} signed step {step} out of order")
        if self.per_step.get(self.current, 0) >= MAX_ACTS_PER_STEP:
            raise FormError(f"more than {MAX_ACTS_PER_STEP} acts on step {step}")
        role = self.route[self.current].role
        delegates = self.delegates.setdefault(self.current, {})
        entry = Entry(kind, step, role, signer, "", delegate, delegates.get(signer, ""))
        if kind == "delegate":
            ancestors = {signer}
            who = signer
            while who in delegates:
                who = delegates[who]
                ancestors.add(who)
            if delegate in ancestors or delegate in self.route[self.current].approvers:
                raise FormError(f"delegation loop: {signer} → {delegate}")
            if delegate in delegates:
                raise FormError(f"{delegate} is already a delegate for this step")
            if self.depth(signer) + 1 > MAX_DELEGATION_DEPTH:
                raise FormError(
                    f"delegation deeper than {MAX_DELEGATION_DEPTH}: {signer} → {delegate}"
                )
        self.acted.add((self.current, signer))
        self.per_step[self.current] = self.per_step.get(self.current, 0) + 1
        if kind == "approve":
            self.approvers.add(signer)
            self.current += 1
        elif kind == "reject":
            self.rejected = True
        else:
            delegates[delegate] = signer
        return entry


def _address(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound as exc:
        raise UntrustedSigner("certificate names no address") from exc
    names = san.get_values_for_type(x509.RFC822Name)
    if len(names) != 1:
        raise UntrustedSigner("a user certificate names exactly one address")
    return normalize_address(names[0])


def _time(text: str) -> datetime:
    try:
        return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError as exc:
        raise FormError(f"bad signing time {text[:40]!r}") from exc


def _fixed(moment: datetime) -> Callable[[], datetime]:
    return lambda: moment


def _text(node: etree._Element, tag: str) -> str:
    return (node.findtext(w(tag)) or "").strip()


def sign(
    doc: FormDocument,
    kind: str,
    key: PrivateKey,
    cert: x509.Certificate,
    issuer: x509.Certificate,
    chain: Chain,
    *,
    delegate: str = "",
    now: datetime | None = None,
) -> Entry:
    """Add one signed act to `doc`; `chain` is its verified chain (updated in place)."""
    if kind not in KINDS:
        raise FormError(f"an act is one of {', '.join(KINDS)}")
    signer = _address(cert)
    delegate = normalize_address(delegate) if kind == "delegate" else ""
    if kind == "delegate" and not delegate:
        raise FormError("delegate to whom?")
    step = chain.current + 1
    entry = chain.apply(kind, step, signer, delegate)  # refuses what a verifier would
    at = (now or datetime.now(UTC)).strftime(TIME_FORMAT)
    act = etree.Element(w("Act"), nsmap={"wf": WF})
    act.set("Kind", kind)
    plugin = doc.plugin
    for tag, value in (
        ("FormId", doc.form_id),
        ("Plugin", f"{plugin.name} {plugin.version}"),
        ("Step", str(step)),
        ("Role", entry.role),
        ("Signer", signer),
        ("At", at),
        ("Delegate", delegate),
        ("Covers", doc.digests()[-1]),
        (
            "IssuingCertificate",
            base64.b64encode(issuer.public_bytes(serialization.Encoding.DER)).decode(),
        ),
    ):
        if tag != "Delegate" or value:
            etree.SubElement(act, w(tag)).text = value
    doc.append_act(Signer(key, cert).sign_element(act))
    chain.entries.append(_at(entry, at))  # the stamp's time replaces it (`stamped`)
    return chain.entries[-1]


def stamped(doc: FormDocument, chain: Chain, stamp: etree._Element) -> Entry:
    """Add the server's `stamp` of the act just signed; the entry then shows its time."""
    doc.append_stamp(stamp)
    entry = chain.entries[-1]
    chain.entries[-1] = _at(entry, (stamp.findtext(w("At")) or "").strip())
    return chain.entries[-1]


def _at(entry: Entry, at: str) -> Entry:
    return Entry(
        entry.kind, entry.step, entry.role, entry.signer, at, entry.delegate, entry.on_behalf_of
    )


def verify(
    doc: FormDocument,
    roots: list[x509.Certificate],
    crls: Iterable[x509.CertificateRevocationList] = (),
    *,
    now: datetime | None = None,
) -> Chain:
    """Verify every act of `doc` and its stamp (see the module doc), in one pass;
    FormError / SecurityFault if not."""
    chain = Chain(doc.route())
    if not chain.route:
        raise FormError("the form has no route")
    entries = doc.entries()
    if len(entries) > len(chain.route) * MAX_ACTS_PER_STEP:
        raise FormError(f"more acts than {MAX_ACTS_PER_STEP} per step of the route")
    plugin = doc.plugin
    now = now or datetime.now(UTC)
    clock = stamps.Clock(now)
    trust = TrustStore(roots, list(crls), clock=clock)
    covers = doc.digests()
    previous: datetime | None = None
    for index, (act, stamp) in enumerate(entries):
        try:
            stamped = stamps.check(stamp, act, clock, trust.verify_server, now)
        except (FormError, WsemailError) as exc:
            raise FormError(f"act {index + 1}: {exc}") from exc
        if previous is not None and stamped < previous:
            raise FormError(f"act {index + 1} was stamped before the act it follows")
        previous = stamped
        issuer = stamps.issuing_certificate(act)

        def resolve(cert: x509.Certificate, issuer: x509.Certificate = issuer) -> str:
            address = _address(cert)
            trust.verify_user(cert, issuer, address)  # as at the stamp's time
            return address

        try:
            _, signer, verified = verify_element(etree.tostring(act), resolve, at=stamped)
        except RemoteFault as exc:
            raise FormError(f"act {index + 1}: {exc}") from exc
        kind = verified.get("Kind", "")
        if kind not in KINDS:
            raise FormError(f"act {index + 1}: unknown kind")
        stamps.check_own_time(verified, stamped)
        if _text(verified, "Signer") != signer:
            raise FormError(f"act {index + 1}: signed by {signer}, claims another signer")
        if _text(verified, "FormId") != doc.form_id or _text(verified, "Plugin") != (
            f"{plugin.name} {plugin.version}"
        ):
            raise FormError(f"act {index + 1} by {signer} was made for another form or version")
        if _text(verified, "Covers") != covers[index]:
            raise FormError(
                f"act {index + 1} by {signer} does not cover this form's data and earlier acts"
            )
        try:
            step = parse_int(_text(verified, "Step"), "Step", 0, MAX_STEP)
        except RequestInvalid as exc:
            raise FormError(f"act {index + 1}: bad step ({exc.reason})") from exc
        delegate = _text(verified, "Delegate")
        entry = chain.apply(kind, step, signer, normalize_address(delegate) if delegate else "")
        if _text(verified, "Role") != entry.role:
            raise FormError(f"act {index + 1}: role differs from the route")
        chain.entries.append(_at(entry, stamped.strftime(TIME_FORMAT)))
    return chain
