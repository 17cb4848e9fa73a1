"""The whole client path through the real CLI against a real server on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import Cli, Running, start_server


def test_send_to_two_local_users_list_retrieve_delete(cli: Cli) -> None:
    sent = cli(
        "send",
        "--to",
        "bob@localhost",
        "--cc",
        "carol@localhost",
        "--subject",
        "Quarterly numbers",
        "--json",
        input="Numbers attached.\n",
    )
    sent_ids = json.loads(sent.stdout)
    assert sent_ids["message_id"].startswith("<") and sent_ids["id"]

    for reader in ("bob@localhost", "carol@localhost"):
        lines = cli("list", "--json", user=reader).stdout.splitlines()
        assert len(lines) == 1
        header = json.loads(lines[0])
        assert header["from"] == "alice@localhost"
        assert header["to"] == ["bob@localhost"] and header["cc"] == ["carol@localhost"]
        assert header["subject"] == "Quarterly numbers" and header["seen"] is False
        assert header["message_id"] == sent_ids["message_id"]

    # ids from stdin, as in `wsemail list --json | jq -r .id | wsemail retrieve --json`
    ids = [
        json.loads(line)["id"]
        for line in cli("list", "--json", user="bob@localhost").stdout.splitlines()
    ]
    got = cli("retrieve", "--json", user="bob@localhost", input="\n".join(ids) + "\n")
    message = json.loads(got.stdout)
    assert message["body"] == "Numbers attached.\n" and message["seen"] is True
    assert cli("list", "--json", "--unread", user="bob@localhost").stdout == ""
    assert cli("list", "--json", "--unread", user="carol@localhost").stdout != ""

    sent_out = cli("list", "--folder", "sent", "--json").stdout
    sent_folder = [json.loads(x) for x in sent_out.splitlines()]
    assert [h["id"] for h in sent_folder] == [sent_ids["id"]]

    cli("delete", ids[0], user="bob@localhost")
    assert cli("list", "--json", user="bob@localhost").stdout == ""
    # per user: carol still has hers, alice her sent copy
    assert len(cli("list", "--json", user="carol@localhost").stdout.splitlines()) == 1
    assert len(cli("list", "--folder", "sent", "--json").stdout.splitlines()) == 1


def test_restart_loses_nothing(tmp_path: Path) -> None:
    first = start_server(tmp_path / "data")
    try:
        alice = first.client()
        ids = [alice.send(["bob@localhost"], f"message {n}", "x" * n).message_id for n in range(5)]
    finally:
        first.stop()
    second = start_server(tmp_path / "data")
    try:
        bob = second.client("bob@localhost")
        headers = list(bob.iter_headers(page_size=2))
        assert sorted(h.message_id for h in headers) == sorted(ids)
        assert bob.retrieve(headers[0].id).body == "x" * 4
    finally:
        second.stop()


def test_paging_with_cursor_walks_every_message_once(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    for n in range(7):
        alice.send(["bob@localhost"], f"n{n}")
    page = bob.list_headers(limit=3)
    assert [h.subject for h in page.headers] == ["n6", "n5", "n4"] and page.next_cursor
    seen = [h.subject for h in bob.iter_headers(page_size=3)]
    assert seen == [f"n{n}" for n in range(6, -1, -1)]


def test_send_retry_with_same_message_id_stores_once(server: Running) -> None:
    alice, bob = server.client(), server.client("bob@localhost")
    first = alice.send(["bob@localhost"], "once", message_id="<retry-1@localhost>")
    again = alice.send(["bob@localhost"], "once", message_id="<retry-1@localhost>")
    assert first == again
    assert len(bob.list_headers().headers) == 1


def test_cli_exit_codes_and_one_line_errors(cli: Cli) -> None:
    wrong = cli("list", password="not the password", check=False)
    assert wrong.returncode == 2 and wrong.stderr.strip() == "wsemail: authentication failed"
    unknown = cli("send", "--to", "nobody@localhost", "--body", "x", check=False)
    assert unknown.returncode == 4 and "nobody@localhost" in unknown.stderr
    missing = cli("retrieve", "no-such-id", check=False)
    assert missing.returncode == 4 and "Traceback" not in missing.stderr
    usage = cli("list", "--limit", "-1", check=False)
    assert usage.returncode == 1
    bad_flag = cli("send", "--nope", check=False)
    assert bad_flag.returncode == 2  # a command-line mistake
    env = cli.env("alice@localhost")
    env["WSEMAIL_SERVER"] = "http://127.0.0.1:9/wsemail"
    import subprocess

    from conftest import wsemail_binary

    down = subprocess.run(
        [wsemail_binary(), "list"], env=env, capture_output=True, text=True, timeout=60
    )
    assert down.returncode == 3 and down.stderr.startswith("wsemail: cannot reach")
    assert len(down.stderr.strip().splitlines()) == 1


def test_login_without_keyring_backend_is_a_clear_error(cli: Cli) -> None:
    result = cli(
        "login",
        "--server",
        cli.server.url,
        "--user",
        "alice@localhost",
        "--password-stdin",
        input="correct horse battery\n",
        check=False,
    )
    assert result.returncode == 1
    assert "keyring" in result.stderr and "WSEMAIL_PASSWORD" in result.stderr
    assert "Traceback" not in result.stderr


def test_user_commands(cli: Cli, server: Running) -> None:
    data = str(server.config.data_dir)
    out = cli(
        "user",
        "add",
        "dave@localhost",
        "--password-stdin",
        "--data-dir",
        data,
        input="dave's password\n",
    )
    assert "added dave@localhost" in out.stdout
    assert "dave@localhost" in cli("user", "list", "--data-dir", data).stdout
    dup = cli(
        "user",
        "add",
        "dave@localhost",
        "--password-stdin",
        "--data-dir",
        data,
        input="another one\n",
        check=False,
    )
    assert dup.returncode == 1 and "already exists" in dup.stderr
    foreign = cli(
        "user",
        "add",
        "eve@elsewhere.test",
        "--password-stdin",
        "--data-dir",
        data,
        input="password123\n",
        check=False,
    )
    assert foreign.returncode == 1 and "not in this server's domain" in foreign.stderr
    cli("send", "--to", "dave@localhost", "--body", "hi")
    cli(
        "user",
        "passwd",
        "dave@localhost",
        "--password-stdin",
        "--data-dir",
        data,
        input="new password!\n",
    )
    assert (
        cli("list", user="dave@localhost", password="dave's password", check=False).returncode == 2
    )
    assert "hi" not in cli("list", user="dave@localhost", password="new password!").stderr
    cli("user", "remove", "dave@localhost", "--data-dir", data)
    assert cli("list", user="dave@localhost", password="new password!", check=False).returncode == 2


def test_message_ids_never_look_like_command_line_options(server: Running) -> None:
    alice = server.client()
    for n in range(200):
        alice.send(["bob@localhost"], f"n{n}")
    ids = [h.id for h in server.client("bob@localhost").iter_headers(page_size=500)]
    assert len(ids) == 200 and not any(i.startswith("-") for i in ids)


def test_a_malformed_server_url_is_a_usage_error(cli: Cli) -> None:
    import subprocess

    from conftest import wsemail_binary

    for url in ("notaurl", "http://[::1", "ftp://host/wsemail"):
        env = {**cli.env("alice@localhost"), "WSEMAIL_SERVER": url}
        result = subprocess.run(
            [wsemail_binary(), "list"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 1, result.stderr
        assert result.stderr.startswith("wsemail: not a server URL") and "Traceback" not in (
            result.stderr
        )
