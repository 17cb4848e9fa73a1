"""Autofill (issue 6) called with the user's federated identity certificate: two TLS
domains on loopback; the request is signed with the IssueToken key, and only the
certificate's own record of the server's own domain is served, once per nonce."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from test_federation import Federation, start_domain

from wsemail.client.attachments import Attachments, Token
from wsemail.client.forms import workflow
from wsemail.client.mail import Client
from wsemail.pki import create_root, write_crl
from wsemail.protocol.errors import RemoteFault, RequestInvalid
from wsemail.protocol.soap import q
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec

ALICE = {"employee": "Kevin Lux", "employee_id": "abc123"}
CAROL_B = {"employee": "Carol of b", "employee_id": "b-9"}


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    tmp = tmp_path_factory.mktemp("autofill")
    ca = tmp / "ca"
    create_root(ca)
    write_crl(ca)

    def plugins(employees: dict[str, dict[str, str]]) -> list[PluginSpec]:
        others = [spec for spec in DEFAULT_PLUGINS if spec.ref != "forms"]
        return [*others, PluginSpec("forms", 40, {"employees": employees})]

    servers = {
        "a.test": start_domain(tmp, ca, "a.test", plugins=plugins({"alice@a.test": ALICE})),
        "b.test": start_domain(tmp, ca, "b.test", plugins=plugins({"carol@b.test": CAROL_B})),
    }
    federation = Federation(ca, servers)
    yield federation
    for running in servers.values():
        running.stop()


def client(fed: Federation, user: str) -> Client:
    return fed.servers[user.rpartition("@")[2]].client(user)


def token(fed: Federation, user: str) -> Token:
    with client(fed, user) as c:
        return Attachments(c).token()


def ask(fed: Federation, domain: str, data: bytes) -> dict[str, str]:
    """POST a signed Autofill to `domain`'s server (through any of its clients)."""
    with client(fed, f"bob@{domain}") as c:
        answer = workflow.post_signed(c, data)
    return {f.get("name", ""): f.text or "" for f in answer.findall(q("Field"))}


def nonces(fed: Federation, domain: str) -> int:
    return fed.servers[domain].count("SELECT count(*) FROM nonces WHERE principal LIKE 'user:%'")


def test_autofill_with_the_federated_identity_returns_the_own_record(fed: Federation) -> None:
    before = nonces(fed, "a.test")
    with client(fed, "alice@a.test") as alice:
        assert workflow.autofill(alice) == ALICE
    with client(fed, "carol@b.test") as carol:
        assert workflow.autofill(carol) == CAROL_B  # b.test's own service
    assert nonces(fed, "a.test") == before + 1  # kept in the durable replay table
    with client(fed, "carol@a.test") as nobody, pytest.raises(RemoteFault) as info:
        workflow.autofill(nobody)
    assert "no employee record" in str(info.value)


def test_a_replayed_request_is_refused(fed: Federation) -> None:
    data = workflow.autofill_request("alice@a.test", "a.test", token(fed, "alice@a.test"))
    assert ask(fed, "a.test", data) == ALICE
    with pytest.raises(RemoteFault) as info:
        ask(fed, "a.test", data)
    assert "already received" in str(info.value)
    with client(fed, "alice@a.test") as alice:
        assert workflow.autofill(alice) == ALICE  # a fresh request still served


def test_a_stale_request_is_refused(fed: Federation) -> None:
    old = datetime.now(UTC) - timedelta(hours=2)
    data = workflow.autofill_request("alice@a.test", "a.test", token(fed, "alice@a.test"), now=old)
    with pytest.raises(RemoteFault) as info:
        ask(fed, "a.test", data)
    assert "Kevin" not in str(info.value)


def test_another_users_certificate_gets_nobody_elses_record(fed: Federation) -> None:
    bob = token(fed, "bob@a.test")
    for whom in ("alice@a.test", "ALICE@a.test"):
        with pytest.raises(RemoteFault) as info:
            ask(fed, "a.test", workflow.autofill_request(whom, "a.test", bob))
        assert "own record" in str(info.value) and "Kevin" not in str(info.value)
    with client(fed, "alice@a.test") as alice:
        assert workflow.autofill(alice) == ALICE  # the server still serves


def test_a_certificate_from_another_domain_is_refused(fed: Federation) -> None:
    carol_b = token(fed, "carol@b.test")  # issued by b.test's issuing CA, same root
    for address in ("carol@b.test", "alice@a.test"):
        with pytest.raises(RemoteFault) as info:
            ask(fed, "a.test", workflow.autofill_request(address, "a.test", carol_b))
        assert "serves only users of a.test" in str(info.value)
        assert "Kevin" not in str(info.value)
    with pytest.raises(RemoteFault, match="only users of b.test"):  # nor a.test's at b.test
        ask(
            fed,
            "b.test",
            workflow.autofill_request("alice@a.test", "b.test", token(fed, "alice@a.test")),
        )
    with client(fed, "alice@a.test") as alice:
        assert workflow.autofill(alice) == ALICE


def test_a_request_for_another_server_is_refused(fed: Federation) -> None:
    data = workflow.autofill_request("alice@a.test", "b.test", token(fed, "alice@a.test"))
    with pytest.raises(RemoteFault) as info:
        ask(fed, "a.test", data)
    assert "another server" in str(info.value)


def test_the_password_mac_path_no_longer_serves_records(fed: Federation) -> None:
    from lxml import etree

    with client(fed, "alice@a.test") as alice, pytest.raises(RequestInvalid):
        alice.extension("forms", etree.Element(q("Autofill")))


def test_the_cli_autofills_through_the_signed_path(fed: Federation, tmp_path: Path) -> None:
    import json
    import subprocess

    from conftest import PASSWORD, wsemail_binary

    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env.update(
        WSEMAIL_SERVER=fed.servers["a.test"].url,
        WSEMAIL_USER="alice@a.test",
        WSEMAIL_PASSWORD=PASSWORD,
        WSEMAIL_CACERT=str(fed.ca / "root.pem"),
        WSEMAIL_TLS_NAME="a.test",
        WSEMAIL_CLIENT_CONFIG=str(tmp_path / "client.toml"),
        HOME=str(tmp_path),
        XDG_DATA_HOME=str(tmp_path / "data"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    before = nonces(fed, "a.test")
    out = subprocess.run(
        [wsemail_binary(), "forms", "autofill"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    ).stdout
    assert json.loads(out) == ALICE
    assert nonces(fed, "a.test") == before + 1
