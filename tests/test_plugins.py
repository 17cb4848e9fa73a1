"""The server pipeline: plug-ins from config, at run time through the admin extension, and
the built-in processors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree

from wsemail.protocol.errors import MessageTooLarge, PluginError, Rejected, RelayDenied
from wsemail.protocol.soap import q
from wsemail.server import pipeline
from wsemail.server.pipeline import INTERFACES, Pipeline, PluginSpec

from conftest import ADMIN, Cli, Running, start_server


def test_default_pipeline_lists_builtins_in_priority_order(cli: Cli) -> None:
    rows = [json.loads(x) for x in cli("plugins", "list", "--json", user=ADMIN).stdout.splitlines()]
    assert [r["name"] for r in rows] == [
        "relay-policy",
        "size-limit",
        "aliases",
        "operate",
        "forms",
        "im",
        "attachments",
        "usercerts",
        "contacts",
        "directory",
        "admin",
        "filters",
        "local-delivery",
        "sqlite-queue",
    ]
    assert rows[0]["interfaces"] == "sending" and rows[12]["interfaces"] == "local-mta"
    assert rows[2]["interfaces"] == "mapped-address"
    assert rows[3]["interfaces"] == "delivery extension" and rows[3]["priority"] == "30"


def test_admin_loads_reprioritises_and_unloads_while_serving(cli: Cli, server: Running) -> None:
    assert cli("send", "--to", "bob@localhost", "-s", "spam offer", "--body", "x").returncode == 0
    cli("plugins", "load", "plugins_example:NoSpam", "--priority", "50", user=ADMIN)
    refused = cli("send", "--to", "bob@localhost", "-s", "more spam", "--body", "x", check=False)
    assert refused.returncode == 4 and "looks like spam" in refused.stderr
    cli("plugins", "priority", "no-spam", "5", user=ADMIN)
    names = [
        json.loads(x)["name"]
        for x in cli("plugins", "list", "--json", user=ADMIN).stdout.splitlines()
    ]
    assert names[0] == "no-spam"
    cli("plugins", "unload", "no-spam", user=ADMIN)
    assert cli("send", "--to", "bob@localhost", "-s", "spam again", "--body", "x").returncode == 0
    subjects = [h.subject for h in server.client("bob@localhost").list_headers().headers]
    assert subjects == ["spam again", "spam offer"]


def test_plugin_admin_needs_an_admin_account(cli: Cli) -> None:
    result = cli("plugins", "list", check=False)
    assert result.returncode == 4 and "admin" in result.stderr


def test_bad_plugin_operations_are_clear_errors(cli: Cli) -> None:
    missing = cli("plugins", "load", "no-such-plugin", user=ADMIN, check=False)
    assert missing.returncode == 4 and "installed:" in missing.stderr
    assert "size-limit" in missing.stderr
    only = cli("plugins", "unload", "local-delivery", user=ADMIN, check=False)
    assert only.returncode == 4 and "only local-mta" in only.stderr
    twice = cli("plugins", "load", "admin", user=ADMIN, check=False)
    assert twice.returncode == 4 and "already loaded" in twice.stderr


def test_composite_plugin_from_config(tmp_path: Path) -> None:
    specs = [*pipeline_defaults(), PluginSpec("plugins_example:Vacation", 50)]
    running = start_server(tmp_path / "s", plugins=specs)
    try:
        bob = running.client("bob@localhost")
        bob.extension("vacation", etree.Element(q("On")))
        running.client().send(["bob@localhost"], "lunch?")
        replies = running.client().list_headers().headers
        assert [(h.sender, h.subject) for h in replies] == [("bob@localhost", "Away: lunch?")]
        assert [h.subject for h in bob.list_headers().headers] == ["lunch?"]
    finally:
        running.stop()


def pipeline_defaults() -> list[PluginSpec]:
    from wsemail.server.config import DEFAULT_PLUGINS

    return list(DEFAULT_PLUGINS)


def test_size_limit_from_config_refuses_and_stores_nothing(tmp_path: Path) -> None:
    specs = [
        s if s.ref != "size-limit" else PluginSpec("size-limit", 20, {"max_bytes": 100})
        for s in pipeline_defaults()
    ]
    running = start_server(tmp_path / "s", plugins=specs)
    try:
        alice = running.client()
        with pytest.raises(MessageTooLarge):
            alice.send(["bob@localhost"], "big", "x" * 101)
        assert running.stored()[0] == 0
        alice.send(["bob@localhost"], "small", "x" * 50)
        assert running.stored()[0] == 2
    finally:
        running.stop()


def test_relay_policy_refuses_foreign_domains_unless_allowed(tmp_path: Path) -> None:
    closed = [
        s if s.ref != "relay-policy" else PluginSpec("relay-policy", 10, {"allow": []})
        for s in pipeline_defaults()
    ]
    running = start_server(tmp_path / "s", plugins=closed)
    try:
        with pytest.raises(RelayDenied):
            running.client().send(["bob@localhost", "eve@elsewhere.test"], "x")
        assert running.stored()[0] == 0
    finally:
        running.stop()
    specs = [
        s if s.ref != "relay-policy" else PluginSpec("relay-policy", 10, {"allow": ["*.test"]})
        for s in pipeline_defaults()
    ]
    running = start_server(tmp_path / "s", plugins=specs)
    try:
        running.client().send(["bob@localhost", "eve@elsewhere.test"], "x")
        assert running.count("SELECT count(*) FROM queue WHERE domain='elsewhere.test'") == 1
        # alice's sent copy and bob's inbox (elsewhere.test has no wsemail service: the
        # relay may already have bounced it into alice's inbox, a race not under test)
        mail = "SELECT count(*) FROM messages WHERE sender NOT LIKE 'mailer-daemon@%'"
        assert running.count(mail) == 2
    finally:
        running.stop()


def test_unknown_plugin_names_what_is_installed() -> None:
    with pytest.raises(PluginError) as caught:
        Pipeline("localhost", [PluginSpec("nope")])
    assert "local-delivery" in str(caught.value) and "size-limit" in str(caught.value)
    with pytest.raises(PluginError):
        Pipeline("localhost", [PluginSpec("plugins_example:not_a_plugin")])
    with pytest.raises(PluginError):
        Pipeline("localhost", [PluginSpec("size-limit", options={"max_bytes": -1})])


def test_builtins_are_registered_as_entry_points() -> None:
    assert {
        "size-limit",
        "relay-policy",
        "local-delivery",
        "admin",
        "sqlite-queue",
        "sqlite-store",
    } <= set(pipeline.available())


def test_every_plugin_interface_is_documented() -> None:
    doc = pipeline.__doc__ or ""
    for iface in INTERFACES.values():
        methods = [m for m in vars(iface) if not m.startswith("_") and callable(getattr(iface, m))]
        assert iface.__name__ in doc
        for method in methods:
            assert f"{iface.__name__}.{method}(" in doc, method


def test_processor_rejection_keeps_the_server_serving(server: Running) -> None:
    server.controller.server.pipeline.load(PluginSpec("plugins_example:NoSpam", 1))
    with pytest.raises(Rejected):
        server.client().send(["bob@localhost"], "Spam!")
    assert server.stored()[0] == 0
    server.client().send(["bob@localhost"], "fine")


def test_extension_requests_are_dispatched_by_name_and_refused_otherwise(
    server: Running,
) -> None:
    from wsemail.protocol.errors import RequestInvalid as Invalid

    alice = server.client()
    assert alice.extension("im", etree.Element(q("Who"))) is not None
    for payload in (etree.Element(q("NoSuchRequest")), etree.Element("{urn:other}Who")):
        with pytest.raises(Invalid):
            alice.extension("im", payload)
    with pytest.raises(Invalid):
        alice.extension("attachments", None)  # no request at all
    assert server.stored()[0] == 0
