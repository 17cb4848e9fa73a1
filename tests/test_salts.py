"""The salt memory (wsemail.client.salts): a client given one begins its key derivation from
the salt of the account's last session, while it connects and fetches the salt; the salt the
server gives still decides, and only a salt whose key the server accepted is remembered.
Against a real server on loopback."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from wsemail.client.mail import Client
from wsemail.client.salts import SaltMemory
from wsemail.protocol.errors import AuthenticationFailed
from wsemail.server.accounts import set_user

from conftest import PASSWORD, Running

ALICE = "alice@localhost"


def server_salt(server: Running, user: str = ALICE) -> bytes:
    return server.client(user).get_salt(user)


def signs_in(server: Running, memory: SaltMemory, password: str = PASSWORD) -> bool:
    with Client(server.url, ALICE, password, salts=memory) as client:
        return client.list_headers(limit=1).headers == []


def test_salt_remembered_once_the_server_accepts_the_key(server: Running, tmp_path: Path) -> None:
    memory = SaltMemory(tmp_path / "cache" / "salts.json")
    assert memory.get(server.url, ALICE) is None
    assert signs_in(server, memory)
    assert memory.get(server.url, ALICE) == server_salt(server)
    assert stat.S_IMODE(memory.path.stat().st_mode) == 0o600  # it lists servers and addresses
    assert signs_in(server, memory)  # the next session begins from it
    assert memory.get(server.url, ALICE) == server_salt(server)


def test_new_password_new_salt_the_old_one_is_not_used(server: Running, tmp_path: Path) -> None:
    memory = SaltMemory(tmp_path / "salts.json")
    assert signs_in(server, memory)
    old = memory.get(server.url, ALICE)
    store, domain = server.controller.server.store, server.config.domain
    set_user(store, domain, ALICE, "a new password", create=False)  # a new salt with it
    new = server_salt(server)
    assert new != old
    before = server.stored()
    with pytest.raises(AuthenticationFailed):  # the old password, from the remembered salt
        signs_in(server, memory)
    assert server.stored() == before
    assert memory.get(server.url, ALICE) == old  # refused: nothing remembered
    assert signs_in(server, memory, "a new password")  # key derived afresh from the new salt
    assert memory.get(server.url, ALICE) == new


def test_wrong_password_remembers_nothing(server: Running, tmp_path: Path) -> None:
    memory = SaltMemory(tmp_path / "salts.json")
    before = server.stored()
    with pytest.raises(AuthenticationFailed):
        signs_in(server, memory, "not the password")
    assert not memory.path.exists()
    assert server.stored() == before
    assert signs_in(server, memory)  # the server still answers


def test_stale_or_unreadable_memory_is_only_a_lost_head_start(
    server: Running, tmp_path: Path
) -> None:
    memory = SaltMemory(tmp_path / "salts.json")
    memory.put(server.url, ALICE, b"\x00" * 16)  # not the server's salt
    assert signs_in(server, memory)
    assert memory.get(server.url, ALICE) == server_salt(server)
    for junk in ("not json", "{}", '[1, {"server": 2}]', json.dumps([{"salt": "%%"}])):
        memory.path.write_text(junk)
        assert memory.get(server.url, ALICE) is None
        assert signs_in(server, memory)
        assert memory.get(server.url, ALICE) == server_salt(server)
    entry = {"server": server.url, "user": ALICE, "salt": "not base64!"}
    memory.path.write_text(json.dumps([entry]))
    assert memory.get(server.url, ALICE) is None
    assert signs_in(server, memory)


def test_memory_keeps_the_latest_accounts_first(tmp_path: Path) -> None:
    memory = SaltMemory(tmp_path / "salts.json")
    for n in range(20):
        memory.put("https://mail.example/wsemail", f"user{n}@example", bytes([n]) * 16)
    memory.put("https://mail.example/wsemail", "user3@example", b"\x03" * 16)
    entries = json.loads(memory.path.read_text())
    assert len(entries) == 16
    assert entries[0]["user"] == "user3@example"
    assert [e["user"] for e in entries].count("user3@example") == 1
    assert base64.b64decode(entries[1]["salt"]) == b"\x13" * 16  # user19, the latest before
    assert memory.get("https://mail.example/wsemail", "user0@example") is None  # dropped


def test_memory_that_cannot_be_written_is_ignored(server: Running, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    memory = SaltMemory(blocker / "salts.json")  # its folder cannot be made
    assert signs_in(server, memory)
    assert memory.get(server.url, ALICE) is None
