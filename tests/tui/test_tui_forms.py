"""Forms in the TUI against a real TLS domain on loopback: a received form whose plug-in
is missing offers to fetch it (a dialog with the verified publisher and the hash), then
shows its text rendering, and the approver signs it with A; the signed form goes back to
the sender with a chain that verifies. The shared fill/view screen (`FormFillScreen`):
a requisition typed in with its total computed live, a timesheet with Autofill from the
server, invalid input shown inline without dismissing, a received form viewed with its
approval chain, and a snapshot at 80×24."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree
from test_federation import start_domain
from textual.app import App
from textual.widgets import Input, Label, Static
from tui_helpers import make_app, wait_for

from wsemail.client.attachments import Attachments
from wsemail.client.forms import workflow
from wsemail.client.forms.loader import load
from wsemail.client.mail import Client
from wsemail.core.forms import Field, FormPlugin, Step, approvals, wheels
from wsemail.pki import create_root, write_crl
from wsemail.protocol.message import Draft
from wsemail.protocol.soap import element, q
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec
from wsemail.tui.app import WsemailApp
from wsemail.tui.formscreen import FormFillScreen, shown_screen
from wsemail.tui.formview import show_form
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
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("wheels")
    return {n: wheels.build(FORMS / n, out) for n in ("requisition", "timesheet")}


@pytest.fixture
def wheel(built: dict[str, Path]) -> Path:
    return built["requisition"]


@pytest.fixture
def dom(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Domain]:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    employees = {"carol@a.test": {"employee": "Carol Jones", "employee_id": "c-17"}}
    plugins = [
        *(spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"),
        PluginSpec("forms", 40, {"employees": employees}),
    ]
    running = start_domain(tmp_path, ca, "a.test", plugins=plugins)
    set_user(running.controller.server.store, "a.test", "dave@a.test", PASSWORD)
    monkeypatch.setenv("WSEMAIL_FORMS_DIR", str(tmp_path / "bob-forms"))
    monkeypatch.setenv("WSEMAIL_FORM_PUBLISHERS", "@a.test")
    yield Domain(ca, running, tmp_path)
    running.stop()


def send_requisition(dom: Domain, wheel: Path) -> None:
    """admin publishes the signed wheel; carol fills a requisition for bob to approve."""
    admin = dom.user("admin@a.test")
    token = Attachments(admin).token()
    sig = wheels.sign(
        wheel,
        token.key,
        token.cert,
        token.issuer,
        countersign=lambda signed: workflow.countersign(admin, token, signed),
    )
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
            lambda: (
                isinstance(app.screen, InboxScreen)
                and app.screen.mailbox.loaded  # (shown: its table is composed)
                and app.screen.table.row_count == 1
            ),
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
        assert "v view in its form screen" in body_text(app)

        await pilot.press("v")  # the installed plug-in's screen, read-only
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        assert app.screen.readonly
        assert app.screen.query_one("#cell-items-0-description", Input).value == "chair"
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is screen)

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
        pilot,
        lambda: (
            isinstance(app.screen, InboxScreen)
            and app.screen.mailbox.loaded  # (shown: its table is composed)
            and app.screen.table.row_count == 1
        ),
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
    install_for(dom, wheel, dom.tmp / "bob-forms")  # bob has the plug-in: he sees the form
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


# the shared fill / view screen ---------------------------------------------------------
class Host(App[None]):
    """A bare app hosting one form screen; what it dismissed with lands in `results`."""

    def __init__(self, make: Callable[[], FormFillScreen]) -> None:
        super().__init__()
        self.make = make
        self.results: list[dict[str, Any] | None] = []

    def on_mount(self) -> None:
        self.push_screen(self.make(), callback=self.results.append)


def install_for(dom: Domain, wheel: Path, root: Path) -> FormPlugin:
    """The publisher (admin) signs the wheel; it is verified and installed into `root`."""
    admin = dom.user("admin@a.test")
    token = Attachments(admin).token()
    sig = wheels.sign(
        wheel,
        token.key,
        token.cert,
        token.issuer,
        countersign=lambda signed: workflow.countersign(admin, token, signed),
    )
    roots, crls = workflow.trust_material(admin)
    record = wheels.install(
        wheel.name,
        wheel.read_bytes(),
        sig.read_bytes(),
        roots=roots,
        crls=crls,
        publishers=["admin@a.test"],
        root=root,
    )
    return load(record.name, record.version, root)


async def type_into(pilot: Any, selector: str, text: str) -> None:
    pilot.app.screen.query_one(selector, Input).focus()
    await pilot.press(*text)


def shown(app: App[None], selector: str) -> str:
    return str(app.screen.query_one(selector, Static).content)


async def test_fill_a_requisition_total_updates_live_then_it_is_sent(
    dom: Domain, built: dict[str, Path]
) -> None:
    plugin = install_for(dom, built["requisition"], dom.tmp / "carol-forms")
    carol = dom.user("carol@a.test")
    app = Host(lambda: FormFillScreen(plugin, client=carol))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        assert shown(app, "#field-total") == "0.00"
        await type_into(pilot, "#field-requester", "carol@a.test")
        await type_into(pilot, "#field-department", "OS")
        await type_into(pilot, "#cell-items-0-description", "chair")
        await type_into(pilot, "#cell-items-0-quantity", "2")
        await type_into(pilot, "#cell-items-0-unit_price", "250")
        assert shown(app, "#field-total") == "500.00"
        await pilot.press("ctrl+n")  # a second item
        await wait_for(pilot, lambda: app.screen.query("#cell-items-1-description"))
        await type_into(pilot, "#cell-items-1-description", "lamp")
        await type_into(pilot, "#cell-items-1-quantity", "3")
        await type_into(pilot, "#cell-items-1-unit_price", "19.5")
        assert shown(app, "#field-total") == "558.50"
        await type_into(pilot, "#form-route", "manager: bob@a.test")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.results)
    (result,) = app.results
    assert result == {
        "form": "requisition",
        "data": {
            "requester": "carol@a.test",
            "department": "OS",
            "items": [
                {"description": "chair", "quantity": 2, "unit_price": "250"},
                {"description": "lamp", "quantity": 3, "unit_price": "19.5"},
            ],
        },
        "route": [{"role": "manager", "approvers": ["bob@a.test"]}],
    }
    draft = workflow.attach_form(
        Draft(to=[]), plugin, result, sender="carol@a.test", server=carol.server
    )
    assert draft.to == ["bob@a.test"] and draft.subject == "Form: Requisition"
    carol.send(draft.to, draft.subject, draft.body)
    bob = dom.user("bob@a.test")
    received = workflow.receive(bob, bob.list_headers().headers[0].id).doc
    assert plugin.from_xml(received.data)["total"] == Decimal("558.50")
    assert [s.role for s in received.route()] == ["manager"]


async def test_invalid_input_is_shown_inline_and_the_screen_stays(
    dom: Domain, built: dict[str, Path]
) -> None:
    plugin = install_for(dom, built["requisition"], dom.tmp / "carol-forms")
    app = Host(lambda: FormFillScreen(plugin))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        await type_into(pilot, "#field-requester", "not an address")
        await type_into(pilot, "#cell-items-0-description", "chair")
        await type_into(pilot, "#cell-items-0-quantity", "two")
        await type_into(pilot, "#cell-items-0-unit_price", "250")
        assert shown(app, "#field-total") == "0.00"  # the row does not count yet
        await pilot.press("ctrl+s")
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FormFillScreen) and not app.results
        errors = shown(app, "#form-errors")
        assert "requester is not a valid address" in errors
        assert "department is required" in errors
        assert "items row 1 quantity is not a valid int" in errors
        assert "route" in errors
        assert screen.query_one("#cell-items-0-quantity", Input).has_class("-invalid")
        assert screen.query_one("#field-requester", Input).has_class("-invalid")
        assert not screen.query_one("#field-purpose", Input).has_class("-invalid")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.results)
    assert app.results == [None]


async def test_fill_a_timesheet_with_autofill_from_the_server(
    dom: Domain, built: dict[str, Path]
) -> None:
    plugin = install_for(dom, built["timesheet"], dom.tmp / "carol-forms")
    carol = dom.user("carol@a.test")
    app = Host(lambda: FormFillScreen(plugin, client=carol))
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        screen = app.screen
        assert type(screen).__name__ == "TimesheetScreen"  # the plug-in's own layout
        assert shown(app, "#cell-days-1-day") == "Monday"
        await pilot.press("ctrl+n")  # one line per weekday, no more
        await pilot.pause()
        assert not screen.query("#cell-days-7-day")
        await pilot.click("#form-autofill")
        await wait_for(
            pilot, lambda: screen.query_one("#field-employee", Input).value == "Carol Jones"
        )
        assert screen.query_one("#field-employee_id", Input).value == "c-17"
        await type_into(pilot, "#field-period_ending", "2004-02-13")
        await type_into(pilot, "#cell-days-1-regular", "8")
        await type_into(pilot, "#cell-days-1-overtime", "2")
        await type_into(pilot, "#cell-days-2-paid_time_off", "4")
        assert shown(app, "#field-total_hours") == "14"
        assert shown(app, "#field-total_overtime") == "2"
        await type_into(pilot, "#form-route", "supervisor: bob@a.test")
        await pilot.click("#form-submit")
        await wait_for(pilot, lambda: app.results)
    (result,) = app.results
    assert result is not None
    assert result["data"]["employee"] == "Carol Jones"
    assert result["data"]["days"] == [
        {"day": "Monday", "regular": "8", "overtime": "2"},
        {"day": "Tuesday", "paid_time_off": "4"},
    ]
    draft = workflow.attach_form(
        Draft(to=[]), plugin, result, sender="carol@a.test", server=carol.server
    )
    carol.send(draft.to, draft.subject, draft.body)
    bob = dom.user("bob@a.test")
    received = workflow.receive(bob, bob.list_headers().headers[0].id).doc
    assert plugin.from_xml(received.data)["total_hours"] == Decimal(14)


async def test_autofill_without_a_record_is_an_inline_error(
    dom: Domain, built: dict[str, Path]
) -> None:
    plugin = install_for(dom, built["timesheet"], dom.tmp / "bob-own")
    bob = dom.user("bob@a.test")
    app = Host(lambda: FormFillScreen(plugin, client=bob))
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        await pilot.click("#form-autofill")
        await wait_for(pilot, lambda: "no employee record" in shown(app, "#form-errors"))
        assert isinstance(app.screen, FormFillScreen) and not app.results
        assert app.screen.query_one("#field-employee", Input).value == ""


async def test_view_a_received_form_with_its_approvals(dom: Domain, wheel: Path) -> None:
    send_requisition(dom, wheel)
    bob = dom.user("bob@a.test")
    workflow.act(bob, bob.list_headers().headers[0].id, "approve", root=dom.tmp / "carol-forms")
    carol = dom.user("carol@a.test")
    message = carol.retrieve(carol.list_headers().headers[0].id)
    form = show_form(carol, message, root=dom.tmp / "carol-forms")
    assert form is not None and form.chain is not None and form.plugin is not None
    made = shown_screen(form)
    assert made is not None and made.readonly
    app = Host(lambda: made)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        screen = app.screen
        chain = shown(app, "#form-chain")
        assert chain.startswith("Route: manager (bob@a.test)\nWorkflow: approved")
        assert "step 1 manager: bob@a.test approved" in chain
        assert shown(app, "#field-total") == "500.00"
        assert screen.query_one("#cell-items-0-description", Input).value == "chair"
        assert all(i.disabled for i in screen.query(Input))
        assert not screen.query("#form-submit")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.results)
    assert app.results == [None]


def test_fill_screen_snapshot(dom: Domain, built: dict[str, Path], snap_compare: Any) -> None:
    plugin = install_for(dom, built["requisition"], dom.tmp / "carol-forms")
    draft = {
        "form": "requisition",
        "data": {
            "requester": "carol@a.test",
            "department": "OS",
            "items": [{"description": "chair", "quantity": 2, "unit_price": "250"}],
        },
        "route": [{"role": "manager", "approvers": ["bob@a.test"]}],
    }

    async def steady(pilot: Any) -> None:
        await wait_for(pilot, lambda: isinstance(pilot.app.screen, FormFillScreen))
        for widget in pilot.app.screen.query(Input):
            widget.cursor_blink = False
        await pilot.pause()

    app = Host(lambda: FormFillScreen(plugin, draft))
    assert snap_compare(app, run_before=steady, terminal_size=(80, 24))


async def test_a_draft_that_asks_for_autofill_is_filled_as_the_screen_opens(
    dom: Domain, built: dict[str, Path]
) -> None:
    plugin = install_for(dom, built["timesheet"], dom.tmp / "carol-forms")
    carol = dom.user("carol@a.test")
    data = {"department": "OS", "days": [{"day": "Tuesday", "regular": "7"}]}
    draft = {"form": "timesheet", "data": data, "autofill": True}
    app = Host(lambda: FormFillScreen(plugin, draft, client=carol))
    async with app.run_test(size=(100, 36)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        screen = app.screen
        await wait_for(pilot, lambda: screen.query_one("#field-employee_id", Input).value == "c-17")
        assert screen.query_one("#field-department", Input).value == "OS"
        assert screen.query_one("#cell-days-2-regular", Input).value == "7"  # Tuesday's line
        assert shown(app, "#cell-days-6-day") == "Saturday"  # every weekday still there
        assert shown(app, "#field-total_hours") == "7"


class Broken(FormPlugin):
    """A third-party plug-in whose own rule fails: the screen reports it, no traceback."""

    name = "broken"
    version = "1.0.0"
    namespace = "urn:example:broken"
    fields = (Field("amount", "decimal", required=True), Field("double", "decimal", computed=True))

    def compute(self, data: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("compute exploded")

    def check(self, data: dict[str, Any]) -> list[str]:
        raise RuntimeError("check exploded")


async def test_a_failing_plugin_rule_is_an_inline_error_not_a_traceback() -> None:
    app = Host(lambda: FormFillScreen(Broken()))
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        await type_into(pilot, "#field-amount", "12")
        assert shown(app, "#field-double") == "—"
        await type_into(pilot, "#form-route", "boss: bob@a.test")
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert isinstance(app.screen, FormFillScreen) and not app.results
        assert "the broken plug-in failed: unexpected RuntimeError: check exploded" in shown(
            app, "#form-errors"
        )
