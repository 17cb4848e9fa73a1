"""The address directory (issue 18) through real servers: opt-in listing, prefix search
of one's own domain and — signed server to server — of another, the limits that keep it
from being dumped, and every way a peer's look-up is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from stores import cli_sees_store, on_store
from test_federation import Federation, post, start_domain

from wsemail.client.directory import AddressDirectory
from wsemail.pki import create_root, write_crl
from wsemail.protocol.dsig import DS
from wsemail.protocol.errors import RateLimited, RequestInvalid
from wsemail.protocol.soap import q
from wsemail.server.accounts import set_user
from wsemail.server.config import DEFAULT_PLUGINS, load_config
from wsemail.server.directory import federated
from wsemail.server.directory.search import Request
from wsemail.server.pipeline import PluginSpec

from conftest import PASSWORD, Cli, Running, fault_subcode, start_server

pytestmark = pytest.mark.both_stores


def plugins(**options: object) -> list[PluginSpec]:
    """The default plug-ins with the directory's options set."""
    return [
        PluginSpec("directory", 70, dict(options)) if spec.ref == "directory" else spec
        for spec in DEFAULT_PLUGINS
    ]


def book(running: Running, user: str) -> AddressDirectory:
    return AddressDirectory(running.client(user))


def found(page_entries: list[object]) -> list[str]:
    return [e.address for e in page_entries]  # type: ignore[attr-defined]


def listed(running: Running) -> int:
    return running.count("SELECT count(*) FROM directory_entries")


def add_users(running: Running, *names: str) -> None:
    store, domain = running.controller.server.store, running.config.domain
    for name in names:
        set_user(store, domain, f"{name}@{domain}", PASSWORD)


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """conftest's server, on each store (with the plug-ins that run on it)."""
    running = start_server(tmp_path / "server", **on_store(store_url))
    cli_sees_store(running)
    yield running
    running.stop()


@pytest.fixture
def fed(tmp_path: Path, store_url: str) -> Iterator[Federation]:
    """a.test (SQLite) asks b.test (on each store: its rate limits are rows on PostgreSQL)."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    b_store = on_store(store_url, plugins(peer_searches_per_minute=6))
    servers = {
        "a.test": start_domain(tmp_path, ca, "a.test"),
        "b.test": start_domain(tmp_path, ca, "b.test", **b_store),
    }
    federation = Federation(ca, servers)
    federation.route_all()
    yield federation
    for running in servers.values():
        running.stop()


def test_only_listed_users_are_found_by_name_or_address_prefix(server: Running) -> None:
    assert book(server, "alice@localhost").show().listed is False  # unlisted by default
    assert book(server, "alice@localhost").publish("Alice Liddell").listed
    book(server, "bob@localhost").publish("Robert Smith")
    carol = book(server, "carol@localhost")  # never listed
    assert found(carol.search("ali").entries) == ["alice@localhost"]
    assert found(carol.search("SMI").entries) == ["bob@localhost"]  # a word of the name
    assert found(carol.search("bob").entries) == ["bob@localhost"]  # the address
    assert carol.search("car").entries == [] and carol.search("carol@").entries == []
    page = carol.search("ali")
    assert page.domain == "localhost" and page.entries[0].name == "Alice Liddell"
    assert book(server, "alice@localhost").unpublish().listed is False
    assert carol.search("ali").entries == []
    # a removed account leaves the directory with it
    server.controller.server.store.transact_sync(lambda tx: tx.remove_user("bob@localhost"))
    assert carol.search("bob").entries == [] and listed(server) == 0


def test_a_short_query_is_refused_with_nothing_stored(server: Running) -> None:
    book(server, "alice@localhost").publish("Alice")
    carol = book(server, "carol@localhost")
    carol.search("al")  # the client has its session key; count from here
    before = server.stored()
    for query in ("", "a", "  a  ", "x" * 101):
        with pytest.raises(RequestInvalid):
            carol.search(query)
    assert server.stored() == before  # not even the requests' nonces
    assert found(carol.search("al").entries) == ["alice@localhost"]  # still answers


def test_an_operator_may_allow_a_full_listing(tmp_path: Path, store_url: str) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text(
        "".join(
            f'[[plugins]]\nref = "{spec.ref}"\npriority = {spec.priority}\n'
            for spec in DEFAULT_PLUGINS
            if spec.ref != "directory"
        )
        + '[[plugins]]\nref = "directory"\noptions = { allow_dump = true, max_results = 2 }\n',
        encoding="utf-8",
    )
    running = start_server(tmp_path / "s", **on_store(store_url, load_config(toml).plugins))
    try:
        for user in ("alice@localhost", "bob@localhost", "carol@localhost"):
            book(running, user).publish(user.split("@")[0].title())
        everyone = list(book(running, "admin@localhost").iter("", page_size=1))
        assert found(everyone) == ["alice@localhost", "bob@localhost", "carol@localhost"]
    finally:
        running.stop()


def test_pages_stop_at_the_result_cap_and_cursors_cannot_be_edited(
    tmp_path: Path, store_url: str
) -> None:
    running = start_server(tmp_path / "s", **on_store(store_url, plugins(max_results=5, page=2)))
    try:
        names = [f"tester{n}" for n in range(7)]
        add_users(running, *names)
        for name in names:
            book(running, f"{name}@localhost").publish(f"Test User {name[-1]}")
        alice = book(running, "alice@localhost")
        pages = []
        cursor = None
        while True:
            page = alice.search("test", limit=2, cursor=cursor)
            pages.append(page)
            if not page.next_cursor:
                break
            cursor = page.next_cursor
        assert [len(p.entries) for p in pages] == [2, 2, 1]
        assert pages[-1].truncated and not pages[0].truncated
        served = [e.address for p in pages for e in p.entries]
        assert served == [f"tester{n}@localhost" for n in range(5)]  # by name, no repeats
        first = alice.search("test", limit=2)
        assert first.next_cursor
        body, _, mac = first.next_cursor.partition(".")
        for forged in (body + "." + mac[::-1], body[:-2] + "." + mac, "garbage"):
            with pytest.raises(RequestInvalid, match="Cursor"):
                alice.search("test", limit=2, cursor=forged)
        with pytest.raises(RequestInvalid, match="another query"):
            alice.search("user", limit=2, cursor=first.next_cursor)
    finally:
        running.stop()


def test_directory_searches_are_rate_limited_per_user(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", **on_store(store_url, plugins(searches_per_minute=3)))
    try:
        book(running, "bob@localhost").publish("Bob")
        alice = book(running, "alice@localhost")
        for _ in range(3):
            assert found(alice.search("bo").entries) == ["bob@localhost"]
        with pytest.raises(RateLimited) as refused:
            alice.search("bo")
        assert refused.value.status == 429
        # another user has their own allowance; the server still serves alice otherwise
        assert found(book(running, "carol@localhost").search("bo").entries) == ["bob@localhost"]
        assert running.client("alice@localhost").list_headers().headers == []
    finally:
        running.stop()


def test_a_search_of_another_domain_goes_signed_through_both_servers(fed: Federation) -> None:
    book(fed.b, "bob@b.test").publish("Bob Builder")
    # carol@b.test is not listed; alice@a.test is listed at home only
    book(fed.a, "alice@a.test").publish("Alice")
    alice = book(fed.a, "alice@a.test")
    page = alice.search("bo", domain="b.test")
    assert page.domain == "b.test"
    assert [(e.address, e.name) for e in page.entries] == [("bob@b.test", "Bob Builder")]
    assert alice.search("car", domain="B.TEST").entries == []
    assert alice.search("ali", domain="b.test").entries == []  # b.test lists its own only
    bob = book(fed.b, "bob@b.test")
    assert found(bob.search("ali", domain="a.test").entries) == ["alice@a.test"]
    # the answering server's nonces are kept as for a relayed transaction
    assert fed.b.count("SELECT count(*) FROM nonces WHERE principal='directory:a.test'") == 3
    with pytest.raises(RequestInvalid, match="b.test: a directory search needs"):
        alice.search("b", domain="b.test")  # b.test's own rules
    # pages of another domain: its cursor travels through a.test back to b.test
    add_users(fed.b, "boris")
    book(fed.b, "boris@b.test").publish("Boris")
    first = alice.search("bo", domain="b.test", limit=1)
    assert first.next_cursor and found(first.entries) == ["bob@b.test"]
    second = alice.search("bo", domain="b.test", limit=1, cursor=first.next_cursor)
    assert found(second.entries) == ["boris@b.test"] and second.next_cursor is None


def test_a_peer_domain_is_rate_limited_as_a_whole(fed: Federation) -> None:
    book(fed.b, "bob@b.test").publish("Bob")
    users = ("alice@a.test", "carol@a.test", "admin@a.test")
    done = 0
    with pytest.raises(RateLimited, match="b.test: too many directory searches from a.test"):
        for n in range(8):
            book(fed.a, users[n % 3]).search("bo", domain="b.test")
            done += 1
    assert done == 6  # b.test takes peer_searches_per_minute=6 from a.test
    assert found(book(fed.b, "carol@b.test").search("bo").entries) == ["bob@b.test"]


def _query(fed: Federation, **change: str) -> bytes:
    data, _ = federated.query_envelope(
        fed.a.controller.server, change.get("to", "b.test"), change.get("asker", "alice@a.test"),
        Request("bo", 10, ""),
    )  # fmt: skip
    return data


def test_a_peer_query_must_be_signed_fresh_and_for_this_domain(fed: Federation) -> None:
    book(fed.b, "bob@b.test").publish("Bob")
    data = _query(fed)
    answered = post(fed.b, data)
    assert answered.status_code == 200
    signed = etree.fromstring(answered.content)
    assert signed.find(f".//{q('Signature', DS)}") is not None  # the answer is signed too
    assert b"bob@b.test" in answered.content
    before = fed.b.stored()
    replay = post(fed.b, data)
    assert (replay.status_code, fault_subcode(replay)) == (401, "wsemail:Replay")
    root = etree.fromstring(_query(fed))
    signature = root.find(f".//{q('Signature', DS)}")
    assert signature is not None
    signature.getparent().remove(signature)  # type: ignore[union-attr]
    unsigned = post(fed.b, etree.tostring(root))
    assert unsigned.status_code == 401
    tampered = _query(fed).replace(b">bo<", b">ca<")
    assert fault_subcode(post(fed.b, tampered)) == "wsse:FailedCheck"
    elsewhere = post(fed.b, _query(fed, to="c.test"))
    assert (elsewhere.status_code, fault_subcode(elsewhere)) == (403, "wsemail:Forbidden")
    impostor = post(fed.b, _query(fed, asker="bob@b.test"))
    assert impostor.status_code == 403  # a.test may not ask for b.test's users
    assert fed.b.stored() == before
    assert found(book(fed.b, "carol@b.test").search("bo").entries) == ["bob@b.test"]


def test_directory_from_the_command_line(cli: Cli) -> None:
    shown = cli("directory", "publish", "--name", "Alice Liddell")
    assert shown.stdout.strip() == "listed as Alice Liddell <alice@localhost>"
    assert json.loads(cli("directory", "show", "--json").stdout)["listed"] is True
    hits = cli("directory", "search", "lid", "--json", user="bob@localhost").stdout
    assert [json.loads(line) for line in hits.splitlines()] == [
        {"address": "alice@localhost", "name": "Alice Liddell", "domain": "localhost"}
    ]
    short = cli("directory", "search", "a", check=False, user="bob@localhost")
    assert short.returncode == 4 and short.stderr.count("\n") == 1
    assert short.stderr.startswith("wsemail: a directory search needs at least 2")
    long_name = cli("directory", "publish", "--name", "x" * 101, check=False)
    assert long_name.returncode == 2 and long_name.stderr.count("\n") == 1
    assert "longer than 100" in long_name.stderr and "Traceback" not in long_name.stderr
    assert cli("directory", "show", "--json").stdout.count("Alice Liddell") == 1  # unchanged
    assert "not listed" in cli("directory", "unpublish").stdout
    assert cli("directory", "search", "lid", user="bob@localhost").stdout == ""
