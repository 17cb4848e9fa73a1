"""Drafts kept on the server (issue 17), through the real server, the client library and
the `wsemail` binary: saved, replaced, listed, sent once (leaving Drafts in the same step),
never relayed, the owner's only, within the quota; each refusal changes nothing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wsemail.client.attachments import Attachments
from wsemail.client.drafts import Drafts, from_text, to_text
from wsemail.protocol.drafts import SavedDraft
from wsemail.protocol.errors import (
    MessageTooLarge,
    NotFound,
    QuotaExceeded,
    RemoteFault,
    RequestInvalid,
    UnknownRecipient,
    UsageError,
)
from wsemail.protocol.message import Draft

from conftest import Cli, Running, start_server, wsemail_binary

pytestmark = pytest.mark.both_stores  # the server fixture: on SQLite and on PostgreSQL


def _state(server: Running) -> Any:
    def read(tx: Any) -> Any:
        return (
            tx.conn.execute(
                "SELECT id, owner, folder, subject, body, to_json, draft FROM messages ORDER BY seq"
            ).fetchall(),
            tx.conn.execute("SELECT count(*) FROM queue").fetchone()[0],
        )

    return server.controller.server.store.transact_sync(read)


def _refused(server: Running, call: Any, fault: type[RemoteFault]) -> str:
    before = _state(server)
    with pytest.raises(fault) as caught:
        call()
    assert type(caught.value) is fault, caught.value
    assert _state(server) == before
    assert server.client("carol@localhost").folders()  # still serving
    return str(caught.value)


def test_a_draft_is_saved_replaced_listed_and_sent_once(server: Running) -> None:
    alice = server.client()
    drafts = Drafts(alice)
    first = drafts.save(SavedDraft(subject="plans", body="half a thought"))  # no recipient yet
    assert first.id and first.message_id and first.saved
    again = drafts.save(
        SavedDraft(to=["bob@localhost"], cc=["carol@localhost"], subject="plans", body="whole"),
        draft_id=first.id,
    )
    assert again.id == first.id and again.message_id == first.message_id
    (listed,) = drafts.list()
    assert (listed.id, listed.to, listed.cc, listed.subject) == (
        first.id,
        ["bob@localhost"],
        ["carol@localhost"],
        "plans",
    )
    assert drafts.get(first.id).body == "whole"
    (header,) = alice.list_headers("Drafts").headers
    assert header.id == first.id and header.seen
    proof, _ = alice.verify(alice.retrieve(first.id))
    assert proof.status == "draft" and "not signed" in str(proof)
    assert server.count("SELECT count(*) FROM queue") == 0

    sent = drafts.send(first.id)
    assert sent.id == first.id and sent.message_id == first.message_id
    assert alice.list_headers("Drafts").headers == []
    assert [h.id for h in alice.list_headers("sent").headers] == [first.id]
    assert drafts.send(first.id) == sent  # a retry after a lost answer: the same, sent once
    for user in ("bob@localhost", "carol@localhost"):
        (got,) = server.client(user).list_headers().headers
        assert got.subject == "plans" and got.message_id == first.message_id
        assert server.client(user).verify(server.client(user).retrieve(got.id))[0].status == (
            "local"
        )
    with pytest.raises(NotFound):
        drafts.get(first.id)  # the sent copy is no draft


def test_a_retried_first_save_replaces_the_draft_it_made(server: Running) -> None:
    drafts = Drafts(server.client())
    one = SavedDraft(to=["bob@localhost"], subject="v1", message_id="<retry-1@localhost>")
    first = drafts.save(one)
    second = drafts.save(SavedDraft(to=["bob@localhost"], subject="v2", message_id=one.message_id))
    assert second.id == first.id
    assert [d.subject for d in drafts.list()] == ["v2"]


def test_drafts_are_not_relayed_and_only_their_owner_finds_them(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    mine = Drafts(alice).save(
        SavedDraft(to=["dora@elsewhere.test"], subject="zephyr", body="quokka plans")
    )
    assert server.count("SELECT count(*) FROM queue") == 0  # a draft goes nowhere
    assert [h.id for h in alice.search("quokka").headers] == [mine.id]
    assert bob.search("quokka").headers == []
    theirs = Drafts(bob)
    for call in (
        lambda: theirs.get(mine.id),
        lambda: theirs.send(mine.id),
        lambda: theirs.delete(mine.id),
        lambda: theirs.save(SavedDraft(subject="mine now"), draft_id=mine.id),
    ):
        assert "no such draft" in _refused(server, call, NotFound)
    assert Drafts(alice).get(mine.id).body == "quokka plans"


def test_sending_a_draft_is_all_or_nothing(server: Running) -> None:
    alice = server.client()
    drafts = Drafts(alice)
    bad = drafts.save(SavedDraft(to=["bob@localhost", "nobody@localhost"], subject="oops"))
    _refused(server, lambda: drafts.send(bad.id), UnknownRecipient)
    assert [d.id for d in drafts.list()] == [bad.id]  # still a draft, nothing sent
    assert alice.list_headers("sent").headers == []
    assert server.client("bob@localhost").list_headers().headers == []


def test_draft_refusals_change_nothing(server: Running) -> None:
    alice = server.client()
    drafts = Drafts(alice)
    kept = drafts.save(SavedDraft(subject="kept"))
    empty = drafts.save(SavedDraft(subject="nobody yet"))
    bob_id = server.client("bob@localhost").send(["alice@localhost"], "hi").id
    inbox_id = alice.list_headers().headers[0].id
    for bad in (
        lambda: drafts.save(SavedDraft(to=["not an address"])),
        lambda: drafts.save(SavedDraft(subject="two\nlines")),
        lambda: drafts.save(SavedDraft(attachments=["x"] * 33)),
        lambda: drafts.send(empty.id),  # no recipient
        lambda: alice.move([inbox_id], "Drafts"),  # Drafts holds drafts only
        lambda: alice.move([kept.id], "Archive"),  # a draft goes to Trash only
    ):
        _refused(server, bad, RequestInvalid)
    for missing in (
        lambda: drafts.get(inbox_id),  # a message, not a draft
        lambda: drafts.send("no-such-id"),
        lambda: drafts.save(SavedDraft(subject="x"), draft_id="no-such-id"),
    ):
        _refused(server, missing, NotFound)
    assert bob_id
    # a draft in Trash is not sent until it is back in Drafts; saving it brings it back
    assert alice.delete(kept.id) == "trashed"
    assert "Trash" in _refused(server, lambda: drafts.send(kept.id), RequestInvalid)
    assert alice.move([kept.id], "Drafts") == 1
    assert alice.delete(kept.id) == "trashed"
    drafts.save(SavedDraft(to=["bob@localhost"], subject="kept"), draft_id=kept.id)
    assert {d.id for d in drafts.list()} == {kept.id, empty.id}
    drafts.delete(empty.id)
    assert [d.id for d in drafts.list()] == [kept.id]


def test_drafts_count_in_the_quota_and_the_size_limit(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", store_url=store_url, quota_per_user_bytes=2000)
    try:
        drafts = Drafts(running.client())
        small = drafts.save(SavedDraft(subject="small", body="x" * 1000))
        message = _refused(running, lambda: drafts.save(SavedDraft(body="y" * 1500)), QuotaExceeded)
        assert "quota" in message
        # replacing counts only what it adds
        drafts.save(SavedDraft(subject="small", body="x" * 1900), draft_id=small.id)
        big = "z" * ((2 << 20) + 1)  # the size-limit plug-in's 2 MiB
        _refused(
            running, lambda: drafts.save(SavedDraft(body=big), draft_id=small.id), MessageTooLarge
        )
    finally:
        running.stop()


def test_bcc_is_kept_and_sent_as_the_server_allows(server: Running) -> None:
    drafts = Drafts(server.client())
    saved = drafts.save(
        SavedDraft(to=["bob@localhost"], bcc=["carol@localhost"], subject="quiet copy")
    )
    assert drafts.get(saved.id).bcc == ["carol@localhost"]
    if "bcc" in Draft.__dataclass_fields__:  # the message format knows Bcc
        drafts.send(saved.id)
        (got,) = server.client("carol@localhost").list_headers().headers
        assert got.subject == "quiet copy" and "carol@localhost" not in got.to + got.cc
    else:  # never sent without its Bcc
        assert "Bcc" in _refused(server, lambda: drafts.send(saved.id), RequestInvalid)


def test_a_drafted_upload_is_sent_as_an_on_demand_attachment(
    server: Running, tmp_path: Path
) -> None:
    alice = server.client()
    path = tmp_path / "figures.csv"
    path.write_text("a,b\n1,2\n")
    guid = Attachments(alice).upload(path).guid
    drafts = Drafts(alice)
    saved = drafts.save(SavedDraft(to=["bob@localhost"], subject="figures", attachments=[guid]))
    assert drafts.get(saved.id).attachments == [guid]
    drafts.send(saved.id)
    bob = server.client("bob@localhost")
    (got,) = bob.list_headers().headers
    assert [ref.guid for ref in Attachments(bob).list(got.id).refs] == [guid]


def test_the_text_form_round_trips_and_names_a_bad_line() -> None:
    draft = SavedDraft(to=["bob@b.test"], cc=["c@c.test"], subject="s", body="line\n\nmore\n")
    assert from_text(to_text(draft), SavedDraft()) == draft
    edited = from_text("to: x@y.test; z@y.test\nSubject:  new \n\nbody", draft)
    assert edited.to == ["x@y.test", "z@y.test"] and edited.cc == [] and edited.subject == "new"
    for bad in ("From: me@x.test\n\nbody", "To bob@b.test\n\nx", "To: bob\n\nx", "Cc:\nCc:\n\n"):
        with pytest.raises(UsageError):
            from_text(bad, draft)


EDITOR = """
import pathlib, sys
path = pathlib.Path(sys.argv[1])
text = path.read_text()
path.write_text(text.replace("Subject: first", "Subject: edited").replace("Cc: ", {cc}))
"""


def _editor(tmp_path: Path, cc: str = "Cc: carol@localhost") -> str:
    script = tmp_path / "editor.py"
    script.write_text(EDITOR.replace("{cc}", repr(cc)))
    return f"{sys.executable} {script}"


def _edit(cli: Cli, draft_id: str, editor: str) -> subprocess.CompletedProcess[str]:
    env = {**cli.env("alice@localhost"), "EDITOR": editor}
    return subprocess.run(
        [wsemail_binary(), "draft", "edit", draft_id],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_draft_commands_through_the_binary(cli: Cli, tmp_path: Path) -> None:
    draft_id = cli("draft", "save", "--to", "bob@localhost", "--subject", "first").stdout.strip()
    cli("draft", "save", "--id", draft_id, input="the body from stdin\n")
    listed = cli("draft", "list").stdout.split()
    assert listed[0] == draft_id and listed[-1] == "first"
    edited = _edit(cli, draft_id, _editor(tmp_path))
    assert edited.returncode == 0, edited.stderr
    got = Drafts(cli.server.client()).get(draft_id)
    assert (got.subject, got.cc, got.body) == (
        "edited",
        ["carol@localhost"],
        "the body from stdin\n",
    )
    assert cli("draft", "send", draft_id).stdout.strip() == draft_id
    assert cli("draft", "list", "--json").stdout == ""
    bob = cli.server.client("bob@localhost")
    assert [h.subject for h in bob.list_headers().headers] == ["edited"]


def test_draft_commands_refuse_bad_input_in_one_line(cli: Cli, tmp_path: Path) -> None:
    drafts = Drafts(cli.server.client())
    draft_id = drafts.save(SavedDraft(to=["bob@localhost"], subject="first")).id
    before = _state(cli.server)
    refused = _edit(cli, draft_id, _editor(tmp_path, cc="Bogus: header\n"))
    gone = cli("draft", "send", "no-such-draft", check=False)
    bad = cli("draft", "save", "--to", "not an address", check=False)
    for result, code, text in (
        (refused, 1, "not saved"),
        (gone, 4, "no such draft"),
        (bad, 1, "not a valid address"),
    ):
        assert result.returncode == code and text in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert _state(cli.server) == before


def test_a_reply_draft_keeps_its_conversation_and_sending_it_answers(cli: Cli) -> None:
    server = cli.server
    server.client("bob@localhost").send(["alice@localhost"], "plans", "friday?")
    alice = server.client()
    original = alice.retrieve(alice.list_headers().headers[0].id, peek=True)
    drafts = Drafts(alice)
    draft_id = drafts.save(
        SavedDraft(
            to=["bob@localhost"],
            subject="Re: plans",
            in_reply_to=original.message_id,
            references=[original.message_id],
        )
    ).id
    # editing it from the binary (what no option gives is kept) keeps its conversation
    cli("draft", "save", "--id", draft_id, "--subject", "Re: plans!", input="friday it is\n")
    kept = drafts.get(draft_id)
    assert (kept.in_reply_to, kept.references, kept.subject) == (
        original.message_id,
        [original.message_id],
        "Re: plans!",
    )
    assert kept.as_dict()["in_reply_to"] == original.message_id
    bad = SavedDraft(to=["bob@localhost"], in_reply_to="not-an-id")
    assert "InReplyTo" in _refused(server, lambda: drafts.save(bad), RequestInvalid)
    assert cli("draft", "send", draft_id).stdout.strip() == draft_id
    assert [m.subject for m in alice.thread(original.id, peek=True)] == ["plans", "Re: plans!"]
    header = alice.list_headers().headers[0]
    assert header.answered and header.seen
    bob = server.client("bob@localhost")
    reply = bob.retrieve(bob.list_headers().headers[0].id)
    assert reply.in_reply_to == original.message_id
    assert [m.subject for m in bob.thread(reply.id, peek=True)] == ["plans", "Re: plans!"]
