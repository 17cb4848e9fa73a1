"""Search and conversations in the TUI (issue 17), driven by Textual's pilot against a real
server: / searches the server, a result opens and is answered, the reply joins the
conversation (sent through the server draft or not) and the original is marked answered; a
refused query is a notice; t shows conversations that expand; the message view shows a
whole thread."""

from __future__ import annotations

import pytest
from textual.widgets import Input, TextArea
from tui_helpers import make_app, wait_for

from wsemail.client.replies import reply
from wsemail.protocol.message import SEALED_MARKER, Message
from wsemail.tui.app import WsemailApp
from wsemail.tui.conversations import is_thread_key, reply_order
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen
from wsemail.tui.screens.thread import ThreadScreen

from conftest import Running

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def inbox(app: WsemailApp) -> InboxScreen:
    screen = app.screen
    assert isinstance(screen, InboxScreen), screen
    return screen


def settled(app: WsemailApp, rows: int | None = None) -> bool:
    """The inbox screen shows what it loaded (a folder, a search or conversations)."""
    screen = app.screen
    if not isinstance(screen, InboxScreen) or screen.loading:
        return False
    loaded = screen.threads.loaded if screen.showing_threads else screen.mailbox.loaded
    return loaded and (rows is None or screen.table.row_count == rows)


def rows(app: WsemailApp) -> list[str]:
    table = inbox(app).table
    return [str(table.get_row_at(i)[2]) for i in range(table.row_count)]


def status(app: WsemailApp) -> str:
    return str(app.screen.query_one("#inbox-status").render())


def notes(app: WsemailApp) -> list[str]:
    return [str(n.message) for n in app._notifications]


def autosaved(app: WsemailApp) -> bool:
    screen = app.screen
    return (
        isinstance(screen, ComposeScreen)
        and screen.keeper.saved is not None
        and not screen.keeper.changed(screen.content)
        and not screen.saving
    )


@pytest.mark.parametrize("as_draft", [True, False], ids=["send-draft", "no-draft-yet"])
async def test_search_open_a_result_and_the_reply_joins_its_conversation(
    server: Running, as_draft: bool
) -> None:
    bob = server.client("bob@localhost")
    bob.send(["alice@localhost"], "budget 2027", "the quarterly numbers are in")
    bob.send(["alice@localhost"], "lunch", "noon?")
    sealed = f"{SEALED_MARKER}><e2e:Cipher>quarterly</e2e:Cipher></e2e:Sealed>"
    bob.send(["alice@localhost"], "(encrypted message)", sealed)
    app = make_app(server, autosave_seconds=0.1 if as_draft else 0)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: settled(app, 3))
        await pilot.press("slash")
        assert inbox(app).query_one("#filter", Input).has_focus
        await pilot.press(*"quarterly from:bob", "enter")
        await wait_for(pilot, lambda: settled(app, 1) and inbox(app).search_query)
        assert rows(app) == ["budget 2027"]
        assert "Search: quarterly from:bob" in str(app.screen.query_one("#folder-label").render())
        assert "1 found" in status(app) and "1 encrypted message was not searched" in status(app)
        await pilot.press("enter")  # opens the result
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))
        compose = app.screen
        assert isinstance(compose, ComposeScreen)
        assert compose.query_one("#compose-subject", Input).value == "Re: budget 2027"
        assert "> the quarterly numbers are in" in compose.query_one("#compose-body", TextArea).text
        await pilot.press(*"Looks right.")
        if as_draft:
            await wait_for(pilot, lambda: autosaved(app))  # sent with SendDraft
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.press("escape")  # back to the results
        await wait_for(pilot, lambda: settled(app, 1) and inbox(app).search_query)
        await pilot.press("escape")  # back to the folder
        await wait_for(pilot, lambda: settled(app, 3) and inbox(app).search_query is None)
    alice = server.client()
    original = next(h for h in alice.iter_headers() if h.subject == "budget 2027")
    assert original.answered and original.seen
    conversation = alice.thread(original.id, peek=True)
    assert [m.subject for m in conversation] == ["budget 2027", "Re: budget 2027"]
    sent = conversation[1]
    assert sent.folder == "sent" and sent.in_reply_to == original.message_id
    assert sent.references == [original.message_id] and sent.body.startswith("Looks right.")
    (got,) = bob.list_headers().headers
    assert [m.subject for m in bob.thread(got.id, peek=True)] == ["budget 2027", "Re: budget 2027"]
    assert list(alice.iter_headers("Drafts")) == []  # the draft (if any) left with the send


async def test_a_refused_query_is_a_notice_and_the_folder_stays(server: Running) -> None:
    server.client("bob@localhost").send(["alice@localhost"], "hello", "hi")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: settled(app, 1))
        await pilot.press("slash", *"is:bogus", "enter")
        await wait_for(pilot, lambda: any("Cannot search" in n for n in notes(app)))
        note = next(n for n in notes(app) if "Cannot search" in n)
        assert "is: is one of unread" in note  # the server's reason
        await wait_for(pilot, lambda: settled(app, 1) and inbox(app).search_query is None)
        assert rows(app) == ["hello"]
        await pilot.press("slash", *"nothing-like-this", "enter")  # the app still searches
        await wait_for(pilot, lambda: settled(app, 0) and inbox(app).search_query)
        assert "0 found" in status(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: settled(app, 1) and inbox(app).search_query is None)
    assert server.client().search("hello").headers  # the server still answers


async def test_conversations_expand_and_a_thread_shows_whole(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    bob.send(["alice@localhost"], "trip", "train or car?")
    first = alice.list_headers().headers[0]
    reply(alice, first.id, "train")  # alice's answer is in her sent folder
    answered = bob.list_headers().headers[0]
    reply(bob, answered.id, "train it is")
    bob.send(["alice@localhost"], "unrelated", "x")
    app = make_app(server)
    async with app.run_test(size=(120, 36)) as pilot:
        await wait_for(pilot, lambda: settled(app, 3))
        await pilot.press("t")
        await wait_for(pilot, lambda: settled(app, 2) and inbox(app).showing_threads)
        assert rows(app) == ["▸ unrelated", "▸ trip (3)"]
        assert "conversations" in str(app.screen.query_one("#folder-label").render())
        await pilot.press("down", "enter")  # expands "trip"
        await wait_for(pilot, lambda: settled(app, 5))
        assert rows(app) == [
            "▸ unrelated",
            "▾ trip (3)",
            "  ↳ trip",
            "  ↳ Re: trip",
            "  ↳ Re: trip",
        ]
        assert is_thread_key(inbox(app).table.selected_id or "")
        await pilot.press("space")  # collapses it again
        await wait_for(pilot, lambda: settled(app, 2))
        await pilot.press("space", "down", "down", "down", "enter")  # bob's last reply
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen) and app.screen.message)
        screen = app.screen
        assert isinstance(screen, MessageScreen) and screen.message is not None
        assert screen.message.body.startswith("train it is")
        await pilot.press("t")  # the whole conversation
        await wait_for(pilot, lambda: isinstance(app.screen, ThreadScreen) and app.screen.items)
        thread = app.screen
        assert isinstance(thread, ThreadScreen)
        shown = [(depth, m.subject, m.sender) for depth, m, _ in thread.items]
        assert shown == [
            (0, "trip", "bob@localhost"),
            (1, "Re: trip", "alice@localhost"),
            (2, "Re: trip", "bob@localhost"),
        ]
        assert all(proof.status != "failed" for _, _, proof in thread.items)
        await pilot.press("escape")
        await wait_for(pilot, lambda: isinstance(app.screen, MessageScreen))
        await pilot.press("escape")
        await wait_for(pilot, lambda: settled(app, 5))
        await pilot.press("t")  # back to messages
        await wait_for(pilot, lambda: settled(app, 3) and not inbox(app).showing_threads)


def test_reply_order_keeps_replies_under_what_they_answer() -> None:
    def message(name: str, answers: str = "", refs: tuple[str, ...] = ()) -> Message:
        return Message(
            id=name,
            message_id=f"<{name}@x.test>",
            folder="inbox",
            sender="bob@x.test",
            to=[],
            cc=[],
            subject=name,
            date="2026-01-01T00:00:00Z",
            size=0,
            seen=True,
            body="",
            in_reply_to=f"<{answers}@x.test>" if answers else None,
            references=[f"<{r}@x.test>" for r in refs],
        )

    oldest_first = [
        message("a"),
        message("b", "a"),
        message("c", "a"),
        message("d", "b"),
        message("e", refs=("a", "c")),  # no In-Reply-To: the newest reference here
        message("f", "gone"),  # answers a message not here: a root of its own
    ]
    order = [(depth, m.id) for depth, m in reply_order(oldest_first)]
    assert order == [(0, "a"), (1, "b"), (2, "d"), (1, "c"), (2, "e"), (0, "f")]
    loop = [message("x", "y"), message("y", "x")]
    assert sorted(m.id for _, m in reply_order(loop)) == ["x", "y"]  # each once
