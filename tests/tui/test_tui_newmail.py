"""New mail in the TUI (issue 18), driven by Textual's pilot against a real server on
loopback: mail pushed while the inbox is open rings the bell, shows in the list without
waiting for a poll, and runs the user's `new_mail_command` from client.toml with the message
in its environment, off the UI thread; a hook that fails is a notice, and the app goes on."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.app import App
from tui_helpers import make_app, wait_for

from wsemail.client.im import InstantMessenger
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.inbox import InboxScreen

from conftest import Running

pytestmark = pytest.mark.anyio
ALICE = "alice@localhost"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def bells(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts App.bell (the terminal is Textual's, not ours)."""
    rung: list[int] = []
    monkeypatch.setattr(App, "bell", lambda self: rung.append(1))
    return rung


def client_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: Running, hook: str
) -> None:
    path = tmp_path / "client.toml"
    path.write_text(
        f'default = "a"\n[accounts.a]\nserver = "{server.url}"\nuser = "{ALICE}"\n'
        f"new_mail_command = '''{hook}'''\n"
    )
    monkeypatch.setenv("WSEMAIL_CLIENT_CONFIG", str(path))


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def live(pilot: object, server: Running) -> None:
    """The inbox's push stream is open (alice shows online to bob)."""
    bob = InstantMessenger(server.client("bob@localhost"))
    await wait_for(pilot, lambda: bob.who([ALICE])[0].status == "online")  # type: ignore[arg-type]


async def test_new_mail_rings_shows_and_runs_the_hook_with_its_fields(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bells: list[int]
) -> None:
    out = tmp_path / "hook.out"
    client_toml(
        tmp_path,
        monkeypatch,
        server,
        'printf "%s\\n" "$WSEMAIL_ID" "$WSEMAIL_FROM" "$WSEMAIL_SUBJECT" "$WSEMAIL_FOLDER" '
        f"> {out}.tmp && mv {out}.tmp {out}",
    )
    app = make_app(server, im_notify=True)  # no polling: only the push can show it
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.mailbox.loaded
        )
        await live(pilot, server)
        sent = server.client("bob@localhost").send([ALICE], "quarterly figures", "see attached")
        await wait_for(pilot, out.exists)
        stored = server.client(ALICE).list_headers().headers[0]
        assert out.read_text().splitlines() == [
            stored.id,
            "bob@localhost",
            "quarterly figures",
            "inbox",
        ]
        assert sent.message_id == stored.message_id
        assert bells == [1]
        screen = app.screen
        assert isinstance(screen, InboxScreen)
        await wait_for(pilot, lambda: screen.mailbox.get(stored.id) is not None)
        assert screen.table.row_count == 1


async def test_a_failing_hook_is_a_notice_and_the_app_goes_on(
    server: Running, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, bells: list[int]
) -> None:
    client_toml(tmp_path, monkeypatch, server, "echo no notifier here >&2; exit 7")
    app = make_app(server, im_notify=True)
    async with app.run_test(size=(100, 30)) as pilot:
        await wait_for(
            pilot, lambda: isinstance(app.screen, InboxScreen) and app.screen.mailbox.loaded
        )
        await live(pilot, server)
        server.client("bob@localhost").send([ALICE], "one", "x")
        await wait_for(
            pilot,
            lambda: "New-mail hook: new-mail hook exited 7: no notifier here" in notes(app),
        )
        server.client("bob@localhost").send([ALICE], "two", "x")
        await wait_for(pilot, lambda: len(bells) == 2)
        assert isinstance(app.screen, InboxScreen)
