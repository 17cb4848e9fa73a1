"""Mapped addresses (issue 18) through a real server and the real `wsemail alias` binary:
aliases deliver exactly once per real mailbox, loops and self-references are refused when
set and capped at delivery, outside targets need server.toml's permission, role addresses
feed forms routing rules, auto-responders answer, and a third-party plug-in claims
addresses of its own."""

from __future__ import annotations

import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from stores import cli_sees_store, on_store
from test_federation import Federation, start_domain

from wsemail.pki import create_root, write_crl
from wsemail.protocol.message import Message
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import AddressMap, Claim, Environment, PluginSpec

from conftest import Cli, Running, start_server, wait_for, wsemail_binary

pytestmark = pytest.mark.both_stores


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    """conftest's server, on each store (with the plug-ins that run on it)."""
    running = start_server(tmp_path / "server", **on_store(store_url))
    cli_sees_store(running)
    yield running
    running.stop()


def alias(running: Running, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [wsemail_binary(), "alias", *args, "--data-dir", str(running.config.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"wsemail alias {' '.join(args)}: {result.stderr}")
    return result


def inbox_count(running: Running, user: str) -> Counter[str]:
    return Counter(h.subject for h in running.client(user).list_headers().headers)


def test_alias_delivers_exactly_once_per_mailbox(server: Running) -> None:
    alias(server, "add", "sales@localhost", "alice@localhost", "bob@localhost")
    # overlapping members, nested, and the sender among them
    alias(server, "add", "team@localhost", "sales@localhost", "bob@localhost", "carol@localhost")
    listed = alias(server, "list").stdout
    assert "sales@localhost  alias  alice@localhost, bob@localhost" in listed
    server.client("carol@localhost").send(
        ["team@localhost", "bob@localhost"], "Kick-off", "Monday", cc=["sales@localhost"]
    )
    for user in ("alice@localhost", "bob@localhost", "carol@localhost"):
        assert inbox_count(server, user) == Counter({"Kick-off": 1}), user
    assert server.count("SELECT count(*) FROM messages WHERE folder='inbox'") == 3


def test_alias_loops_and_self_references_are_refused_when_set(server: Running) -> None:
    alias(server, "add", "a1@localhost", "alice@localhost")
    alias(server, "add", "a2@localhost", "a1@localhost")
    alias(server, "add", "a3@localhost", "a2@localhost")
    rows = "SELECT count(*) FROM mapped_targets"
    before = server.count(rows)
    loop = alias(server, "add", "a1@localhost", "a3@localhost", check=False)
    assert loop.returncode == 1 and loop.stderr.count("\n") == 1
    assert "loop" in loop.stderr and "a1@localhost -> a3@localhost" in loop.stderr
    itself = alias(server, "add", "me@localhost", "me@localhost", check=False)
    assert itself.returncode == 1 and "cannot point at itself" in itself.stderr
    mailbox = alias(server, "add", "bob@localhost", "alice@localhost", check=False)
    assert mailbox.returncode == 1 and "mailbox" in mailbox.stderr
    unknown = alias(server, "add", "x@localhost", "nobody@localhost", check=False)
    assert unknown.returncode == 1 and "neither an account" in unknown.stderr
    outside = alias(server, "add", "ext@localhost", "pat@b.test", check=False)
    assert outside.returncode == 1 and "server.toml" in outside.stderr
    in_use = alias(server, "remove", "a1@localhost", check=False)
    assert in_use.returncode == 1 and "a2@localhost" in in_use.stderr
    assert "Traceback" not in loop.stderr + itself.stderr + outside.stderr + in_use.stderr
    assert server.count(rows) == before == 3  # nothing changed
    server.client().send(["a3@localhost"], "Deep", "through three aliases")
    assert inbox_count(server, "alice@localhost") == Counter({"Deep": 1})
    alias(server, "remove", "a3@localhost")
    assert server.count(rows) == 2


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Federation]:
    """a.test and b.test, each allowing aliases to the other."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {}
    for domain, other in (("a.test", "b.test"), ("b.test", "a.test")):
        (tmp_path / domain).mkdir()
        (tmp_path / domain / "server.toml").write_text(
            f'[[plugins]]\nref = "aliases"\npriority = 30\noptions = {{ external = ["{other}"] }}\n'
        )
        plugins = [
            PluginSpec("aliases", 30, {"external": [other]}) if s.ref == "aliases" else s
            for s in DEFAULT_PLUGINS
        ]
        servers[domain] = start_domain(tmp_path, ca, domain, plugins=plugins)
    federation = Federation(ca, servers)
    federation.route_all()
    yield federation
    for running in servers.values():
        running.stop()


def settled(fed: Federation) -> bool:
    return all(r.count("SELECT count(*) FROM queue") == 0 for r in fed.servers.values())


def test_alias_to_another_domain_forwards_and_a_loop_between_servers_stops(
    fed: Federation,
) -> None:
    refused = alias(fed.a, "add", "ext@a.test", "pat@c.test", check=False)
    assert refused.returncode == 1 and "server.toml" in refused.stderr
    alias(fed.a, "add", "ping@a.test", "alice@a.test", "pong@b.test")
    alias(fed.b, "add", "pong@b.test", "bob@b.test", "ping@a.test")
    fed.a.client("carol@a.test").send(["ping@a.test"], "Ping", "round the houses")
    wait_for(lambda: inbox_count(fed.b, "bob@b.test") == Counter({"Ping": 1}), "bob's copy")
    wait_for(lambda: settled(fed), "both queues empty")
    assert inbox_count(fed.a, "alice@a.test") == Counter({"Ping": 1})
    assert inbox_count(fed.b, "bob@b.test") == Counter({"Ping": 1})
    # a foreign sender's message leaves a.test as a.test's own, naming whom it is from
    fed.b.client("carol@b.test").send(["ping@a.test"], "From b", "hello")
    wait_for(lambda: inbox_count(fed.a, "alice@a.test")["From b"] == 1, "alice's copy")
    wait_for(lambda: inbox_count(fed.b, "bob@b.test")["From b"] == 1, "bob's forwarded copy")
    wait_for(lambda: settled(fed), "both queues empty")
    bob = fed.b.client("bob@b.test")
    forwarded = next(h for h in bob.list_headers().headers if h.subject == "From b")
    assert forwarded.sender == "ping@a.test"
    assert "[forwarded by ping@a.test: from carol@b.test" in bob.retrieve(forwarded.id).body
    assert inbox_count(fed.a, "alice@a.test") == Counter({"Ping": 1, "From b": 1})
    fed.a.client("alice@a.test").send(["bob@b.test"], "Still", "serving")
    wait_for(lambda: inbox_count(fed.b, "bob@b.test")["Still"] == 1, "a plain message")


class Loopy(AddressMap):
    """A third party's mapped addresses: echo@ goes to bob; ring1@ -> ring2@ -> ring1@
    (a loop nothing checked), and deep0@ -> deep1@ -> … -> deep20@ -> alice."""

    name = "loopy"
    taken: list[str] = []

    def claim(self, address: str, env: Environment) -> Claim | None:
        local = address.partition("@")[0]
        if local == "echo":
            return Claim("echo", ("bob@localhost",))
        if local in ("ring1", "ring2"):
            other = "ring2" if local == "ring1" else "ring1"
            return Claim("ring", (f"{other}@localhost", "carol@localhost"))
        if local.startswith("deep") and local[4:].isdigit():
            n = int(local[4:])
            return Claim("deep", (f"deep{n + 1}@localhost" if n < 20 else "alice@localhost",))
        return None

    def take(self, message: Message, address: str, env: Environment) -> None:
        Loopy.taken.append(address)


def test_third_party_plugin_claims_addresses_and_loops_are_capped(server: Running) -> None:
    server.controller.server.pipeline.load(PluginSpec("test_addresses:Loopy", 25))
    Loopy.taken.clear()
    alice = server.client()
    alice.send(["echo@localhost"], "Echo", "to bob")
    assert inbox_count(server, "bob@localhost") == Counter({"Echo": 1})
    assert Loopy.taken == ["echo@localhost"]
    alice.send(["ring1@localhost"], "Ring", "round and round")
    assert inbox_count(server, "carol@localhost") == Counter({"Ring": 1})
    alice.send(["deep0@localhost"], "Deep", "too deep")
    assert "Deep" not in inbox_count(server, "alice@localhost")  # capped at MAX_DEPTH
    alice.send(["bob@localhost"], "Still", "serving")
    assert inbox_count(server, "bob@localhost")["Still"] == 1


def test_role_address_names_approvers_of_a_forms_rule(server: Running) -> None:
    from wsemail.server.mapping import role_members

    alias(server, "add", "purchasing@localhost", "carol@localhost", "bob@localhost", "--role")
    srv = server.controller.server

    def members(tx: object) -> tuple[str, ...]:
        env = Environment("alice@localhost", "localhost", tx, None, srv.pipeline, srv.clock)  # type: ignore[arg-type]
        return role_members(("purchasing@localhost", "pat@localhost"), env)

    assert srv.store.transact_sync(members) == ("carol@localhost", "bob@localhost", "pat@localhost")


def test_auto_responder_answers_but_not_automatic_mail(server: Running, cli: Cli) -> None:
    alias(
        server,
        "add",
        "info@localhost",
        "--reply-subject",
        "Your auto-requested information",
        "--reply-body",
        "Opening hours: 9-5.",
    )
    server.client("bob@localhost").send(["info@localhost"], "Hours?", "when are you open")
    assert inbox_count(server, "bob@localhost") == Counter({"Your auto-requested information": 1})
    reply = server.client("bob@localhost").list_headers().headers[0]
    assert reply.sender == "info@localhost"
    assert server.client("bob@localhost").retrieve(reply.id).body == "Opening hours: 9-5."
    listed = cli("alias", "list", "--data-dir", str(server.config.data_dir)).stdout
    assert "info@localhost  autoresponse" in listed


@pytest.mark.parametrize("bad", [["add"], ["add", "x@localhost"], ["remove", "nobody@localhost"]])
def test_alias_cli_mistakes_are_one_line(server: Running, bad: list[str]) -> None:
    result = alias(server, *bad, check=False)
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    assert result.stderr.strip()
