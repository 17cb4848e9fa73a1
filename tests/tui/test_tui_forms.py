"""Forms in the TUI against a real TLS domain on loopback: a received form whose plug-in
is missing offers to fetch it (a dialog with the verified publisher and the hash), then
shows its text rendering, and the approver signs it with A; the signed form goes back to
the sender with a chain that verifies."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from test_federation import start_domain
from textual.widgets import Label
from tui_helpers import make_app, wait_for

from wsemail.attachments_client import Attachments
from wsemail.client import Client
from wsemail.forms import Step, approvals, wheels, workflow
from wsemail.forms.loader import load
from wsemail.pki import create_root, write_crl
from wsemail.server.accounts import set_user
from wsemail.soap import element, q
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen
from wsemail.tui.screens.prompt import PromptScreen

from conftest import PASSWORD, Running

pytestmark = pytest.mark.anyio

FORMS = Path(__file__).resolve().parent.parent.parent / "forms"
ITEMS = [{"description": "chair", "quantity": 2, "unit_price": "250"}]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@dataclass
class Domain:
    ca: Path
    running: Running
    tmp: Path

    def client(self, server: str, user: str, password: str) -> Client:
        c = Client(server, user, password, verify=self.running.verify, tls_name="a.test")
        c.trust_roots = [self.ca / "root.pem"]
        self.running.clients.append(c)
        return c

    def user(self, user: str) -> Client:
        c = self.running.client(user)
        c.trust_roots = [self.ca / "root.pem"]
        return c


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return wheels.build(FORMS / "requisition", tmp_path_factory.mktemp("wheels"))


@pytest.fixture
def dom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Domain]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    running = start_domain(tmp_path, ca, "a.test")
    set_user(running.controller.server.store, "a.test", "dave@a.test", PASSWORD)
    monkeypatch.setenv("WSEMAIL_FORMS_DIR", str(tmp_path / "bob-forms"))
    monkeypatch.setenv("WSEMAIL_FORM_PUBLISHERS", "@a.test")
    yield Domain(ca, running, tmp_path)
    running.stop()


def send_requisition(dom: Domain, wheel: Path) -> None:
    """admin publishes the signed wheel; carol fills a requisition for bob to approve."""
    admin = dom.user("admin@a.test")
    token = Attachments(admin).token()
    sig = wheels.sign(wheel, token.key, token.cert, token.issuer)
    op = etree.Element(q("Publish"))
    element(op, "File", wheel.name)
    element(op, "Wheel", base64.b64encode(wheel.read_bytes()).decode())
    element(op, "Signature", base64.b64encode(sig.read_bytes()).decode())
    admin.extension("forms", op)
    carol_dir = dom.tmp / "carol-forms"
    roots, crls = workflow.trust_material(admin)
    wheels.install(
        wheel.name,
        wheel.read_bytes(),
        sig.read_bytes(),
        roots=roots,
        crls=crls,
        publishers=["admin@a.test"],
        root=carol_dir,
    )
    carol = dom.user("carol@a.test")
    doc = workflow.compose(
        load("requisition", root=carol_dir),
        {"requester": "carol@a.test", "department": "OS", "items": ITEMS},
        "carol@a.test",
        [Step("manager", ("bob@a.test",))],
        server=carol.server,
        wheel=wheel,
    )
    workflow.send(carol, doc, ["bob@a.test"], "Chairs")


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def body_text(app: WsemailApp) -> str:
    return str(app.screen.query_one("#message-body").render())


async def test_form_plugin_fetched_after_confirm_then_shown_and_approved(
    dom: Domain, wheel: Path
) -> None:
    send_requisition(dom, wheel)
    app = make_app(dom.running, "bob@a.test", client_factory=dom.client)
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_for(
            pilot,
            lambda: isinstance(app.screen, InboxScreen) and app.screen.table.row_count == 1,
        )
        await pilot.press("enter")
        await wait_for(
            pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.form is not None
        )
        screen = app.screen
        assert isinstance(screen, MessageScreen) and screen.form is not None
        assert not screen.form.installed
        assert "plug-in not installed — press i to fetch and install" in body_text(app)
        assert "waiting for step 1 (bob@a.test)" in body_text(app)

        await pilot.press("i")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        question = str(app.screen.query_one("#confirm-question", Label).render())
        digest = wheels.sha256_hex(wheel.read_bytes())
        assert "admin@a.test" in question
        assert digest[:32] in question and digest[32:] in question
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.form is not None and screen.form.installed)
        assert "Total" in body_text(app) and "500" in body_text(app)
        assert (dom.tmp / "bob-forms" / "registry.json").exists()

        await pilot.press("A")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(
            pilot, lambda: any("Approved; sent to carol@a.test" in n for n in notes(app))
        )
        assert "approved" in body_text(app)

    carol = dom.user("carol@a.test")
    newest = carol.list_headers().headers[0].id
    final = workflow.receive(carol, newest).doc
    roots, crls = workflow.trust_material(carol)
    chain = approvals.verify(final, roots, crls)
    assert chain.complete
    assert [(e.kind, e.signer) for e in chain.entries] == [("approve", "bob@a.test")]


async def open_form(app: WsemailApp, pilot: Any) -> MessageScreen:
    await wait_for(
        pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.table.row_count == 1
    )
    await pilot.press("enter")
    await wait_for(
        pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.form is not None
    )
    screen = app.screen
    assert isinstance(screen, MessageScreen)
    return screen


async def test_untrusted_publisher_is_refused_and_nothing_installed(
    dom: Domain, wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    send_requisition(dom, wheel)
    monkeypatch.setenv("WSEMAIL_FORM_PUBLISHERS", "@elsewhere.test")
    app = make_app(dom.running, "bob@a.test", client_factory=dom.client)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_form(app, pilot)
        await pilot.press("i")
        await wait_for(pilot, lambda: any("not a trusted form publisher" in n for n in notes(app)))
        assert app.screen is screen  # no dialog offered
        assert screen.form is not None and not screen.form.installed
    assert not (dom.tmp / "bob-forms" / "registry.json").exists()


async def test_delegate_sends_the_step_on(dom: Domain, wheel: Path) -> None:
    send_requisition(dom, wheel)
    app = make_app(dom.running, "bob@a.test", client_factory=dom.client)
    async with app.run_test(size=(80, 24)) as pilot:
        await open_form(app, pilot)
        await pilot.press("D")
        await wait_for(pilot, lambda: isinstance(app.screen, PromptScreen))
        await pilot.press(*"dave@a.test", "enter")
        await wait_for(
            pilot, lambda: any("Delegated; sent to dave@a.test" in n for n in notes(app))
        )
    dave = dom.user("dave@a.test")
    received = workflow.receive(dave, dave.list_headers().headers[0].id).doc
    roots, crls = workflow.trust_material(dave)
    chain = approvals.verify(received, roots, crls)
    assert chain.may_sign("dave@a.test")
    assert [(e.kind, e.signer, e.delegate) for e in chain.entries] == [
        ("delegate", "bob@a.test", "dave@a.test")
    ]
