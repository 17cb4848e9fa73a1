"""The compose screen's protected deliveries between two real TLS domains on loopback,
driven by Textual's pilot: Send Encrypted (the stored bytes hold no plaintext, the reader's
TUI shows it decrypted with the sender's signature verified), its refusals (a recipient
without a certificate, no key on this device: a notification and nothing sent), and an
instant message sent directly to the recipient's server."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, TextArea
from tui_domains import Two, two  # noqa: F401  (the fixture)
from tui_helpers import wait_for

from wsemail.client.im import Incoming, InstantMessenger
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen

from conftest import wait_for as wait_until

pytestmark = pytest.mark.anyio

SUBJECT = "Merger plans zebra-umbrella"
BODY = "the launch code is 4711-walrus-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def in_inbox(app: WsemailApp, rows: int) -> bool:
    screen = app.screen
    return (
        isinstance(screen, InboxScreen)
        and screen.mailbox.loaded
        and not screen.loading
        and screen.table.row_count == rows
    )


async def compose(
    app: WsemailApp, pilot: Pilot[None], to: str, subject: str, body: str
) -> ComposeScreen:
    await pilot.press("c")
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    screen.query_one("#compose-to", Input).value = to
    screen.query_one("#compose-subject", Input).value = subject
    screen.query_one("#compose-body", TextArea).text = body
    return screen


async def test_compose_sends_encrypted_and_the_reader_sees_it_decrypted(
    two: Two,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    two.key("alice@a.test")
    two.key("bob@b.test")
    plan = tmp_path / "plan.txt"
    plan.write_text("attachment secret: orange-kangaroo\n" * 100)
    downloads = tmp_path / "downloads"
    monkeypatch.setenv("WSEMAIL_DOWNLOAD_DIR", str(downloads))
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test", SUBJECT, BODY)
        screen.query_one("#compose-files", Input).value = str(plan)
        sign = screen.query_one("#compose-sign", Checkbox)
        assert sign.value and sign.disabled  # signing follows the CLI default (--sign)
        screen.query_one("#compose-instant", Checkbox).value = True
        await pilot.pause()
        screen.query_one("#compose-encrypt", Checkbox).value = True  # mail, not an IM
        await pilot.pause()
        assert screen.encrypt and not screen.instant and not sign.disabled
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        assert any("Encrypted message sent, signed" in n for n in notes(app))

    bob = two.user("bob@b.test")
    wait_until(lambda: bob.list_headers().headers, "bob's copy")
    stored = two.db_bytes()
    assert SUBJECT.encode() not in stored and BODY.encode() not in stored

    reader = two.app("bob@b.test")
    async with reader.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(reader, 1))
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: isinstance(reader.screen, MessageScreen) and reader.screen.message is not None,
        )
        screen = reader.screen
        assert isinstance(screen, MessageScreen) and screen.message is not None
        assert (screen.message.subject, screen.message.body) == (SUBJECT, BODY)
        headers = str(screen.query_one("#message-headers").render())
        assert "Encrypted: end to end ✓, signed by alice@a.test ✓" in headers
        assert "signed by a.test ✓" in headers  # the sending server's hop signature
        assert BODY in str(screen.query_one("#message-body").render())
        assert "1. plan.txt (3.4 KB, encrypted, on a.test; g to get)" in headers
        await pilot.press("g")
        await wait_for(pilot, lambda: (downloads / "plan.txt").exists())
        assert (downloads / "plan.txt").read_bytes() == plan.read_bytes()
        await wait_for(pilot, lambda: any("end to end ✓" in n for n in notes(reader)))


async def test_encrypted_send_is_refused_without_a_recipient_certificate(two: Two) -> None:  # noqa: F811
    two.key("alice@a.test")
    two.key("bob@b.test")  # carol@b.test has none
    before = two.stored()
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test, carol@b.test", SUBJECT, BODY)
        screen.query_one("#compose-encrypt", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: any("cannot encrypt to carol@b.test" in n for n in notes(app))
        )
        assert app.screen is screen and not screen.sending  # the draft stays, can be fixed
        assert any("nothing was sent" in n for n in notes(app))
    assert two.stored() == before
    assert two.user("bob@b.test").list_headers().headers == []  # the servers still answer


async def test_encrypted_send_is_refused_without_a_key_on_this_device(two: Two) -> None:  # noqa: F811
    two.key("bob@b.test")  # alice has no key here
    before = two.stored()
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test", SUBJECT, BODY)
        screen.query_one("#compose-encrypt", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("no key for alice@a.test" in n for n in notes(app)))
        assert app.screen is screen
    assert two.stored() == before
    assert two.user("alice@a.test").list_headers().headers == []


async def test_compose_sends_directly_to_the_recipients_server(two: Two) -> None:  # noqa: F811
    got: list[Incoming] = []
    stream = InstantMessenger(two.user("bob@b.test")).listen()
    reader = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    reader.start()
    try:
        app = two.app("alice@a.test")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: in_inbox(app, 0))
            screen = await compose(app, pilot, "bob@b.test", "", "straight to you")
            screen.query_one("#compose-direct", Checkbox).value = True  # implies instant
            await pilot.pause()
            assert screen.instant and screen.direct
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
            assert any("Sent directly: bob@b.test: pushed" in n for n in notes(app))
        wait_until(lambda: any(i.body == "straight to you" for i in got), "bob's live copy")
        item = next(i for i in got if i.body == "straight to you")
        assert item.sender == "alice@a.test"
        # not relayed by alice's server: nothing in her sent folder
        assert two.user("alice@a.test").list_headers("sent").headers == []
    finally:
        stream.close()
        reader.join(10)
