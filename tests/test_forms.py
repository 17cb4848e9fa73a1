"""Form plug-ins and routed workflows against a real server on loopback: real wheels built
from forms/, real publisher and approver signatures (user certificates from IssueToken),
the server's routing rule, and every way a chain or a wheel is refused."""

from __future__ import annotations

import base64
import copy
import io
import json
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lxml import etree
from stores import on_store
from test_federation import start_domain

from wsemail.client.attachments import Attachments, Token
from wsemail.client.forms import installed_forms, workflow
from wsemail.client.forms.loader import load
from wsemail.client.mail import Client
from wsemail.core.forms import FormDocument, FormError, FormInvalid, Step, approvals, wheels
from wsemail.pki import create_root, read_cert, write_crl
from wsemail.protocol.errors import PluginError, UsageError
from wsemail.protocol.message import Draft
from wsemail.protocol.soap import element, q
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

from conftest import PASSWORD, Running

FORMS = Path(__file__).resolve().parent.parent / "forms"
RULE = {
    "form": "requisition",
    "field": "total",
    "above": "5000",
    "role": "purchasing",
    "approvers": ["pat@a.test"],
}
ITEMS_7500 = [{"description": "laptop", "quantity": 3, "unit_price": "2500"}]
ITEMS_500 = [{"description": "chair", "quantity": 2, "unit_price": "250"}]


@dataclass
class Domain:
    ca: Path
    running: Running
    tmp: Path

    def client(self, user: str) -> Client:
        c = self.running.client(user)
        c.trust_roots = [self.ca / "root.pem"]
        return c

    def token(self, user: str) -> Token:
        return Attachments(self.client(user)).token()

    def stamper(self, user: str, token: Token) -> Callable[[etree._Element], etree._Element]:
        """The countersign callable for what `user` signs with `token`."""
        return lambda signed: workflow.countersign(self.client(user), token, signed)

    @property
    def forms(self) -> Path:
        """The plug-in folder the requisition is installed in (shared by every user)."""
        return self.tmp / "carol-forms"

    @property
    def roots(self) -> list[object]:
        return [read_cert(self.ca / "root.pem")]

    def material(self) -> tuple[list, list]:  # type: ignore[type-arg]
        return workflow.trust_material(self.client("admin@a.test"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {n: wheels.build(FORMS / n, out) for n in ("timesheet", "requisition")}


@pytest.fixture
def dom(tmp_path: Path, store_url: str) -> Iterator[Domain]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    plugins = [
        *(spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"),
        PluginSpec("forms", 40, {"rules": [RULE]}),
    ]
    running = start_domain(tmp_path, ca, "a.test", **on_store(store_url, plugins))
    for name in ("pat", "dave"):
        set_user(running.controller.server.store, "a.test", f"{name}@a.test", PASSWORD)
    yield Domain(ca, running, tmp_path)
    running.stop()


def publish(dom: Domain, wheel: Path) -> Path:
    token = dom.token("admin@a.test")
    sig = wheels.sign(
        wheel,
        token.key,
        token.cert,
        token.issuer,
        countersign=dom.stamper("admin@a.test", token),
    )
    op = etree.Element(q("Publish"))
    element(op, "File", wheel.name)
    element(op, "Wheel", base64.b64encode(wheel.read_bytes()).decode())
    element(op, "Signature", base64.b64encode(sig.read_bytes()).decode())
    dom.client("admin@a.test").extension("forms", op)
    return sig


def install_local(dom: Domain, wheel: Path, root: Path) -> None:
    sig = wheel.with_name(wheel.name + ".sig")
    roots, crls = dom.material()
    wheels.install(
        wheel.name,
        wheel.read_bytes(),
        sig.read_bytes(),
        roots=roots,
        crls=crls,
        publishers=["admin@a.test"],
        root=root,
    )


def requisition(dom: Domain, built: dict[str, Path], items: list[dict[str, object]]) -> str:
    sender_dir = dom.tmp / "carol-forms"
    publish(dom, built["requisition"])
    install_local(dom, built["requisition"], sender_dir)
    plugin = load("requisition", root=sender_dir)
    carol = dom.client("carol@a.test")
    doc = workflow.compose(
        plugin,
        {"requester": "carol@a.test", "department": "OS", "items": items},
        "carol@a.test",
        [Step("manager", ("bob@a.test",))],
        server=carol.server,
        wheel=built["requisition"],
    )
    workflow.send(carol, doc, ["bob@a.test"], "")
    return newest(dom, "bob@a.test")


def newest(dom: Domain, user: str) -> str:
    return dom.client(user).list_headers().headers[0].id


def test_timesheet_computes_totals_and_round_trips_in_its_namespace(
    built: dict[str, Path], tmp_path: Path
) -> None:
    import sys

    sys.path.insert(0, str(FORMS / "timesheet"))
    try:
        from wsemail_timesheet import Timesheet
    finally:
        sys.path.remove(str(FORMS / "timesheet"))
    plugin = Timesheet()
    days = [{"day": d, "regular": "9", "overtime": "1"} for d in ("Monday", "Tuesday")]
    data = plugin.validate(
        {
            "employee": "Kevin Lux",
            "employee_id": "abc123",
            "period_ending": "2004-02-13",
            "days": days,
        }
    )
    assert str(data["total_hours"]) == "20"
    xml = plugin.to_xml(data)
    assert etree.QName(xml).namespace == "urn:wsemail:forms:timesheet:1"
    assert plugin.from_xml(xml)["total_overtime"] == data["total_overtime"]
    assert "Total hours:" in plugin.render_text(data)
    xml.find("{urn:wsemail:forms:timesheet:1}total_hours").text = "99"
    with pytest.raises(FormInvalid, match="computed"):
        plugin.from_xml(xml)
    with pytest.raises(FormInvalid, match="required"):
        plugin.validate({"days": days})


@pytest.mark.both_stores
def test_requisition_of_7500_routes_through_purchasing_with_delegation(
    dom: Domain, built: dict[str, Path]
) -> None:
    first = requisition(dom, built, ITEMS_7500)
    received = workflow.receive(dom.client("bob@a.test"), first)
    assert [s.role for s in received.doc.route()] == ["manager", "purchasing"]  # the rule
    entry, chain, to = workflow.act(dom.client("bob@a.test"), first, "approve", root=dom.forms)
    assert to == ["pat@a.test"]
    _, _, to = workflow.act(
        dom.client("pat@a.test"),
        newest(dom, "pat@a.test"),
        "delegate",
        delegate="dave@a.test",
        root=dom.forms,
    )
    assert to == ["dave@a.test"]
    _, chain, to = workflow.act(
        dom.client("dave@a.test"), newest(dom, "dave@a.test"), "approve", root=dom.forms
    )
    assert chain.complete and to == ["carol@a.test"]
    final = workflow.receive(dom.client("carol@a.test"), newest(dom, "carol@a.test")).doc
    roots, crls = dom.material()
    report = approvals.verify(final, roots, crls)
    assert [(e.kind, e.signer, e.role) for e in report.entries] == [
        ("approve", "bob@a.test", "manager"),
        ("delegate", "pat@a.test", "purchasing"),
        ("approve", "dave@a.test", "purchasing"),
    ]
    assert report.entries[2].on_behalf_of == "pat@a.test"


def test_requisition_of_500_skips_purchasing(dom: Domain, built: dict[str, Path]) -> None:
    first = requisition(dom, built, ITEMS_500)
    _, chain, to = workflow.act(dom.client("bob@a.test"), first, "approve", root=dom.forms)
    assert (
        [s.role for s in chain.route] == ["manager"] and chain.complete and to == ["carol@a.test"]
    )


def _doc(dom: Domain, built: dict[str, Path]) -> FormDocument:
    first = requisition(dom, built, ITEMS_7500)
    return workflow.receive(dom.client("bob@a.test"), first).doc


def _append_raw(
    dom: Domain,
    doc: FormDocument,
    user: str,
    kind: str,
    step: int,
    role: str,
    delegate: str = "",
) -> None:
    """An act signed correctly and stamped by its server (which checks the signer, not the
    route) but put where the rules forbid it (bypassing sign's checks)."""
    token = dom.token(user)
    chain = approvals.Chain([Step(role, (user,))] * step)
    chain.current = step - 1
    approvals.sign(doc, kind, token.key, token.cert, token.issuer, chain, delegate=delegate)
    approvals.stamped(doc, chain, dom.stamper(user, token)(doc.acts()[-1]))


def test_chain_rejections(dom: Domain, built: dict[str, Path]) -> None:
    roots, crls = dom.material()
    bob, dave = "bob@a.test", "dave@a.test"
    # someone not on the route
    doc = _doc(dom, built)
    _append_raw(dom, doc, dave, "approve", 1, "manager")
    with pytest.raises(FormError, match="not on the route"):
        approvals.verify(doc, roots, crls)
    # out of order: purchasing before the manager
    doc = _doc(dom, built)
    _append_raw(dom, doc, "pat@a.test", "approve", 2, "purchasing")
    with pytest.raises(FormError, match="out of order"):
        approvals.verify(doc, roots, crls)
    # twice
    doc = _doc(dom, built)
    _append_raw(dom, doc, bob, "approve", 1, "manager")
    _append_raw(dom, doc, bob, "approve", 2, "purchasing")
    with pytest.raises(FormError, match="twice"):
        approvals.verify(doc, roots, crls)
    # copied onto another form (and onto another version of the same form)
    doc, other = _doc(dom, built), _doc(dom, built)
    _append_raw(dom, doc, bob, "approve", 1, "manager")
    [(act, stamp)] = doc.entries()
    other.append_act(copy.deepcopy(act))
    other.append_stamp(copy.deepcopy(stamp))
    with pytest.raises(FormError, match="another form"):
        approvals.verify(other, roots, crls)
    data = doc.data.find("{urn:wsemail:forms:requisition:1}purpose")
    data.text = "changed after signing"
    with pytest.raises(FormError, match="does not cover"):
        approvals.verify(doc, roots, crls)
    # a delegation loop
    doc = _doc(dom, built)
    chain = approvals.verify(doc, roots, crls)
    token = dom.token(bob)
    approvals.sign(doc, "delegate", token.key, token.cert, token.issuer, chain, delegate=dave)
    approvals.stamped(doc, chain, dom.stamper(bob, token)(doc.acts()[-1]))
    other_token = dom.token(dave)
    with pytest.raises(FormError, match="loop"):
        approvals.sign(
            doc,
            "delegate",
            other_token.key,
            other_token.cert,
            other_token.issuer,
            chain,
            delegate=bob,
        )
    _append_raw(dom, doc, dave, "delegate", 1, "manager", delegate=bob)
    with pytest.raises(FormError, match="loop"):
        approvals.verify(doc, roots, crls)


def test_a_step_that_is_not_ascii_digits_is_a_form_error(
    dom: Domain, built: dict[str, Path]
) -> None:
    # issue 24 (fuzzing): "²" passed str.isdigit() and crashed int() in `forms verify`
    from wsemail.core.forms.document import w
    from wsemail.protocol.dsig import DS, Signer
    from wsemail.protocol.errors import RequestInvalid

    roots, crls = dom.material()
    user = "bob@a.test"
    bob = dom.token(user)
    for odd in ("²", "①", "9" * 40):
        doc = _doc(dom, built)
        chain = approvals.Chain([Step("manager", (user,))])
        approvals.sign(doc, "approve", bob.key, bob.cert, bob.issuer, chain)
        act = doc.acts()[-1]  # signed again with the odd Step, then stamped by the server
        unsigned = copy.deepcopy(act)
        unsigned.remove(unsigned.find(f"{{{DS}}}Signature"))  # type: ignore[arg-type]
        unsigned.find(w("Step")).text = odd  # type: ignore[union-attr]
        act.getparent().replace(act, Signer(bob.key, bob.cert).sign_element(unsigned))  # type: ignore[union-attr]
        # the signer's server stamps no such act (a clean fault on the wire), so an act
        # with it never carries a valid stamp; verify reads Step with parse_int as well
        with pytest.raises(RequestInvalid, match="step"):
            dom.stamper(user, bob)(doc.acts()[-1])
        with pytest.raises(FormError):
            approvals.verify(doc, roots, crls)


def test_recipient_fetches_verifies_and_installs_the_wheel(
    dom: Domain, built: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = requisition(dom, built, ITEMS_7500)
    bob = dom.client("bob@a.test")
    ref = workflow.receive(bob, first).doc.plugin
    root = dom.tmp / "bob-forms"
    with pytest.raises(PluginError, match="not installed"):
        load("requisition", "1.0.0", root)
    record = workflow.fetch_plugin(bob, ref, ["@a.test"], root=root, tls_name="a.test")
    assert (record.name, record.version, record.publisher) == (
        "requisition",
        "1.0.0",
        "admin@a.test",
    )
    assert (
        json.loads((root / "registry.json").read_text())["requisition"]["location"] == ref.location
    )
    assert load("requisition", "1.0.0", root).validate(
        {"requester": "a@a.test", "department": "x", "items": ITEMS_500}
    )["total"]
    assert [p.name for p in installed_forms(root)] == ["requisition"]
    # a form bob fills in names where he got the plug-in from (location and SHA-256)
    monkeypatch.setenv("WSEMAIL_FORMS_DIR", str(root))
    plugin = load("requisition", "1.0.0", root)
    draft = workflow.attach_form(
        Draft(to=[], subject="Lamps"),
        plugin,
        {
            "form": "requisition",
            "data": {"requester": "bob@a.test", "department": "OS", "items": ITEMS_500},
            "route": [{"role": "manager", "approvers": ["Carol@A.TEST"]}],
        },
        sender="bob@a.test",
    )
    assert (draft.to, draft.subject) == (["Carol@a.test"], "Lamps")
    assert FormDocument.parse(draft.body).plugin == ref
    with pytest.raises(FormInvalid, match="department is required"):
        workflow.attach_form(
            Draft(to=[]),
            plugin,
            {"data": {"requester": "bob@a.test", "items": ITEMS_500}, "route": []},
            sender="bob@a.test",
        )
    with pytest.raises(UsageError, match="not requisition"):
        workflow.attach_form(Draft(to=[]), plugin, {"form": "timesheet", "data": {}}, sender="b@x")
    # a plug-in whose files changed since they were verified is left out of the menu
    init = next(root.glob("wsemail_requisition-*/wsemail_requisition/__init__.py"))
    init.write_text(init.read_text() + "\n# changed\n")
    assert installed_forms(root) == []


def _rezip(data: bytes, change: dict[str, bytes | None], fix_record: bool = True) -> bytes:
    src = zipfile.ZipFile(io.BytesIO(data))
    files = {i.filename: src.read(i) for i in src.infolist()}
    for k, v in change.items():
        if v is None:
            files.pop(k, None)
        else:
            files[k] = v
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for k, v in files.items():
            z.writestr(k, v)
    return out.getvalue()


def test_wheel_rejections_install_nothing(
    dom: Domain, built: dict[str, Path], tmp_path: Path
) -> None:
    roots, crls = dom.material()
    wheel = built["timesheet"]
    admin = dom.token("admin@a.test")
    root = tmp_path / "plugins"

    def attempt(
        name: str,
        data: bytes,
        *,
        signer: Token = admin,
        publishers: tuple[str, ...] = ("admin@a.test",),
        sign_name: str | None = None,
    ) -> None:
        path = tmp_path / "sign" / (sign_name or name)
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(data)
        stamp = dom.stamper(approvals._address(signer.cert), signer)
        sig = wheels.sign(
            path, signer.key, signer.cert, signer.issuer, countersign=stamp
        ).read_bytes()
        wheels.install(
            name, data, sig, roots=roots, crls=crls, publishers=list(publishers), root=root
        )

    data = wheel.read_bytes()
    stamp = dom.stamper("admin@a.test", admin)
    sig = wheels.sign(wheel, admin.key, admin.cert, admin.issuer, countersign=stamp).read_bytes()
    tampered = data[:-30] + bytes(30)
    with pytest.raises(wheels.WheelRefused, match="SHA-256"):
        wheels.install(
            wheel.name,
            tampered,
            sig,
            roots=roots,
            crls=crls,
            publishers=["admin@a.test"],
            root=root,
        )
    with pytest.raises(wheels.WheelRefused, match="not a trusted form publisher"):
        attempt(wheel.name, data, signer=dom.token("carol@a.test"))
    other = built["requisition"]
    other_sig = wheels.sign(
        other, admin.key, admin.cert, admin.issuer, countersign=stamp
    ).read_bytes()
    with pytest.raises(wheels.WheelRefused, match="signature is for"):
        wheels.install(
            wheel.name,
            data,
            other_sig,
            roots=roots,
            crls=crls,
            publishers=["admin@a.test"],
            root=root,
        )
    with pytest.raises(wheels.WheelRefused, match="escapes"):
        attempt(wheel.name, _rezip(data, {"../evil.py": b"x"}))
    with pytest.raises(wheels.WheelRefused, match="RECORD mismatch"):
        attempt(wheel.name, _rezip(data, {"wsemail_timesheet/__init__.py": b"print('owned')"}))
    assert not root.exists() or not any(root.iterdir())
    # downgrade: 1.0.0 installed, then 0.9.0 (a validly signed, older wheel) is refused
    attempt(wheel.name, data)
    older = wheel.name.replace("1.0.0", "0.9.0")
    renamed = _rezip(data, {})  # same contents; the dist-info no longer matches the name
    with pytest.raises(wheels.WheelRefused):
        attempt(older, renamed)
    before = (root / "registry.json").read_text()
    assert json.loads(before)["timesheet"]["version"] == "1.0.0"


def test_a_wheel_published_through_one_node_is_served_by_the_other(
    tmp_path: Path, pg_url: str, built: dict[str, Path]
) -> None:
    """On a shared PostgreSQL store the published wheels are rows: node 2 serves what an
    administrator published through node 1 (files in node 1's data dir would not be)."""
    import httpx

    def get(url: str, verify: str) -> httpx.Response:
        import ssl

        context = ssl.create_default_context(cafile=verify)
        with httpx.Client(verify=context, timeout=10) as http:
            return http.get(url, extensions={"sni_hostname": "a.test"})

    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    first = start_domain(tmp_path, ca, "a.test", store_url=pg_url)
    second = start_domain(tmp_path / "second", ca, "a.test", store_url=pg_url, users=False)
    try:
        wheel = built["timesheet"]
        sig = publish(Domain(ca, first, tmp_path), wheel)
        verify = str(ca / "root.pem")
        for name, data in ((wheel.name, wheel.read_bytes()), (sig.name, sig.read_bytes())):
            got = get(workflow.wheel_location(second.url, name), verify)
            assert got.status_code == 200 and got.content == data
        assert not any(tmp_path.rglob(wheel.name + ".sig.tmp"))
        assert not any((tmp_path / "second").rglob(wheel.name))  # not a file on node 2
        missing = get(workflow.wheel_location(second.url, "none-1.0-py3-none-any.whl"), verify)
        assert missing.status_code == 404
    finally:
        for running in (first, second):
            for client in running.clients:
                client.close()
            running.stop()
