"""A machine without an OS keyring (issue 16): an account's `password_command` in
client.toml gives the password (the first line it prints), `wsemail login
--password-command` sets it up, and without either the message names it. Through the real
binary, with keyring's always-failing backend."""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

from conftest import PASSWORD, Running, wsemail_binary


def run(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env.update(
        HOME=str(home),
        WSEMAIL_CLIENT_CONFIG=str(home / "client.toml"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
    )
    return subprocess.run(
        [wsemail_binary(), *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def test_login_and_commands_use_the_password_command_without_a_keyring(
    server: Running, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(f"{PASSWORD}\nsecond line ignored\n")
    server.client("bob@localhost").send(["alice@localhost"], "for alice", "x")
    # no keyring and no command: the message names the way out
    refused = run(
        tmp_path,
        "login",
        "--server",
        server.url,
        "--user",
        "alice@localhost",
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "password_command" in refused.stderr
    done = run(
        tmp_path,
        "login",
        "--server",
        server.url,
        "--user",
        "alice@localhost",
        "--password-command",
        f"cat '{secret}'",
    )
    assert done.returncode == 0, done.stderr
    assert "password from its password_command" in done.stdout
    saved = tomllib.loads((tmp_path / "client.toml").read_text())
    assert saved["accounts"]["alice@localhost"]["password_command"] == f"cat '{secret}'"
    assert PASSWORD not in (tmp_path / "client.toml").read_text()
    listed = run(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert "for alice" in listed.stdout


def test_a_failing_password_command_is_one_line(server: Running, tmp_path: Path) -> None:
    (tmp_path / "client.toml").write_text(
        'default = "w"\n[accounts."w"]\n'
        f'server = "{server.url}"\nuser = "alice@localhost"\npassword_command = "exit 3"\n'
    )
    result = run(tmp_path, "list")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "wsemail: password_command of account 'w' exited 3"
    ]
    (tmp_path / "client.toml").write_text(
        f'default = "w"\n[accounts."w"]\nserver = "{server.url}"\nuser = "alice@localhost"\n'
    )
    missing = run(tmp_path, "list")
    assert missing.returncode == 1 and "password_command" in missing.stderr
    assert server.client().list_headers().headers == []  # the server still answers
