"""A form attached in compose, against a real TLS domain on loopback: ctrl+f picks one of
the installed form plug-ins, it is filled in its plug-in's screen, and the message that
goes out carries it (validated, routed to the first step's approver when no recipient was
typed); the approver's client reads it as that form. A form cannot go encrypted or as an
instant message: refused with a notification, nothing sent."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tui_forms import (  # noqa: F401  (fixtures)
    Domain,
    built,
    dom,
    install_for,
    send_requisition,
    type_into,
    wheel,
)
from textual.pilot import Pilot
from textual.widgets import Checkbox, OptionList
from textual.widgets._footer import FooterKey
from tui_helpers import make_app, wait_for

from wsemail.client.forms import workflow
from wsemail.tui.app import WsemailApp
from wsemail.tui.formscreen import FormFillScreen
from wsemail.tui.screens.choose import ChooseScreen
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def fill_requisition(app: WsemailApp, pilot: Pilot[None]) -> ComposeScreen:
    await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.mailbox.loaded)
    await pilot.press("c")
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
    compose = app.screen
    assert isinstance(compose, ComposeScreen)
    await pilot.press("ctrl+f")
    await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
    picker = app.screen.query_one(OptionList)
    picker.highlighted = picker.get_option_index("requisition")
    await pilot.press("enter")
    await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
    await type_into(pilot, "#field-requester", "carol@a.test")
    await type_into(pilot, "#field-department", "OS")
    await type_into(pilot, "#cell-items-0-description", "chair")
    await type_into(pilot, "#cell-items-0-quantity", "2")
    await type_into(pilot, "#cell-items-0-unit_price", "250")
    await type_into(pilot, "#form-route", "manager: bob@a.test")
    await pilot.press("ctrl+s")
    await wait_for(pilot, lambda: app.screen is compose and compose.form is not None)
    return compose


async def test_attach_a_form_fill_it_and_send_it(dom: Domain, built: dict[str, Path]) -> None:  # noqa: F811
    for name in ("requisition", "timesheet"):  # two installed: the user picks one
        install_for(dom, built[name], dom.tmp / "bob-forms")
    app = make_app(dom.running, "carol@a.test", client_factory=dom.client)
    async with app.run_test(size=(80, 24)) as pilot:
        compose = await fill_requisition(app, pilot)
        assert compose.form is not None and compose.form[0].name == "requisition"
        assert "Requisition" in str(compose.query_one("#compose-form").render())
        assert compose.query_one("#compose-body").read_only
        await pilot.press("ctrl+s")  # no recipient typed: the route's first approver
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        sent = [n for n in notes(app) if n.startswith("Form sent: Requisition")]
        assert sent and sent[0].endswith(": Sent to bob@a.test"), notes(app)
        # installed straight from a wheel file, not a published one: the notice says so
        assert "names no published wheel" in sent[0]

    bob = dom.user("bob@a.test")
    header = bob.list_headers().headers[0]
    assert (header.sender, header.subject) == ("carol@a.test", "Form: Requisition")
    received = workflow.receive(bob, header.id).doc
    assert received.plugin.name == "requisition"
    assert [s.role for s in received.route()] == ["manager"]
    assert "chair" in received.to_bytes().decode()


async def test_a_form_is_not_sent_encrypted_or_instant(
    dom: Domain,  # noqa: F811
    built: dict[str, Path],  # noqa: F811
) -> None:
    install_for(dom, built["requisition"], dom.tmp / "bob-forms")
    before = dom.running.count("SELECT count(*) FROM messages")
    app = make_app(dom.running, "carol@a.test", client_factory=dom.client)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.mailbox.loaded
        )
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        await pilot.press("ctrl+f")  # only one installed: straight to its screen
        await wait_for(pilot, lambda: isinstance(app.screen, FormFillScreen))
        await type_into(pilot, "#field-requester", "carol@a.test")
        await type_into(pilot, "#field-department", "OS")
        await type_into(pilot, "#cell-items-0-description", "chair")
        await type_into(pilot, "#cell-items-0-quantity", "1")
        await type_into(pilot, "#cell-items-0-unit_price", "9")
        await type_into(pilot, "#form-route", "manager: bob@a.test")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is compose and compose.form is not None)
        compose.query_one("#compose-instant", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("a form goes as mail" in n for n in notes(app)))
        assert app.screen is compose and not compose.sending
    assert dom.running.count("SELECT count(*) FROM messages") == before
    assert dom.user("bob@a.test").list_headers().headers == []  # the server still answers


async def test_a_form_message_footer_keeps_help_in_80_columns(
    dom: Domain,  # noqa: F811
    wheel: Path,  # noqa: F811
) -> None:
    """The busiest footer: a received form whose plug-in is not installed (i installs)."""
    send_requisition(dom, wheel)
    app = make_app(dom.running, "bob@a.test", client_factory=dom.client)
    async with app.run_test(size=(80, 24)) as pilot:
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
        await pilot.pause()
        keys = {key.description: key for key in app.screen.query(FooterKey)}
        assert "Install" in keys and "Reply all" in keys
        assert keys["Help"].region.right <= 80
