"""Personal contacts on the server (issue 18) through a real server and the real
`wsemail` binary: add, edit, list, remove; vCard import and export; the addresses one
sent mail to offered for adding; completion in the order contacts → directory → sent to;
and every refusal with nothing stored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from stores import cli_sees_store, on_store

from wsemail.client.completion import Completer, complete
from wsemail.client.contacts import Contact, Contacts
from wsemail.client.directory import AddressDirectory
from wsemail.client.vcard import read_vcards
from wsemail.protocol.errors import NotFound, RequestInvalid
from wsemail.protocol.soap import element, q
from wsemail.server.accounts import set_user

from conftest import PASSWORD, Cli, Running, start_server

pytestmark = pytest.mark.both_stores

VCARDS = """BEGIN:VCARD
VERSION:3.0
FN:Bob Example
N:Example;Bob;;;
EMAIL;TYPE=INTERNET:bob@b.test
EMAIL:robert@b.test
ORG:Example Inc
NOTE:met at the conference\\nlikes tea
END:VCARD
BEGIN:VCARD
VERSION:4.0
FN:Ünïcödé Person
EMAIL:u@c.test
END:VCARD
BEGIN:VCARD
VERSION:3.0
FN:Phone Only
TEL:+1 555 0100
END:VCARD
"""


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """conftest's server, on each store (with the plug-ins that run on it)."""
    running = start_server(tmp_path / "server", **on_store(store_url))
    cli_sees_store(running)
    yield running
    running.stop()


def contacts_of(running: Running, owner: str) -> int:
    return running.count(f"SELECT count(*) FROM contacts WHERE owner='{owner}'")


def lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines()]


def test_contacts_add_edit_list_remove_through_the_binary(cli: Cli) -> None:
    added = json.loads(
        cli(
            "contacts", "add", "bob@b.test", "--name", "Bob Example", "--org", "Ex", "--json"
        ).stdout
    )
    assert added["emails"] == ["bob@b.test"] and added["name"] == "Bob Example" and added["id"]
    cli("contacts", "add", "dora@d.test", "dee@d.test", "--name", "Dora")
    listed = lines(cli("contacts", "list", "--json").stdout)
    assert [c["name"] for c in listed] == ["Bob Example", "Dora"]
    assert [c.name for c in Contacts(cli.server.client()).page("dee").contacts] == ["Dora"]
    edited = json.loads(
        cli("contacts", "edit", "bob@b.test", "--name", "Robert", "--email", "rob@b.test",
            "--json").stdout
    )  # fmt: skip
    assert edited["id"] == added["id"] and edited["emails"] == ["rob@b.test"]
    assert edited["org"] == "Ex"  # what was not named stays
    twice = cli("contacts", "add", "rob@b.test", check=False)
    assert twice.returncode == 4 and "already in your contacts" in twice.stderr
    assert cli("contacts", "remove", added["id"]).stdout.strip() == f"removed {added['id']}"
    assert [c["name"] for c in lines(cli("contacts", "list", "--json").stdout)] == ["Dora"]
    gone = cli("contacts", "remove", added["id"], check=False)
    assert gone.returncode == 4 and gone.stderr.strip() == "wsemail: no such contact of yours"


def test_vcard_round_trip_through_the_binary(cli: Cli, tmp_path: Path) -> None:
    source = tmp_path / "in.vcf"
    source.write_text(VCARDS, encoding="utf-8")
    imported = cli("contacts", "import", str(source))
    assert imported.stdout.strip() == "imported 2 new, updated 0"
    assert "skipped 1 card(s) without an e-mail address" in imported.stderr
    out = tmp_path / "out.vcf"
    cli("contacts", "export", str(out))
    again = read_vcards(out.read_text(encoding="utf-8")).contacts
    assert [(c.name, c.emails, c.org, c.note) for c in again] == [
        ("Bob Example", ["bob@b.test", "robert@b.test"], "Example Inc",
         "met at the conference\nlikes tea"),
        ("Ünïcödé Person", ["u@c.test"], "", ""),
    ]  # fmt: skip
    # importing the export changes nothing: each card finds its contact by address
    second = json.loads(cli("contacts", "import", str(out), "--json").stdout)
    assert second == {"added": 0, "updated": 2, "skipped": 0}
    stdout = cli("contacts", "export").stdout
    assert stdout.count("BEGIN:VCARD") == 2 and "UID:" in stdout
    piped = cli("contacts", "import", "-", "--json", input=stdout, user="bob@localhost")
    assert json.loads(piped.stdout)["added"] == 2


def test_a_file_that_is_not_vcard_is_refused_with_nothing_stored(cli: Cli, tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("dear diary,\ntoday nothing happened\n", encoding="utf-8")
    calendar = tmp_path / "cal.ics"
    calendar.write_text("BEGIN:VCALENDAR\nVERSION:2.0\nEND:VCALENDAR\n", encoding="utf-8")
    binary = tmp_path / "photo.vcf"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe")
    one_bad = tmp_path / "one-bad.vcf"  # the first card is fine, the second is not
    one_bad.write_text(VCARDS.replace("EMAIL:u@c.test", "EMAIL:not an address"), encoding="utf-8")
    too_long = tmp_path / "long.vcf"
    too_long.write_text(VCARDS.replace("FN:Bob Example", "FN:" + "B" * 101), encoding="utf-8")
    for path, says in (
        (bad, "is not a vCard file"),
        (calendar, "is not a vCard file"),
        (binary, "cannot read"),
        (one_bad, "card 2 ('Ünïcödé Person'): not a valid address"),
        (too_long, "card 1 ("),
        (tmp_path / "missing.vcf", "cannot read"),
    ):
        result = cli("contacts", "import", str(path), check=False)
        assert result.returncode == 1, (path, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("wsemail: ")
        assert says in result.stderr and "Traceback" not in result.stderr
    assert contacts_of(cli.server, "alice@localhost") == 0
    assert cli("contacts", "list").stdout == ""  # and the server still answers


def test_over_long_names_and_addresses_are_refused(cli: Cli, server: Running) -> None:
    for args in (
        ["contacts", "add", "bob@b.test", "--name", "x" * 101],
        ["contacts", "add", "a" * 65 + "@b.test"],
        ["contacts", "add", "bob@" + "b" * 320 + ".test"],
        ["contacts", "add", "bob@b.test", "--name", "tab\there"],
    ):
        result = cli(*args, check=False)
        assert result.returncode == 2, args
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("wsemail: ")
    # the server refuses the same without the client's checks, and stores nothing
    alice = server.client("alice@localhost")
    alice.list_headers()
    before = server.stored()
    for name, address in (("x" * 101, "bob@b.test"), ("Bob", "b" * 400 + "@b.test")):
        request = etree.Element(q("Add"))
        node = element(request, "Contact")
        element(node, "Name", name)
        element(node, "Email", address)
        with pytest.raises(RequestInvalid):
            alice.extension("contacts", request)
    assert server.stored() == before and contacts_of(server, "alice@localhost") == 0
    assert Contacts(alice).page().contacts == []


def test_another_users_contacts_are_never_visible(server: Running) -> None:
    alice = Contacts(server.client("alice@localhost"))
    mine = alice.add(Contact("Secret Friend", ["friend@x.test"], note="private"))
    bob = Contacts(server.client("bob@localhost"))
    assert bob.page().contacts == [] and bob.export() == []
    assert bob.page("secret").contacts == []
    for call in (
        lambda: bob.get(mine.id),
        lambda: bob.get("friend@x.test"),
        lambda: bob.remove(mine.id),
        lambda: bob.edit(mine.id, name="Taken Over"),
    ):
        with pytest.raises(NotFound):
            call()
    # bob may hold the same address as a contact of his own; alice's stays as it was
    bob.add(Contact("Bob's Friend", ["friend@x.test"]))
    assert alice.get(mine.id).name == "Secret Friend"
    assert [c.name for c in bob.export()] == ["Bob's Friend"]
    # an address is one contact's whatever its case (SQLite: COLLATE NOCASE; PostgreSQL: a
    # unique index on lower(address)), as written when shown
    bob.add(Contact("Mixed Case", ["Pat.Smith@x.test"]))
    with pytest.raises(RequestInvalid, match="already in your contacts"):
        bob.add(Contact("Again", ["pat.smith@x.test"]))
    assert bob.get("PAT.SMITH@x.test").emails == ["Pat.Smith@x.test"]


def test_addresses_sent_to_are_offered_for_adding(cli: Cli, server: Running) -> None:
    alice = server.client("alice@localhost")
    alice.send(["bob@localhost"], "one", "x", cc=["carol@localhost", "alice@localhost"])
    alice.send(["bob@localhost"], "two", "x")
    offered = lines(cli("contacts", "suggest", "--json").stdout)
    assert [(o["address"], o["times"]) for o in offered] == [
        ("bob@localhost", 2),
        ("carol@localhost", 1),
    ]  # newest first; never one's own address
    assert "bob@localhost  (2 message(s), last " in cli("contacts", "suggest").stdout
    cli("contacts", "add", "bob@localhost", "--name", "Bob")
    assert [o["address"] for o in lines(cli("contacts", "suggest", "--json").stdout)] == [
        "carol@localhost"
    ]
    cli("contacts", "dismiss", "carol@localhost")
    assert cli("contacts", "suggest").stdout == ""
    # a send the server refuses records nothing
    with pytest.raises(RequestInvalid):
        alice.send(["dave@localhost", "not an address"], "refused", "x")
    assert server.count("SELECT count(*) FROM contacts_seen WHERE address='dave@localhost'") == 0
    # bob sees only his own
    assert cli("contacts", "suggest", user="bob@localhost").stdout == ""


def test_completion_offers_contacts_then_directory_then_addresses_sent_to(
    cli: Cli, server: Running
) -> None:
    store = server.controller.server.store
    set_user(store, "localhost", "boris@localhost", PASSWORD)
    client = server.client("alice@localhost")
    Contacts(client).add(Contact("Bonnie Contact", ["bonnie@elsewhere.test"]))
    AddressDirectory(server.client("bob@localhost")).publish("Bob Listed")
    client.send(["boris@localhost", "bob@localhost"], "hello", "x")  # both sent to
    got = [(c.address, c.source) for c in complete(client, "bo")]
    assert got == [
        ("bonnie@elsewhere.test", "contact"),
        ("bob@localhost", "directory"),  # once, though also sent to
        ("boris@localhost", "seen"),
    ]
    assert [c.source for c in complete(client, "bonnie")] == ["contact"]
    assert complete(client, "") == []
    # by name too (a word of it), as the binary shows it
    shown = lines(cli("contacts", "complete", "listed", "--json").stdout)
    assert shown == [{"address": "bob@localhost", "name": "Bob Listed", "source": "directory"}]
    assert (
        "Bonnie Contact <bonnie@elsewhere.test>  [contact]"
        in cli("contacts", "complete", "b").stdout
    )  # one letter: no directory, still contacts and addresses sent to
    # the TUI's completer: the same order, from what it loaded once
    typing = Completer(client)
    assert [c.address for c in typing.complete("bo")] == [
        "bonnie@elsewhere.test",
        "bob@localhost",
        "boris@localhost",
    ]
