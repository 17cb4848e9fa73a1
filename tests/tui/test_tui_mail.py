"""The mail client driven by Textual's pilot against a real server on loopback."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from textual.widgets import Input, Label, TextArea
from textual.widgets._footer import FooterKey
from tui_helpers import make_app, wait_for

from wsemail.client.mail import Client
from wsemail.client.salts import SaltMemory
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.confirm import ConfirmScreen
from wsemail.tui.screens.help import HelpScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.login import LoginScreen
from wsemail.tui.screens.message import MessageScreen
from wsemail.tui.signin import LoginDefaults

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def inbox(app: WsemailApp) -> InboxScreen:
    screen = app.screen
    assert isinstance(screen, InboxScreen), screen
    return screen


def in_inbox(app: WsemailApp, rows: int | None = None) -> bool:
    screen = app.screen
    if not isinstance(screen, InboxScreen) or not screen.mailbox.loaded or screen.loading:
        return False
    return rows is None or screen.table.row_count == rows


def subjects(app: WsemailApp) -> list[str]:
    table = inbox(app).table
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


def notes(app: WsemailApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def inbox_subjects(server: Running, user: str, folder: str = "inbox") -> list[str]:
    return [h.subject for h in server.client(user).iter_headers(folder)]


async def test_known_credentials_skip_the_form_and_show_the_inbox(server: Running) -> None:
    server.client("bob@localhost").send(["alice@localhost"], "hello", "hi alice")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        row = inbox(app).table.get_row_at(0)
        assert str(row[0]).startswith("●")  # unread marker
        assert str(row[1]) == "bob@localhost"
        assert str(row[2]) == "hello"
        assert "1 loaded" in str(app.screen.query_one("#inbox-status").render())


class HeldTransport(httpx.HTTPTransport):
    """The real transport, each request held until `go` is set: the sign-in stays under way."""

    def __init__(self, go: threading.Event) -> None:
        super().__init__()
        self.go = go

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.go.wait(30)
        return super().handle_request(request)


def footer_actions(app: WsemailApp) -> set[str]:
    return {key.action for key in app.screen.query(FooterKey)}


async def test_known_credentials_show_the_inbox_at_once_while_signing_in(
    server: Running,
) -> None:
    """Everything known: the inbox is the first screen and says it signs in; its keys wait
    for the sign-in, then its first page shows."""
    server.client("bob@localhost").send(["alice@localhost"], "hello", "hi alice")
    go = threading.Event()

    def held(url: str, user: str, password: str) -> Client:
        return Client(url, user, password, transport=HeldTransport(go))

    app = make_app(server, client_factory=held)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        screen = inbox(app)
        status = screen.query_one("#inbox-status", Label)
        assert str(status.render()) == "Signing in as alice@localhost …"
        assert not screen.mailbox.loaded and "compose" not in footer_actions(app)
        await pilot.press("c", "slash")  # nothing of the inbox's own before the sign-in
        await pilot.pause()
        assert app.screen is screen and not screen.query_one("#filter", Input).display
        go.set()
        await wait_for(pilot, lambda: in_inbox(app, 1))
        assert str(status.render()).startswith("1 loaded")
        await wait_for(pilot, lambda: "compose" in footer_actions(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))


async def test_the_footer_keeps_its_keys_while_they_do_not_change(server: Running) -> None:
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0) and "compose" in footer_actions(app))
        keys = list(app.screen.query(FooterKey))
        app.screen.refresh_bindings()  # the same keys: not composed again
        await pilot.pause()
        await pilot.pause()
        assert list(app.screen.query(FooterKey)) == keys
        await pilot.press("slash")  # the search field has the focus: other keys
        await wait_for(pilot, lambda: "compose" not in footer_actions(app))
        assert list(app.screen.query(FooterKey)) != keys


async def test_a_server_url_that_is_none_asks_with_the_form(server: Running) -> None:
    app = make_app(server)
    app.defaults.server = "not a server"
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: any("not a server URL" in n for n in notes(app)))
        screen = app.screen
        assert isinstance(screen, LoginScreen) and not screen.has_class("-auto")
        assert not any(isinstance(s, InboxScreen) for s in app.screen_stack)
        field = screen.query_one("#login-server", Input)
        field.value = server.url
        screen.query_one("#login-password", Input).focus()
        await pilot.press("enter")
        await wait_for(pilot, lambda: in_inbox(app, 0))


async def start_to_the_inbox(server: Running) -> None:
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))


async def test_sign_in_remembers_the_salt_for_the_next_start(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next start begins scrypt from the remembered salt (wsemail.client.salts); one
    that no longer holds (a new password) only loses the head start."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    memory = SaltMemory.default()
    assert memory.path == tmp_path / "cache" / "wsemail" / "salts.json"
    salt = server.client().get_salt("alice@localhost")
    for remembered in (None, salt, b"\x00" * 16):
        if remembered is not None:
            memory.put(server.url, "alice@localhost", remembered)
        await start_to_the_inbox(server)
        assert memory.get(server.url, "alice@localhost") == salt


async def test_wrong_password_notifies_and_the_form_signs_in(server: Running) -> None:
    app = make_app(server, password="wrong password")
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: any("wrong address or password" in n for n in notes(app)))
        screen = app.screen
        assert isinstance(screen, LoginScreen)
        assert not screen.has_class("-auto")  # the form is shown now
        field = screen.query_one("#login-password", Input)
        assert field.has_focus
        field.value = ""
        await pilot.press(*"correct horse battery", "enter")
        await wait_for(pilot, lambda: in_inbox(app, 0))


async def test_login_form_from_scratch(server: Running) -> None:
    app = WsemailApp(LoginDefaults(server.url, "", ""), poll_seconds=0)
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert isinstance(app.screen, LoginScreen)
        assert app.screen.query_one("#login-address", Input).has_focus
        await pilot.press(*"bob@localhost", "tab", *"correct horse battery", "enter")
        await wait_for(pilot, lambda: in_inbox(app))
        assert app.client is not None and app.client.username == "bob@localhost"


async def test_open_a_message_and_reply(server: Running) -> None:
    server.client("bob@localhost").send(
        ["alice@localhost"], "lunch?", "noon at the usual place", cc=["carol@localhost"]
    )
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        body = str(app.screen.query_one("#message-body").render())
        assert "noon at the usual place" in body
        headers = str(app.screen.query_one("#message-headers").render())
        assert "bob@localhost" in headers and "carol@localhost" in headers
        await pilot.press("a")  # reply all
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        assert compose.query_one("#compose-to", Input).value == "bob@localhost"
        assert compose.query_one("#compose-cc", Input).value == "carol@localhost"
        assert compose.query_one("#compose-subject", Input).value == "Re: lunch?"
        area = compose.query_one("#compose-body", TextArea)
        assert area.has_focus and "> noon at the usual place" in area.text
        await pilot.press(*"Yes!", "ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        row = inbox(app).table.get_row_at(0)
        assert not str(row[0]).startswith("●")  # read now
    assert inbox_subjects(server, "bob@localhost") == ["Re: lunch?"]
    assert inbox_subjects(server, "carol@localhost") == ["Re: lunch?", "lunch?"]
    bob = server.client("bob@localhost")
    reply = bob.retrieve(next(bob.iter_headers()).id)
    assert reply.body.startswith("Yes!") and reply.cc == ["carol@localhost"]


async def test_compose_with_address_completion_and_send(server: Running) -> None:
    server.client("bob@localhost").send(["alice@localhost"], "hi", "hello")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        to = app.screen.query_one("#compose-to", Input)
        assert to.has_focus
        await pilot.press("b", "o")
        await wait_for(pilot, lambda: to._suggestion == "bob@localhost")
        await pilot.press("right", "tab", "tab")  # accept; Cc; Subject
        assert to.value == "bob@localhost"
        await pilot.press(*"from the tui", "tab", *"typed body")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        assert any("Sent to bob@localhost" in n for n in notes(app))
    bob = server.client("bob@localhost")
    header = next(bob.iter_headers())
    assert header.subject == "from the tui" and header.sender == "alice@localhost"
    assert bob.retrieve(header.id).body == "typed body"


async def test_compose_refuses_bad_addresses_and_confirms_discard(server: Running) -> None:
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("at least one recipient" in n for n in notes(app)))
        await pilot.press(*"not an address", "ctrl+s")
        await wait_for(pilot, lambda: any("not a valid address" in n for n in notes(app)))
        await pilot.press("ctrl+o")  # no terminal to suspend under the pilot
        await wait_for(pilot, lambda: any("cannot run an editor" in n for n in notes(app)))
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
    assert inbox_subjects(server, "alice@localhost", "sent") == []


async def test_delete_asks_first(server: Running) -> None:
    bob = server.client("bob@localhost")
    for subject in ("one", "two"):
        bob.send(["alice@localhost"], subject, "x")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 2))
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("n")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        assert subjects(app) == ["two", "one"]
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        await wait_for(pilot, lambda: in_inbox(app, 1))
        assert subjects(app) == ["one"]
        # and from the message view
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.click("#confirm-yes")
        await wait_for(pilot, lambda: in_inbox(app, 0))
    assert inbox_subjects(server, "alice@localhost") == []


async def test_sent_folder_and_search(server: Running) -> None:
    alice = server.client("alice@localhost")
    alice.send(["bob@localhost"], "for bob", "b")
    alice.send(["carol@localhost"], "for carol", "c")
    server.client("bob@localhost").send(["alice@localhost"], "in the inbox", "i")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        await pilot.press("s")
        await wait_for(pilot, lambda: in_inbox(app, 2))
        assert inbox(app).mailbox.folder == "sent"
        assert subjects(app) == ["for carol", "for bob"]
        await pilot.press("slash", *"CAROL", "enter")  # searched on the server
        await wait_for(pilot, lambda: in_inbox(app, 1) and inbox(app).search_query)
        assert subjects(app) == ["for carol"]
        await pilot.press("escape")  # back to the folder
        await wait_for(pilot, lambda: in_inbox(app, 2) and inbox(app).search_query is None)
        assert subjects(app) == ["for carol", "for bob"]
        await pilot.press("i")
        await wait_for(pilot, lambda: in_inbox(app, 1))
        assert subjects(app) == ["in the inbox"]


async def test_paging_loads_more_as_the_cursor_nears_the_end(server: Running) -> None:
    bob = server.client("bob@localhost")
    for n in range(60):
        bob.send(["alice@localhost"], f"message {n:02}", "x")
    app = make_app(server, page_size=10)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.pause(0.3)
        first = len(inbox(app).mailbox.headers)
        assert 10 <= first < 60  # enough to fill the window, not the whole mailbox
        assert "more on server" in str(app.screen.query_one("#inbox-status").render())
        for _ in range(40):  # the user pages down; pages arrive as the cursor nears the end
            if len(inbox(app).mailbox.headers) == 60:
                break
            await pilot.press("pagedown")
            await pilot.pause(0.05)
            await wait_for(pilot, lambda: in_inbox(app))
        assert inbox(app).table.cursor_row > first - 10
        assert subjects(app) == [f"message {n:02}" for n in reversed(range(60))]
        assert not inbox(app).mailbox.more


async def test_new_mail_appears_without_refresh(server: Running) -> None:
    server.client("bob@localhost").send(["alice@localhost"], "first", "x")
    app = make_app(server, poll_seconds=0.2)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        server.client("carol@localhost").send(["alice@localhost"], "second", "y")
        await wait_for(pilot, lambda: in_inbox(app, 2))
        assert subjects(app) == ["second", "first"]
        # Textual's notify posts a message: the notice may come a moment after the rows
        await wait_for(pilot, lambda: any("1 new message" in n for n in notes(app)))


async def test_help_lists_the_keys_of_the_screen(server: Running) -> None:
    app = make_app(server)
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen))
        keys = dict((d, k) for k, d in app.screen.keys)
        assert keys["Compose"] == "c" and keys["Sent"] == "s" and keys["Search"] == "/"
        assert keys["Threads"] == "t" and keys["Back to the folder"] == "esc"
        order = [d for _, d in app.screen.keys]
        assert order[0] == "Compose"  # the screen's own keys first, navigation last
        assert order.index("Help") < order.index("Focus Next")
        assert "Join" in keys  # ctrl+g: a party line
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))


async def test_message_lists_attachments_and_fetches_them_with_progress(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wsemail.client.attachments import Attachments

    source = tmp_path / "minutes.txt"
    source.write_bytes(b"minutes of the meeting\n" * 5000)
    sender = Attachments(server.client("bob@localhost"))
    uploaded = sender.upload(source)
    sender.client.send(["alice@localhost"], "minutes", "attached", attachments=[uploaded.guid])
    monkeypatch.setenv("WSEMAIL_DOWNLOAD_DIR", str(tmp_path / "downloads"))
    app = make_app(server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 1))
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        headers = str(app.screen.query_one("#message-headers").render())
        assert "1. minutes.txt" in headers and "Origin:" in headers
        await pilot.press("g")
        await wait_for(pilot, lambda: any("Saved" in n for n in notes(app)))
    saved = tmp_path / "downloads" / "minutes.txt"
    assert saved.read_bytes() == source.read_bytes()


async def test_compose_attaches_files_that_stay_on_the_server(
    server: Running, tmp_path: Path
) -> None:
    from wsemail.client.attachments import Attachments

    report = tmp_path / "report.csv"
    report.write_text("a,b\n1,2\n")
    app = make_app(server)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app))
        await pilot.press("c")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        compose.query_one("#compose-to", Input).value = "bob@localhost"
        compose.query_one("#compose-subject", Input).value = "figures"
        compose.query_one("#compose-files", Input).value = str(tmp_path / "nope.csv")
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("no such file" in n for n in notes(app)))
        assert isinstance(app.screen, ComposeScreen)  # nothing sent
        compose.query_one("#compose-files", Input).value = str(report)
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: not isinstance(app.screen, ComposeScreen))
    bob = Attachments(server.client("bob@localhost"))
    header = next(bob.client.iter_headers())
    refs = bob.list(header.id).refs
    assert [r.name for r in refs] == ["report.csv"] and refs[0].size == 8
