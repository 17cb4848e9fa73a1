"""Bugs a new user met with keys (issue 16): `keys create` with nowhere to keep the key must
stop before the server certifies one, and a message this device cannot decrypt is one line
and a non-zero exit, never its ciphertext. Through the real `wsemail` binary."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_usercerts import BODY, SUBJECT, Fed, two_domains

from wsemail.client.usercerts import keystore, send_encrypted

from conftest import PASSWORD, wait_for, wsemail_binary


@pytest.fixture
def fed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Fed]:
    with two_domains(tmp_path, monkeypatch) as federation:
        yield federation


def run(fed: Fed, user: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    running = fed.running(user)
    base = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    base.update(
        WSEMAIL_SERVER=running.url,
        WSEMAIL_USER=user,
        WSEMAIL_PASSWORD=PASSWORD,
        WSEMAIL_CACERT=str(fed.ca / "root.pem"),
        WSEMAIL_TRUST_ROOTS=str(fed.ca / "root.pem"),
        WSEMAIL_TLS_NAME=running.config.domain,
        WSEMAIL_DIRECTORY_ROUTES=",".join(f"{d}={r.url}" for d, r in fed.servers.items()),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",  # a headless machine
        **env,
    )
    return subprocess.run(
        [wsemail_binary(), *args], capture_output=True, text=True, env=base, timeout=60
    )


def issued(fed: Fed, user: str) -> int:
    return fed.running(user).count(
        f"SELECT count(*) FROM user_certs WHERE address='{user}'"  # noqa: S608
    )


def test_keys_create_without_a_keyring_stops_before_the_server_certifies(
    fed: Fed, tmp_path: Path
) -> None:
    keys = tmp_path / "device-keys"
    result = run(fed, "alice@a.test", "keys", "create", WSEMAIL_KEYS_DIR=str(keys))
    assert result.returncode == 1, result.stderr
    assert result.stderr.count("\n") == 1 and "WSEMAIL_KEY_PASSPHRASE" in result.stderr
    assert issued(fed, "alice@a.test") == 0  # nothing certified that cannot be kept
    assert not list(keys.glob("*.pem"))
    # with a passphrase it works, and the server still answers
    done = run(
        fed,
        "alice@a.test",
        "keys",
        "create",
        WSEMAIL_KEYS_DIR=str(keys),
        WSEMAIL_KEY_PASSPHRASE="device passphrase",
    )
    assert done.returncode == 0, done.stderr
    assert issued(fed, "alice@a.test") == 1 and (keys / "alice@a.test.pem").exists()


def test_a_message_this_device_cannot_decrypt_is_one_line_and_exit_1(
    fed: Fed, tmp_path: Path
) -> None:
    fed.key("alice@a.test")
    fed.key("bob@b.test")
    alice = fed.client("alice@a.test")
    with fed.directory() as directory:
        send_encrypted(
            alice, keystore.load("alice@a.test"), directory, ["bob@b.test"], SUBJECT, BODY
        )
    bob = fed.client("bob@b.test")
    wait_for(lambda: bob.list_headers().headers, "bob's copy")
    message_id = bob.list_headers().headers[0].id
    # bob on another device, without his key
    other = {"WSEMAIL_KEYS_DIR": str(tmp_path / "other-device")}
    for extra in ([], ["--json"]):
        result = run(fed, "bob@b.test", "retrieve", *extra, message_id, **other)
        assert result.returncode == 1, result.stderr
        assert result.stderr.strip().splitlines() == [
            f"wsemail: cannot decrypt 1 message(s) here: {message_id} "
            "(no key on this device to decrypt this message)"
        ]
        assert "EncryptedData" not in result.stdout and "CipherValue" not in result.stdout
        assert len(result.stdout) < 1000
    # on his own device it opens
    mine = run(
        fed,
        "bob@b.test",
        "retrieve",
        message_id,
        WSEMAIL_KEY_PASSPHRASE="device passphrase",
        WSEMAIL_KEYS_DIR=str(tmp_path / "keys"),
    )
    assert mine.returncode == 0, mine.stderr
    assert BODY in mine.stdout
