"""Structured logs (issue 21): `wsemail serve --log-format json --log-level …` writes one
JSON object per line, one line per request with operation, user, outcome and time, and never
a password, MAC key, token or message body. Through the real `wsemail serve` process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import httpx

from wsemail.client.mail import Client
from wsemail.protocol.auth import derive_key
from wsemail.protocol.errors import AuthenticationFailed

from conftest import PASSWORD, wsemail_binary

TOKEN = "metrics-token-that-must-not-be-logged"
BODY = "the body text that must never reach a log line"
SUBJECT = "Subject that may be logged? no: not even that"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(data_dir: Path, *flags: str) -> tuple[subprocess.Popen[str], str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    port = free_port()
    process = subprocess.Popen(
        [wsemail_binary(), "serve", "--data-dir", str(data_dir), "--port", str(port), *flags],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert "serving localhost" in line, line + (process.stderr.read() if process.stderr else "")
    return process, f"http://127.0.0.1:{port}/wsemail"


def add_user(data_dir: Path, address: str) -> None:
    subprocess.run(
        [wsemail_binary(), "user", "add", address, "--password-stdin", "--data-dir", str(data_dir)],
        input=PASSWORD + "\n",
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serve_logs_one_json_line_per_request_and_no_secret(tmp_path: Path) -> None:
    data_dir = tmp_path / "server"
    for name in ("alice", "bob"):
        add_user(data_dir, f"{name}@localhost")
    (data_dir / "server.toml").write_text(f'[metrics]\ntoken = "{TOKEN}"\n', encoding="utf-8")
    process, url = serve(data_dir, "--log-format", "json", "--log-level", "debug")
    try:
        with Client(url, "alice@localhost", PASSWORD) as alice:
            alice.send(["bob@localhost"], SUBJECT, BODY)
            salt = alice.get_salt("alice@localhost")
        with Client(url, "bob@localhost", PASSWORD) as bob:
            bob.retrieve(bob.list_headers().headers[0].id)
        try:
            with Client(url, "bob@localhost", "not the password") as wrong:
                wrong.list_headers()
        except AuthenticationFailed:
            pass
        metrics = httpx.get(
            url.replace("/wsemail", "/metrics"),
            headers={"authorization": f"Bearer {TOKEN}"},
            timeout=10,
        )
        assert metrics.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, log = process.communicate(timeout=30)
    assert process.returncode == 0, log

    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    requests = [e for e in entries if e["logger"] == "wsemail.request"]
    assert all({"time", "level", "message"} <= e.keys() for e in entries)
    by_operation = {(e["operation"], e["outcome"]): e for e in requests}
    sent = by_operation[("Send", "ok")]
    assert sent["user"] == "alice@localhost" and sent["seconds"] > 0 and sent["status"] == 200
    assert by_operation[("Retrieve", "ok")]["user"] == "bob@localhost"
    refused = by_operation[("ListHeaders", "FailedAuthentication")]
    assert refused["status"] == 401 and refused["user"] == ""
    assert ("GetSalt", "ok") in by_operation
    assert len([e for e in requests if e["operation"] == "Send"]) == 1  # one line a request

    key = derive_key(PASSWORD, salt)
    for secret in (
        PASSWORD,
        "not the password",
        BODY,
        SUBJECT,
        TOKEN,
        base64.b64encode(key).decode(),
        key.hex(),
    ):
        assert secret not in log, secret


def test_serve_refuses_an_unknown_log_format_in_one_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path), "--log-format", "xml"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == "wsemail: --log-format must be one of text, json"
