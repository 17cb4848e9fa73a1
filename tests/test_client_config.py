"""client.toml is written by a TOML writer, atomically: any value round-trips, and a
reader never sees half a file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from wsemail.client import session
from wsemail.client.session import Account, ClientConfig


@pytest.fixture
def client_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "conf" / "client.toml"
    monkeypatch.setenv("WSEMAIL_CLIENT_CONFIG", str(path))
    return path


def test_values_with_del_quotes_and_newlines_round_trip(client_toml: Path) -> None:
    odd = 'a\x7fb "quoted" \\ back\nslash\ttab \x01 é'
    config = ClientConfig(
        {
            "work": Account("work", f"https://mail.a.test/{odd}", "alice@a.test", (odd,), odd),
            "home": Account("home", "http://127.0.0.1:8025/wsemail", "bob@b.test"),
        },
        "work",
    )
    assert session.save_accounts(config) == client_toml
    assert session.load_accounts() == config
    tomllib.loads(client_toml.read_text(encoding="utf-8"))  # any TOML reader takes it
    assert sorted(p.name for p in client_toml.parent.iterdir()) == ["client.toml"]


def test_saving_replaces_the_old_file_whole(client_toml: Path) -> None:
    client_toml.parent.mkdir()
    client_toml.write_text('default = "old"\n[accounts.old]\nserver = "x"\nuser = "o@x.test"\n')
    before = client_toml.stat().st_ino
    config = ClientConfig({"new": Account("new", "https://n.test/wsemail", "n@n.test")}, "new")
    session.save_accounts(config)
    assert session.load_accounts() == config
    assert client_toml.stat().st_ino != before  # renamed over it, not rewritten in place
    assert sorted(p.name for p in client_toml.parent.iterdir()) == ["client.toml"]
