"""The TUI's pure helpers (no terminal) and the rule that only the TUI imports Textual."""

from __future__ import annotations

import subprocess
import sys

import pytest

from wsemail.client.mail import Page
from wsemail.protocol.errors import AuthenticationFailed, RequestInvalid
from wsemail.protocol.message import Message, MessageHeader
from wsemail.tui import drafts
from wsemail.tui.delivery import DirectOutcome, Options, e2e_line
from wsemail.tui.feedback import describe
from wsemail.tui.mailbox import AddressBook, Mailbox, format_size, markers
from wsemail.tui.partyline import describe_event
from wsemail.tui.signin import known_login


def header(n: int, *, sender: str = "bob@localhost", seen: bool = False) -> MessageHeader:
    return MessageHeader(
        id=f"id{n}",
        message_id=f"<{n}@localhost>",
        folder="inbox",
        sender=sender,
        to=["alice@localhost"],
        cc=[],
        subject=f"subject {n}",
        date="2025-01-02T03:04:05Z",
        size=10,
        seen=seen,
    )


def test_mailbox_appends_pages_and_prepends_polled_mail() -> None:
    box = Mailbox()
    assert box.more
    box.add_page(Page([header(5), header(4)], "4"))
    box.add_page(Page([header(3)], None))
    assert [h.id for h in box.headers] == ["id5", "id4", "id3"] and not box.more
    assert box.merge_newest(Page([header(7), header(6), header(5)], "5")) == [
        header(7),
        header(6),
    ]
    assert [h.id for h in box.headers][:3] == ["id7", "id6", "id5"]
    assert box.merge_newest(Page([header(7)], "7")) == []


def test_mailbox_asks_for_a_reload_when_a_poll_leaves_a_gap() -> None:
    box = Mailbox()
    box.add_page(Page([header(1)], None))
    assert box.merge_newest(Page([header(9), header(8)], "8")) is None


def test_mailbox_filter_and_seen() -> None:
    box = Mailbox()
    box.add_page(Page([header(1), header(2, sender="carol@localhost")], None))
    assert [h.id for h in box.matching("CAROL")] == ["id2"]
    assert [h.id for h in box.matching("subject 1")] == ["id1"]
    assert markers(box.headers[0]).startswith("●")
    box.mark_seen("id1")
    assert markers(box.headers[0]) == "    "


def test_address_book_completes_known_correspondents() -> None:
    book = AddressBook()
    book.learn([header(1), header(2, sender="bobby@x.test")])
    assert book.complete("BO") == "bob@localhost"
    assert book.complete("bobb") == "bobby@x.test"
    assert book.complete("bob@localhost") is None
    assert book.complete("") is None


def test_reply_reply_all_forward() -> None:
    message = Message(
        **vars(header(1)) | {"cc": ["carol@localhost"], "to": ["alice@localhost", "dan@x.test"]},
        body="line one\n\nline two",
    )
    one = drafts.reply(message, "alice@localhost")
    assert one.to == ["bob@localhost"] and one.cc == [] and one.subject == "Re: subject 1"
    assert "> line one\n>\n> line two" in one.body
    everyone = drafts.reply(message, "alice@localhost", to_all=True)
    assert everyone.cc == ["dan@x.test", "carol@localhost"]
    assert drafts.reply(drafts_message_with("Re: x"), "alice@localhost").subject == "Re: x"
    forwarded = drafts.forward(message)
    assert forwarded.to == [] and forwarded.subject == "Fwd: subject 1"
    assert forwarded.body.endswith("line one\n\nline two")


def drafts_message_with(subject: str) -> Message:
    return Message(**vars(header(1)) | {"subject": subject}, body="")


def test_parse_addresses() -> None:
    assert drafts.parse_addresses(" a@X.test; b@y.test,a@x.test ") == ["a@x.test", "b@y.test"]
    assert drafts.parse_addresses("") == []
    with pytest.raises(RequestInvalid):
        drafts.parse_addresses("nobody")


def test_sizes_and_errors_read_well() -> None:
    assert [format_size(n) for n in (0, 999, 1500, 20_000, 3_300_000)] == [
        "0B",
        "999B",
        "1.5K",
        "20K",
        "3.1M",
    ]
    assert describe(AuthenticationFailed("x")) == "wrong address or password"
    assert describe(ValueError("boom")) == "unexpected ValueError: boom"


def test_known_login_reads_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("WSEMAIL_CLIENT_CONFIG", str(tmp_path / "client.toml"))
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.fail.Keyring")
    monkeypatch.delenv("WSEMAIL_PASSWORD", raising=False)
    monkeypatch.setenv("WSEMAIL_SERVER", "http://127.0.0.1:9/wsemail")
    monkeypatch.setenv("WSEMAIL_USER", "alice@localhost")
    found = known_login()
    assert (found.server, found.user, found.complete) == (
        "http://127.0.0.1:9/wsemail",
        "alice@localhost",
        False,
    )
    monkeypatch.setenv("WSEMAIL_PASSWORD", "pw")
    assert known_login(user="bob@localhost").complete
    assert "pw" not in repr(known_login())


def test_the_tui_command_imports_textual_only_when_run() -> None:
    code = (
        "import sys, wsemail.cli.tui, wsemail.tui, wsemail.tui.mailbox, wsemail.tui.drafts,"
        " wsemail.tui.delivery, wsemail.tui.partyline, wsemail.tui.push;"
        "sys.exit(1 if 'textual' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


def test_delivery_options_refuse_what_cannot_go_together() -> None:
    assert Options().refusal(files=True) is None
    assert Options(encrypt=True).refusal(files=True) is None  # files are encrypted too
    assert "goes as mail" in (Options(encrypt=True, instant=True).refusal(False) or "")
    assert "carries no files" in (Options(instant=True, direct=True).refusal(True) or "")
    assert "a form goes as mail" in (Options(form=True, encrypt=True).refusal(False) or "")
    assert Options(form=True).refusal(files=True) is None


def test_end_to_end_status_reads_like_wsemail_retrieve() -> None:
    assert e2e_line({"encrypted": False, "signed": False, "signer": None}) == ""
    assert (
        e2e_line({"encrypted": True, "signed": True, "signer": "alice@a.test"})
        == "end to end ✓, signed by alice@a.test ✓"
    )
    assert e2e_line({"encrypted": True, "signed": False, "signer": None}) == (
        "end to end ✓, not signed"
    )
    assert e2e_line({"encrypted": True, "error": "no key"}) == "cannot open: no key"
    assert str(DirectOutcome("bob@b.test", "refused", "blocked")) == (
        "bob@b.test: refused (blocked)"
    )


def test_party_line_events_read_as_one_line() -> None:
    assert describe_event({"event": "line", "from": "bob@b.test", "text": "hi"}) == (
        "bob@b.test",
        "hi",
    )
    assert describe_event({"event": "joined", "address": "carol@a.test"}) == (
        "",
        "carol@a.test joined",
    )
    assert describe_event({"event": "closed", "reason": "idle timeout"}) == (
        "",
        "the channel closed: idle timeout",
    )
    assert describe_event({"event": "welcome"}) is None


def test_a_message_whose_signature_check_failed_hides_its_body_until_asked() -> None:
    import asyncio

    from textual.app import App, ComposeResult
    from textual.widgets import Static

    from wsemail.core.provenance import Provenance
    from wsemail.tui.widgets.message.message_view import MessageView

    class Viewer(App[None]):
        def compose(self) -> ComposeResult:
            yield MessageView()

    message = Message(**vars(header(1)) | {"subject": "pay"}, body="Pay mallory now")
    failed = Provenance("failed", reason="digest mismatch")

    async def shown(reveal: bool, proof: Provenance) -> str:
        app = Viewer()
        async with app.run_test(size=(80, 24)):
            view = app.query_one(MessageView)
            view.show(message, proof, reveal=reveal)
            return str(view.query_one("#message-body", Static).render())

    hidden = asyncio.run(shown(False, failed))
    assert "Pay mallory" not in hidden and "FAILED" in hidden and "U" in hidden
    assert "Pay mallory" in asyncio.run(shown(True, failed))
    assert "Pay mallory" in asyncio.run(shown(False, Provenance("verified", signer="a.test")))
