"""Per-user Sieve filters and the vacation responder (issue 18) through real servers, the
client library and the real `wsemail` binary: fileinto, addflag, discard and redirect at
delivery; bad scripts refused whole with line and column (the old one stays, the server
still answers); the dry run; vacation answering once per sender per period, never to
automatic or list mail, never to oneself, never in a loop between two responders, as
real signed mail across domains and through the SMTP gateway."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from email import message_from_bytes
from email.message import EmailMessage
from pathlib import Path

import pytest
from lxml import etree
from stores import cli_sees_store, on_store
from test_federation import Federation, fed  # noqa: F401 -- fed: a fixture
from test_smtp import sink, smtp_client, start_gateway, stop  # noqa: F401 -- sink: a fixture

from wsemail.client.filters import Filters
from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.soap import q
from wsemail.server.addresses import records

from conftest import Cli, Running, start_server, wait_for

pytestmark = pytest.mark.both_stores

SCRIPT = """require ["fileinto", "imap4flags"];
# invoices, starred, into their folder
if header :contains "subject" "invoice" {
    addflag "\\\\Flagged";
    fileinto "Invoices";
    stop;
}
if address :is :domain "from" "junk.test" { discard; }
if header :matches "subject" "*[junk]*" { discard; }
if address :is "from" "carol@localhost" { redirect "bob@localhost"; }
"""


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """conftest's server, on each store (with the plug-ins that run on it)."""
    running = start_server(tmp_path / "server", **on_store(store_url))
    cli_sees_store(running)
    yield running
    running.stop()


def folder(running: Running, user: str, name: str) -> Counter[str]:
    return Counter(h.subject for h in running.client(user).list_headers(name).headers)


def test_filter_files_flags_discards_and_redirects(
    server: Running, cli: Cli, tmp_path: Path
) -> None:
    alice = server.client()
    alice.create_folder("Invoices")
    script = tmp_path / "alice.sieve"
    script.write_text(SCRIPT)
    assert cli("filters", "set", str(script)).stdout.strip() == "filters set"
    assert cli("filters", "show").stdout == SCRIPT

    bob = server.client("bob@localhost")
    bob.send(["alice@localhost"], "Invoice 42", "pay me")
    bob.send(["alice@localhost"], "Lunch?", "at noon")
    bob.send(["alice@localhost"], "cheap [junk] pills", "buy")
    server.client("carol@localhost").send(["alice@localhost"], "For Bob really", "hi")

    assert folder(server, "alice@localhost", "Invoices") == Counter({"Invoice 42": 1})
    assert folder(server, "alice@localhost", "inbox") == Counter({"Lunch?": 1})
    [invoice] = alice.list_headers("Invoices").headers
    assert invoice.flagged and not invoice.seen
    assert folder(server, "bob@localhost", "inbox") == Counter({"For Bob really": 1})
    assert "cheap [junk] pills" not in {
        s for u in ("alice", "bob", "carol") for s in folder(server, f"{u}@localhost", "inbox")
    }


def test_fileinto_a_folder_deleted_later_keeps_in_inbox(
    server: Running, cli: Cli, tmp_path: Path
) -> None:
    alice = server.client()
    alice.create_folder("Later")
    script = tmp_path / "s.sieve"
    script.write_text('require "fileinto";\nfileinto "Later";\n')
    cli("filters", "set", str(script))
    alice.delete_folder("Later")
    server.client("bob@localhost").send(["alice@localhost"], "Where to?", "x")
    assert folder(server, "alice@localhost", "inbox") == Counter({"Where to?": 1})


@pytest.mark.parametrize(
    ("script", "where", "why"),
    [
        ('require "fileinto";\nif true {\n  fileinto "x"\n}\n', "4:1", "expected"),
        ('if header :contains "subject" "a" {\n  frobnicate;\n}\n', "2:3", "unknown command"),
        ('require "vacation";\nkeep;\n', "1:10", '"vacation" is not supported'),
        ('require "imap4flags";\n\naddflag "\\\\Deleted";\n', "3:11", "not supported"),
    ],
)
def test_bad_script_is_refused_whole_with_line_and_column(
    server: Running, cli: Cli, tmp_path: Path, script: str, where: str, why: str
) -> None:
    good = tmp_path / "good.sieve"
    good.write_text("keep;\n")
    cli("filters", "set", str(good))
    bad = tmp_path / "bad.sieve"
    bad.write_text(script)
    refused = cli("filters", "set", str(bad), check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"bad.sieve:{where}:" in refused.stderr and why in refused.stderr
    # the server refuses it too when a client skips the local check
    line, column = where.split(":")
    request = etree.Element(q("SetScript"))
    request.text = script
    with pytest.raises(RequestInvalid) as caught:
        server.client().extension("filters", request)
    assert f"line {line}, column {column}:" in caught.value.reason
    assert cli("filters", "show").stdout == "keep;\n"  # the old one stays active
    server.client("bob@localhost").send(["alice@localhost"], "Still", "here")
    assert folder(server, "alice@localhost", "inbox") == Counter({"Still": 1})


def test_oversized_self_redirecting_and_missing_folder_scripts_are_refused(server: Running) -> None:
    filters = Filters(server.client())
    filters.set_script("keep;\n")
    bob_filters = Filters(server.client("bob@localhost"))
    bob_filters.set_script('redirect "alice@localhost";\n')
    cases = {
        "# " + "x" * (64 << 10) + "\nkeep;\n": "at most 64 KB",
        'redirect "alice@localhost";\n': "redirect to yourself",
        'redirect "bob@localhost";\n': "comes back to you",
        'require "fileinto";\nfileinto "Nowhere";\n': "no such folder",
        'redirect "not an address";\n': "not a valid address",
    }
    for text, why in cases.items():
        request = etree.Element(q("SetScript"))
        request.text = text
        with pytest.raises(RequestInvalid) as caught:
            server.client().extension("filters", request)
        assert why in caught.value.reason
    assert filters.script() == "keep;\n"
    assert server.count("SELECT count(*) FROM sieve_scripts") == 2


def test_filters_test_is_a_dry_run_on_a_message_from_stdin(cli: Cli, tmp_path: Path) -> None:
    script = tmp_path / "s.sieve"
    script.write_text(SCRIPT)
    invoice = "From: Bob <bob@b.test>\nSubject: Invoice 7\n\nx\n"
    assert cli("filters", "test", str(script), input=invoice).stdout == (
        "fileinto Invoices flags \\Flagged\n"
    )
    junk = "From: x@junk.test\nSubject: hi\n\nx\n"
    assert cli("filters", "test", str(script), input=junk).stdout == "discard\n"
    plain = "From: dan@c.test\nSubject: hi\n\nx\n"
    assert cli("filters", "test", str(script), input=plain).stdout == "keep\n"
    carol = "From: carol@localhost\nSubject: hi\n\nx\n"
    assert cli("filters", "test", str(script), input=carol).stdout == "redirect bob@localhost\n"
    bad = tmp_path / "bad.sieve"
    bad.write_text("keep\n")
    refused = cli("filters", "test", str(bad), input=plain, check=False)
    assert refused.returncode == 1 and "bad.sieve:" in refused.stderr


# vacation -------------------------------------------------------------------------------
def test_vacation_answers_once_per_sender_per_period(server: Running, cli: Cli) -> None:
    shown = cli(
        "vacation", "on", "--subject", "Away", "--body", "Back on Monday.", "--days", "3"
    ).stdout
    assert "vacation: on, one reply per sender per 3 day(s)" in shown
    bob = server.client("bob@localhost")
    bob.send(["alice@localhost"], "One", "x")
    bob.send(["alice@localhost"], "Two", "x", cc=["carol@localhost"])
    server.client("carol@localhost").send(["alice@localhost"], "Three", "x")
    server.client().send(["alice@localhost"], "Note to self", "x")  # never to oneself
    server.client("bob@localhost").send(["carol@localhost"], "Bcc-like", "x")
    assert folder(server, "bob@localhost", "inbox") == Counter({"Away": 1})
    assert folder(server, "carol@localhost", "inbox")["Away"] == 1
    [reply] = [h for h in bob.list_headers().headers if h.subject == "Away"]
    assert reply.sender == "alice@localhost"
    assert bob.retrieve(reply.id).body == "Back on Monday."
    # the period passes (the responder's record of bob made 4 days older)
    server.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute("UPDATE vacation_replies SET at = at - 4 * 86400")
    )
    bob.send(["alice@localhost"], "Four", "x")
    assert folder(server, "bob@localhost", "inbox") == Counter({"Away": 2})
    assert "vacation: off" in cli("vacation", "off").stdout
    bob.send(["alice@localhost"], "Five", "x")
    assert folder(server, "bob@localhost", "inbox") == Counter({"Away": 2})
    refused = cli("vacation", "on", "--body", "x", "--until", "2001-01-01", check=False)
    assert refused.returncode == 4 and "in the past" in refused.stderr
    assert "vacation: off" in cli("vacation", "show").stdout


def test_vacation_reply_crosses_domains_signed_and_two_responders_do_not_loop(
    fed: Federation,  # noqa: F811
) -> None:
    alice = fed.a.client("alice@a.test")
    bob = fed.b.client("bob@b.test")
    Filters(alice).set_vacation("Alice is away", "Back soon.", days=7)
    Filters(bob).set_vacation("Bob is away", "Back later.", days=7)
    bob.send(["alice@a.test"], "Hello Alice", "x")
    wait_for(lambda: any(h.subject == "Alice is away" for h in bob.list_headers().headers), "reply")
    wait_for(
        lambda: all(r.count("SELECT count(*) FROM queue") == 0 for r in fed.servers.values()),
        "both queues empty",
    )
    [reply] = [h for h in bob.list_headers().headers if h.subject == "Alice is away"]
    message = bob.retrieve(reply.id)
    assert message.sender == "alice@a.test" and message.origin == "a.test"
    assert message.header("Auto-Submitted") == ["auto-replied"]
    bob.set_trust_roots([fed.ca / "root.pem"])
    provenance, _ = bob.verify(message)  # the header is in what a.test signed
    assert provenance.status == "verified" and provenance.signer == "a.test"
    # bob's responder saw Auto-Submitted: alice got no "Bob is away"
    assert [h.subject for h in alice.list_headers().headers] == ["Hello Alice"]
    bob.send(["alice@a.test"], "Again", "x")  # within the period: no second reply
    wait_for(lambda: "Again" in [h.subject for h in alice.list_headers().headers], "again")
    wait_for(
        lambda: all(r.count("SELECT count(*) FROM queue") == 0 for r in fed.servers.values()),
        "both queues empty",
    )
    assert [h.subject for h in bob.list_headers().headers].count("Alice is away") == 1


def test_vacation_never_answers_list_or_automatic_legacy_mail(
    tmp_path: Path,
    sink: tuple[object, int],  # noqa: F811 -- the fixture of test_smtp
) -> None:
    received = sink[0]
    running = start_gateway(tmp_path, sink[1])
    try:
        Filters(running.client()).set_vacation("Away", "Back soon.")
        with smtp_client(running) as client:
            for extra, subject in (
                ({"List-Id": "<news.legacy.test>"}, "Newsletter"),
                ({"Precedence": "bulk"}, "Bulk"),
                ({"Auto-Submitted": "auto-generated"}, "Robot"),
                ({}, "Personal"),
            ):
                mail = EmailMessage()
                for name, value in {
                    "From": "Carol <carol@legacy.test>",
                    "To": "alice@localhost",
                    "Subject": subject,
                    "Message-ID": f"<{subject}@legacy.test>",
                    **extra,
                }.items():
                    mail[name] = value
                mail.set_content("hello")
                client.sendmail("carol@legacy.test", ["alice@localhost"], mail.as_bytes())
        assert len(running.client().list_headers().headers) == 4
        # an alias takes legacy mail too (RCPT accepts a mapped address)
        running.controller.server.store.transact_sync(
            lambda tx: records.put(
                tx, records.Mapped("team@localhost", "alias", ("bob@localhost", "carol@localhost"))
            )
        )
        team = EmailMessage()
        team["From"], team["To"], team["Subject"] = "carol@legacy.test", "team@localhost", "Team"
        team["Precedence"] = "list"  # and nobody answers list mail
        team.set_content("hi")
        with smtp_client(running) as client:
            client.sendmail("carol@legacy.test", ["team@localhost"], team.as_bytes())
            client.mail("carol@legacy.test")
            assert client.rcpt("nobody@localhost")[0] == 550
            client.rset()
        for user in ("bob@localhost", "carol@localhost"):
            assert [h.subject for h in running.client(user).list_headers().headers] == ["Team"]
        wait_for(lambda: received.received, "the reply to reach the legacy server")  # type: ignore[attr-defined]
        [envelope] = received.received  # type: ignore[attr-defined]
        assert envelope.rcpt_tos == ["carol@legacy.test"]
        reply = message_from_bytes(envelope.original_content)
        assert reply["Auto-Submitted"] == "auto-replied" and reply["Subject"] == "Away"
    finally:
        stop(running)
