"""Issue 24: the time of an approval act (and of a wheel signature) is the one its signer's
own server stamps, never the signer's own `At`; certificates are checked as at that time.
Against a real server on loopback: the server refuses to stamp an act made with an expired
certificate or dated in the past, and a second act of the same signer on the same step;
every refusal stores nothing and the server still answers. Offline: a chain whose steps
lie days apart, each signed with a one-hour certificate, verifies; delegation depth and
acts per step are limited."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from stores import on_store
from test_federation import start_domain

from wsemail.client.attachments import Attachments, Token
from wsemail.client.forms import workflow
from wsemail.core.forms import FormDocument, FormError, PluginRef, Step, approvals, stamps
from wsemail.pki import ServerIdentity, create_root, issue_server, read_cert, read_crl, write_crl
from wsemail.protocol.errors import Forbidden, RequestInvalid, UntrustedSigner
from wsemail.server.accounts import set_user

from conftest import PASSWORD, Running

NOW = datetime.now(UTC).replace(microsecond=0)
PAST = NOW - timedelta(days=10)  # when the federation and a.test's server were set up
USERS = ["pat", "dave", *(f"d{n}" for n in range(1, 10))]


@dataclass
class Dom:
    ca: Path
    running: Running

    @property
    def identity(self) -> ServerIdentity:
        federation = self.running.controller.server.federation
        assert federation is not None
        return federation.identity

    def token(self, user: str) -> Token:
        return Attachments(self.running.client(user)).token()

    def material(self) -> tuple[list, list]:  # type: ignore[type-arg]
        return [read_cert(self.ca / "root.pem")], [read_crl(self.ca / "crl.pem")]

    def acts(self) -> int:
        return self.running.count("SELECT count(*) FROM forms_acts")

    def countersign(self, user: str, signed: etree._Element) -> etree._Element:
        return workflow.countersign(self.running.client(user), self.token(user), signed)


@contextmanager
def a_domain(tmp: Path, store_url: str = "") -> Iterator[Dom]:
    ca = tmp / "ca"
    create_root(ca, now=PAST)
    issue_server(ca, "a.test", tmp / "a.test-identity", now=PAST)
    write_crl(ca, days=30, now=PAST)
    running = start_domain(tmp, ca, "a.test", **on_store(store_url))
    for name in USERS:
        set_user(running.controller.server.store, "a.test", f"{name}@a.test", PASSWORD)
    try:
        yield Dom(ca, running)
    finally:
        running.stop()


@pytest.fixture(scope="module")
def dom(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dom]:
    with a_domain(tmp_path_factory.mktemp("acts")) as made:
        yield made


@pytest.fixture
def dom_on_store(tmp_path: Path, store_url: str) -> Iterator[Dom]:
    """a.test on the store of the test (both stores: see the both_stores mark)."""
    with a_domain(tmp_path, store_url) as made:
        yield made


def form(route: list[Step]) -> FormDocument:
    data = etree.Element("{urn:example:form}purchase")
    data.text = "lamps"
    return FormDocument.new(PluginRef("requisition", "1.0.0"), data, "carol@a.test", route)


def user_token(dom: Dom, address: str, at: datetime, hours: float = 1) -> Token:
    """A certificate from a.test's issuing CA valid from `at` for `hours`."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = dom.identity.issue_user_cert(
        address, key.public_key(), lifetime=timedelta(hours=hours), now=at
    )
    return Token(key, cert, dom.identity.issuing_cert)


def act_at(
    dom: Dom,
    doc: FormDocument,
    chain: approvals.Chain,
    address: str,
    at: datetime,
    kind: str = "approve",
    delegate: str = "",
    *,
    stamped_at: datetime | None = None,
    hours: float = 1,
) -> None:
    """`address` acts at `at` with a one-hour certificate; a.test's server key stamps it at
    `stamped_at` (as its clock would have said then)."""
    token = user_token(dom, address, at, hours)
    approvals.sign(doc, kind, token.key, token.cert, token.issuer, chain, delegate=delegate, now=at)
    federation = dom.running.controller.server.federation
    assert federation is not None
    claim = stamps.claim_of(doc.acts()[-1])
    stamp = stamps.make(claim, "a.test", federation.signer, stamped_at or at + timedelta(minutes=1))
    approvals.stamped(doc, chain, stamp)


# the server's stamp ----------------------------------------------------------------------
def refused_stamp(dom: Dom, user: str, signed: etree._Element, fault: type, says: str) -> None:
    before = dom.acts()
    with pytest.raises(fault, match=says):
        dom.countersign(user, signed)
    assert dom.acts() == before  # nothing stored
    dom.running.client(user).list_headers()  # still serving


def signed_act(dom: Dom, address: str, token: Token, at: datetime) -> etree._Element:
    doc = form([Step("manager", (address,))])
    chain = approvals.Chain(doc.route())
    approvals.sign(doc, "approve", token.key, token.cert, token.issuer, chain, now=at)
    return doc.acts()[-1]


def test_an_act_made_with_an_expired_certificate_is_not_stamped(dom: Dom) -> None:
    then = NOW - timedelta(hours=3)
    leaked = user_token(dom, "pat@a.test", then)  # expired two hours ago
    act = signed_act(dom, "pat@a.test", leaked, then + timedelta(minutes=30))
    refused_stamp(dom, "pat@a.test", act, UntrustedSigner, "not trusted")


def test_an_act_dated_in_the_past_is_not_stamped(dom: Dom) -> None:
    token = dom.token("pat@a.test")
    act = signed_act(dom, "pat@a.test", token, NOW - timedelta(hours=1))
    refused_stamp(dom, "pat@a.test", act, RequestInvalid, "not now")


def test_an_act_of_another_user_is_not_stamped(dom: Dom) -> None:
    act = signed_act(dom, "dave@a.test", dom.token("dave@a.test"), datetime.now(UTC))
    refused_stamp(dom, "pat@a.test", act, UntrustedSigner, "not by pat@a.test")


@pytest.mark.both_stores
def test_one_decision_per_signer_and_step(dom_on_store: Dom) -> None:
    """pat approves; her client, retrying after a lost Send, signs the same approval again:
    stamped again. Rejecting the same step of the same form, or delegating it: refused by
    her server, nothing stored."""
    dom = dom_on_store
    doc = form([Step("manager", ("pat@a.test",))])
    token = dom.token("pat@a.test")
    chain = approvals.Chain(doc.route())
    approvals.sign(doc, "approve", token.key, token.cert, token.issuer, chain)
    approvals.stamped(doc, chain, dom.countersign("pat@a.test", doc.acts()[-1]))

    def fork(kind: str, delegate: str = "") -> etree._Element:
        other = FormDocument.parse(doc.to_bytes())
        holder = other.root.find("{urn:wsemail:forms}Acts")
        for child in list(holder):
            holder.remove(child)
        fresh = approvals.Chain(other.route())
        approvals.sign(other, kind, token.key, token.cert, token.issuer, fresh, delegate=delegate)
        return other.acts()[-1]

    dom.countersign("pat@a.test", fork("approve"))  # the same decision: a retry
    before = dom.acts()
    refused_stamp(dom, "pat@a.test", fork("reject"), Forbidden, "already acted on step 1")
    refused_stamp(
        dom, "pat@a.test", fork("delegate", "dave@a.test"), Forbidden, "already acted on step 1"
    )
    assert dom.acts() == before
    roots, crls = dom.material()
    assert approvals.verify(doc, roots, crls).complete


# the chain ------------------------------------------------------------------------------
def test_a_chain_with_steps_days_apart_and_one_hour_certificates_verifies(dom: Dom) -> None:
    roots, crls = dom.material()
    doc = form([Step("manager", ("pat@a.test",)), Step("director", ("dave@a.test",))])
    chain = approvals.Chain(doc.route())
    act_at(dom, doc, chain, "pat@a.test", NOW - timedelta(days=3))
    act_at(dom, doc, chain, "dave@a.test", NOW - timedelta(days=1))
    report = approvals.verify(doc, roots, crls)
    assert report.complete
    assert [e.at for e in report.entries] == [
        (NOW - timedelta(days=d) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for d in (3, 1)
    ]


def test_an_old_at_does_not_make_an_expired_certificate_valid(dom: Dom) -> None:
    """The backdating attack: a leaked key of a certificate that expired days ago signs
    with an `At` inside its lifetime; the stamp's time is what counts."""
    roots, crls = dom.material()
    for stamped_at, hours, says in (
        (NOW, 1, "not trusted"),  # stamped now: the certificate had long expired
        (NOW - timedelta(days=3, hours=-2), 3, "another time"),  # At two hours older
    ):
        doc = form([Step("manager", ("pat@a.test",))])
        chain = approvals.Chain(doc.route())
        then = NOW - timedelta(days=3)
        act_at(dom, doc, chain, "pat@a.test", then, stamped_at=stamped_at, hours=hours)
        with pytest.raises((FormError, UntrustedSigner), match=says):
            approvals.verify(doc, roots, crls)


def test_an_act_without_its_stamp_or_with_another_acts_stamp_is_refused(dom: Dom) -> None:
    roots, crls = dom.material()
    doc = form([Step("manager", ("pat@a.test",)), Step("director", ("dave@a.test",))])
    chain = approvals.Chain(doc.route())
    act_at(dom, doc, chain, "pat@a.test", NOW - timedelta(hours=2))
    act_at(dom, doc, chain, "dave@a.test", NOW - timedelta(hours=1))
    bare = FormDocument.parse(doc.to_bytes())
    holder = bare.root.find("{urn:wsemail:forms}Acts")
    holder.remove(bare.entries()[1][1])
    with pytest.raises(FormError, match="act 2: not countersigned"):
        approvals.verify(bare, roots, crls)
    swapped = FormDocument.parse(doc.to_bytes())
    (_, first), (_, second) = swapped.entries()
    first.addnext(copy.deepcopy(second))
    holder = swapped.root.find("{urn:wsemail:forms}Acts")
    holder.remove(first)
    with pytest.raises(FormError, match="act 1: its stamp countersigns something else"):
        approvals.verify(swapped, roots, crls)


def test_delegation_depth_and_acts_per_step_are_limited(dom: Dom) -> None:
    roots, crls = dom.material()
    at = NOW - timedelta(hours=1)
    doc = form([Step("manager", ("pat@a.test",))])
    chain = approvals.Chain(doc.route())
    chain_of = ["pat@a.test", "d1@a.test", "d2@a.test", "d3@a.test", "d4@a.test"]
    for who, to in zip(chain_of[:3], chain_of[1:4], strict=True):
        act_at(dom, doc, chain, who, at, "delegate", to)
    assert approvals.verify(doc, roots, crls).next_approvers()[-1] == "d3@a.test"  # depth 3
    with pytest.raises(FormError, match="deeper than 3"):
        act_at(dom, doc, copy.deepcopy(chain), "d3@a.test", at, "delegate", "d4@a.test")
    forced = approvals.Chain([Step("manager", ("d3@a.test",))])  # bypassing sign's checks
    act_at(dom, doc, forced, "d3@a.test", at, "delegate", "d4@a.test")
    with pytest.raises(FormError, match="deeper than 3"):
        approvals.verify(doc, roots, crls)
    # nine approvers of one step, each delegating once: the ninth act is one too many
    approvers = tuple(f"d{n}@a.test" for n in range(1, 10))
    doc = form([Step("manager", approvers)])
    chain = approvals.Chain(doc.route())
    for n, who in enumerate(approvers[:8]):
        act_at(dom, doc, chain, who, at, "delegate", f"x{n}@a.test")
    with pytest.raises(FormError, match="more than 8 acts on step 1"):
        act_at(dom, doc, copy.deepcopy(chain), approvers[8], at, "delegate", "x8@a.test")
    assert approvals.verify(doc, roots, crls).current == 0


def test_a_wheel_file_name_too_long_for_a_file_system_is_refused_at_publish(dom: Dom) -> None:
    """Published wheels become files (NAME, NAME.sig, NAME.tmp): names past 200 bytes are
    refused with a fault, nothing written, the server still answers."""
    import base64

    from wsemail.protocol.soap import element, q

    op = etree.Element(q("Publish"))
    element(op, "File", "a" * 240 + "-1.0.0-py3-none-any.whl")
    element(op, "Wheel", base64.b64encode(b"PK").decode())
    element(op, "Signature", base64.b64encode(b"<x/>").decode())
    admin = dom.running.client("admin@a.test")
    with pytest.raises(RequestInvalid, match="wheel's file name"):
        admin.extension("forms", op)
    assert not list((dom.running.config.data_dir / "forms").glob("a*"))
    admin.list_headers()
