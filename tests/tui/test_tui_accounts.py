"""Accounts in the TUI, driven by Textual's pilot against two real servers on loopback: the
first-run setup form saves an account (password into a file-backed test keyring, never the
user's), several accounts are offered at sign-in, ctrl+a in the inbox switches to another
account without restarting, and errors stay notifications."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keyring.core
import pytest
from keyring.backends.fail import Keyring as NoKeyring
from keyring_file import FileKeyring
from textual.pilot import Pilot
from textual.widgets import Checkbox, Input, Label, OptionList, Select
from textual.widgets._footer import FooterKey
from tui_helpers import wait_for

from wsemail.client import session
from wsemail.protocol.errors import WsemailError
from wsemail.tui.app import WsemailApp, saved_choices
from wsemail.tui.screens.choose import ChooseScreen
from wsemail.tui.screens.help import HelpScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.login import LoginScreen
from wsemail.tui.signin import account_choice_needed, known_login

from conftest import PASSWORD, Running, start_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FileKeyring:
    """Nothing configured: client.toml in tmp_path, a test keyring, no WSEMAIL_* settings."""
    for name in ("SERVER", "USER", "PASSWORD", "ACCOUNT", "TRUST_ROOTS", "TLS_NAME"):
        monkeypatch.delenv(f"WSEMAIL_{name}", raising=False)
    monkeypatch.setenv("WSEMAIL_CLIENT_CONFIG", str(tmp_path / "client.toml"))
    ring = FileKeyring(tmp_path / "keyring.json")
    monkeypatch.setattr(keyring.core, "_keyring_backend", ring)
    return ring


@pytest.fixture
def two(tmp_path: Path) -> Iterator[tuple[Running, Running]]:
    a = start_server(tmp_path / "a")
    b = start_server(tmp_path / "b", domain="b.test")
    yield a, b
    a.stop()
    b.stop()


def save_two(a: Running, b: Running, ring: FileKeyring) -> None:
    config = session.ClientConfig()
    config = config.with_account(session.Account("work", a.url, "alice@localhost"))
    config = config.with_account(session.Account("home", b.url, "bob@b.test"))
    session.save_accounts(config)
    ring.set_password("wsemail", f"alice@localhost {a.url}", PASSWORD)
    ring.set_password("wsemail", f"bob@b.test {b.url}", PASSWORD)


def app_as_run(**seams: Any) -> WsemailApp:
    """What `wsemail tui` builds, with the poll and the IM stream as the test asks."""
    choices = saved_choices() if account_choice_needed() else []
    seams.setdefault("im_notify", False)
    return WsemailApp(known_login(), choices=choices, poll_seconds=0, **seams)


def notes(app: WsemailApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def signed_in_as(app: WsemailApp, user: str) -> bool:
    screen = app.screen
    return (
        isinstance(screen, InboxScreen)
        and screen.client.username == user
        and screen.mailbox.loaded
        and not screen.loading
    )


async def fill(pilot: Pilot[None], selector: str, text: str) -> None:
    field = pilot.app.screen.query_one(selector, Input)
    field.value = ""
    field.focus()
    await pilot.press(*text)


@pytest.mark.anyio
async def test_first_run_sets_up_an_account_and_keeps_the_password(
    two: tuple[Running, Running], home: FileKeyring
) -> None:
    a, _ = two
    a.client("bob@localhost").send(["alice@localhost"], "welcome", "x")
    app = app_as_run()
    assert app.defaults.first_run
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, LoginScreen)
        assert "Set up" in str(screen.query_one("#login-title", Label).render())
        assert screen.query_one("#login-remember", Checkbox).value
        await fill(pilot, "#login-server", a.url)
        await fill(pilot, "#login-address", "alice@localhost")
        await fill(pilot, "#login-password", PASSWORD)
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        assert app.screen.table.row_count == 1  # type: ignore[attr-defined]
    saved = session.load_accounts()
    assert saved.default == "alice@localhost"
    assert saved.accounts["alice@localhost"] == session.Account(
        "alice@localhost", a.url, "alice@localhost"
    )
    assert home.get_password("wsemail", f"alice@localhost {a.url}") == PASSWORD
    # the next start signs in at once with what was saved
    again = app_as_run()
    assert again.defaults.complete and not again.defaults.first_run


@pytest.mark.anyio
async def test_setup_refused_or_without_keyring_is_a_notification(
    two: tuple[Running, Running], home: FileKeyring, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, _ = two
    app = app_as_run()
    async with app.run_test(size=(80, 24)) as pilot:
        await fill(pilot, "#login-server", a.url)
        await fill(pilot, "#login-address", "alice@localhost")
        await fill(pilot, "#login-password", "wrong password")
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("wrong address or password" in n for n in notes(app)))
        assert isinstance(app.screen, LoginScreen)
        assert not session.config_path().exists() and home.entries() == {}  # nothing saved
        monkeypatch.setattr(keyring.core, "_keyring_backend", NoKeyring())
        await fill(pilot, "#login-password", PASSWORD)
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        assert any("no OS keyring is available" in n for n in notes(app))
    assert list(session.load_accounts().accounts) == ["alice@localhost"]  # without password
    assert a.client().list_headers().headers == []  # the server still answers


@pytest.mark.anyio
async def test_several_accounts_are_offered_at_sign_in(
    two: tuple[Running, Running], home: FileKeyring
) -> None:
    a, b = two
    save_two(a, b, home)
    b.client("carol@b.test").send(["bob@b.test"], "for bob at b", "x")
    app = app_as_run()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, LoginScreen) and not screen.has_class("-auto")
        select = screen.query_one("#login-account", Select)
        assert select.value == "work" and select.has_focus, app.focused  # the default first
        assert screen.query_one("#login-address", Input).value == "alice@localhost"
        assert not screen.query_one("#login-remember", Checkbox).value  # saved already
        select.value = "home"
        await pilot.pause()
        assert screen.query_one("#login-server", Input).value == b.url
        assert screen.query_one("#login-password", Input).value == PASSWORD
        screen.query_one("#login-submit").focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(app, "bob@b.test"))
        assert app.screen.table.row_count == 1  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_ctrl_a_switches_account_without_restarting(
    two: tuple[Running, Running], home: FileKeyring
) -> None:
    a, b = two
    save_two(a, b, home)
    session.save_accounts(
        session.load_accounts().with_account(session.load_accounts().get("work"), make_default=True)
    )
    b.client("carol@b.test").send(["bob@b.test"], "for bob at b", "x")
    app = WsemailApp(
        known_login(account="work"), poll_seconds=0, im_notify=True
    )  # `wsemail tui --account work`
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        first = app.screen
        assert isinstance(first, InboxScreen)
        old = first.client
        await pilot.press("question_mark")  # ctrl+a is not in the footer: Help lists it
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        assert "Accounts" in [description for _, description in app.screen.keys]  # type: ignore[attr-defined]
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.screen is first)
        await pilot.press("ctrl+a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = next(
            i for i in range(options.option_count) if options.get_option_at_index(i).id == "home"
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(app, "bob@b.test"))
        assert app.client is app.screen.client  # type: ignore[attr-defined]
        assert app.screen.table.row_count == 1  # type: ignore[attr-defined]
        assert first.push.closed and not first.is_attached  # the old inbox and its stream
        with pytest.raises((RuntimeError, WsemailError)):
            old.list_headers()  # the old client is closed
        assert [s for s in app.screen_stack if isinstance(s, InboxScreen)] == [app.screen]
        # a new account, cancelled: back to the same inbox
        await pilot.press("ctrl+a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
        await pilot.press("end", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, LoginScreen))
        login = app.screen
        assert "Set up" in str(login.query_one("#login-title", Label).render())
        keys = {key.description: key for key in login.query(FooterKey)}
        assert "Cancel" in keys and keys["Help"].region.right <= 80
        await pilot.press("escape")
        await wait_for(pilot, lambda: signed_in_as(app, "bob@b.test"))
    assert set(session.load_accounts().accounts) == {"work", "home"}  # nothing added


@pytest.mark.anyio
async def test_switching_to_an_account_whose_server_is_down_keeps_the_session(
    two: tuple[Running, Running], home: FileKeyring
) -> None:
    a, b = two
    save_two(a, b, home)
    b.stop()
    app = WsemailApp(known_login(account="work"), poll_seconds=0, im_notify=False)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        await pilot.press("ctrl+a")
        await wait_for(pilot, lambda: isinstance(app.screen, ChooseScreen))
        options = app.screen.query_one(OptionList)
        options.highlighted = next(
            i for i in range(options.option_count) if options.get_option_at_index(i).id == "home"
        )
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("cannot reach" in n for n in notes(app)))
        assert isinstance(app.screen, LoginScreen)
        await pilot.press("escape")
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        assert app.client is not None and app.client.list_headers().headers == []


def test_first_run_setup_snapshot(home: FileKeyring, snap_compare: Any) -> None:
    async def steady(pilot: Pilot[Any]) -> None:
        await pilot.pause()
        for widget in pilot.app.screen.query(Input):
            widget.cursor_blink = False
        await pilot.pause()

    app = WsemailApp(known_login(), poll_seconds=0, im_notify=False)
    assert snap_compare(app, run_before=steady, terminal_size=(80, 24))


@pytest.mark.anyio
async def test_trust_roots_typed_at_setup_are_used_at_once_and_shown_next_time(
    two: tuple[Running, Running], home: FileKeyring
) -> None:
    a, _ = two
    root = str(a.config.trust_roots[0])
    app = app_as_run()
    async with app.run_test(size=(80, 24)) as pilot:
        await fill(pilot, "#login-server", a.url)
        await fill(pilot, "#login-address", "alice@localhost")
        await fill(pilot, "#login-password", PASSWORD)
        await fill(pilot, "#login-roots", root)
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(app, "alice@localhost"))
        client = app.screen.client  # type: ignore[attr-defined]
        assert client.trust_roots == [Path(root)]
        assert client.answer_check == "verified"  # this session, not after a restart
    assert session.load_accounts().accounts["alice@localhost"].trust_roots == (root,)
    # next start, the password not kept: the form shows the roots it will use
    home.delete_password("wsemail", f"alice@localhost {a.url}")
    again = app_as_run()
    async with again.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(again.screen, LoginScreen)
        assert again.screen.query_one("#login-roots", Input).value == root
        await fill(pilot, "#login-password", PASSWORD)
        await pilot.press("enter")
        await wait_for(pilot, lambda: signed_in_as(again, "alice@localhost"))
        assert again.screen.client.answer_check == "verified"  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_a_missing_trust_root_typed_at_setup_is_a_notification(
    two: tuple[Running, Running], home: FileKeyring, tmp_path: Path
) -> None:
    a, _ = two
    app = app_as_run()
    async with app.run_test(size=(80, 24)) as pilot:
        await fill(pilot, "#login-server", a.url)
        await fill(pilot, "#login-address", "alice@localhost")
        await fill(pilot, "#login-password", PASSWORD)
        await fill(pilot, "#login-roots", str(tmp_path / "nowhere.pem"))
        await pilot.press("enter")
        await wait_for(pilot, lambda: any("trust root not found" in n for n in notes(app)))
        assert isinstance(app.screen, LoginScreen)
    assert not session.config_path().exists()  # nothing saved
