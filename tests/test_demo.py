"""`wsemail demo`, the first thing a newcomer runs, through the real binary."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

from conftest import wsemail_binary

# a shell where the venv's wsemail is not on PATH, as after `scripts/install`
BARE_PATH = "/usr/bin:/bin"


def wait_for_line(log: Path, proc: subprocess.Popen[bytes], text: str) -> str:
    deadline = time.monotonic() + 60
    while text not in (out := log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, out
        time.sleep(0.1)
    return out


def run_as_printed(lines: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The demo's hint, pasted into a fresh shell in `cwd` that has no wsemail on its PATH."""
    env = {"HOME": os.environ.get("HOME", "/tmp"), "PATH": BARE_PATH, "LANG": "C.UTF-8"}
    return subprocess.run(
        ["/bin/sh", "-c", "\n".join(line.strip() for line in lines)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_demo_shows_a_verified_signature_across_two_domains() -> None:
    result = subprocess.run([wsemail_binary(), "demo"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (
        "bob@b.test's inbox: 'Hello from a.test' from alice@a.test — signed by a.test ✓"
        in result.stdout
    )
    assert (
        "bob@b.test opened 'Encrypted from a.test', end-to-end encrypted and signed by "
        "alice@a.test ✓" in result.stdout
    )


def test_demo_serve_writes_state_for_the_ordinary_cli(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    log = tmp_path / "demo.log"
    activated = f"{Path(wsemail_binary()).parent}:{BARE_PATH}"  # as `. .venv/bin/activate`
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["wsemail", "demo", "--serve", "--state", str(state), "--dir", str(tmp_path / "demo")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PATH": activated},
        )
    try:
        out = wait_for_line(log, proc, "serving until Ctrl-C")
        hint = out.split("for example:\n", 1)[1].splitlines()[:1]
        printed = run_as_printed(hint, tmp_path)
        assert printed.returncode == 0, (hint, printed.stderr)
        assert "Hello from a.test" in printed.stdout
        info = json.loads(state.read_text())
        assert set(info["domains"]) == {"a.test", "b.test"}
        assert {"alice@a.test", "bob@b.test"} <= set(info["users"])
        bob = info["users"]["bob@b.test"]
        env = {
            **os.environ,
            "WSEMAIL_SERVER": bob["server"],
            "WSEMAIL_USER": "bob@b.test",
            "WSEMAIL_PASSWORD": bob["password"],
            "WSEMAIL_TRUST_ROOTS": info["trust_roots"],
        }
        listed = subprocess.run(
            [wsemail_binary(), "list", "--json"],
            env=env,
            text=True,
            capture_output=True,
            timeout=60,
            check=True,
        ).stdout
        message = json.loads(
            subprocess.run(
                [wsemail_binary(), "retrieve", "--json"],
                input=next(
                    h["id"]
                    for h in map(json.loads, listed.splitlines())
                    if h["subject"] == "Hello from a.test"
                ),
                env=env,
                text=True,
                capture_output=True,
                timeout=60,
                check=True,
            ).stdout
        )
        assert message["provenance"]["signer"] == "a.test"
        # more users while it runs, with the ordinary admin command
        subprocess.run(
            [
                wsemail_binary(),
                "user",
                "add",
                "erin@b.test",
                "--password-stdin",
                "--data-dir",
                info["domains"]["b.test"]["data_dir"],
            ],
            input="erin's password\n",
            text=True,
            check=True,
            capture_output=True,
            timeout=60,
        )
        alice = info["users"]["alice@a.test"]
        subprocess.run(
            [wsemail_binary(), "send", "--to", "erin@b.test", "--body", "welcome"],
            env={
                **env,
                "WSEMAIL_SERVER": alice["server"],
                "WSEMAIL_USER": "alice@a.test",
                "WSEMAIL_PASSWORD": alice["password"],
            },
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        # the ordinary CLI with the demo's client.toml and nothing else: the accounts carry
        # server, trust roots, password command and the other domain's directory route
        device = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")} | {
            "WSEMAIL_CLIENT_CONFIG": info["client_config"],
            "PYTHON_KEYRING_BACKEND": "keyring.backends.fail.Keyring",
            "WSEMAIL_KEYS_DIR": str(tmp_path / "keys"),
            "WSEMAIL_KEY_PASSPHRASE": "this device's passphrase",
            "WSEMAIL_DIRECTORY_CACHE": str(tmp_path / "directory-cache"),
        }

        def demo_cli(account: str, *args: str) -> str:
            done = subprocess.run(
                [wsemail_binary(), *args, "--account", account],
                env=device,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert done.returncode == 0, (args, done.stderr)
            return done.stdout

        assert "Hello from a.test" in demo_cli("bob@b.test", "list")
        demo_cli("alice@a.test", "keys", "create")
        demo_cli("bob@b.test", "keys", "create")
        demo_cli("alice@a.test", "send", "--to", "bob@b.test", "--body", "sealed", "--encrypt")
        deadline = time.monotonic() + 30
        while True:
            headers = [
                json.loads(line) for line in demo_cli("bob@b.test", "list", "--json").splitlines()
            ]
            if len(headers) == 3:  # the demo's signed and encrypted ones, and this one
                break
            assert time.monotonic() < deadline, headers
            time.sleep(0.2)
        opened = json.loads(demo_cli("bob@b.test", "retrieve", "--json", headers[0]["id"]))
        assert opened["body"] == "sealed" and opened["e2e"]["signer"] == "alice@a.test"
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0


def test_serve_demo_hint_works_as_printed_without_wsemail_on_path(tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    binary = Path(wsemail_binary())
    project = binary.parent.parent.parent  # started as .venv/bin/wsemail, as the README says
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(binary.relative_to(project)), "serve", "--demo"]
            + ["--data-dir", str(tmp_path / "data"), "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=project,
            env={**os.environ, "PATH": BARE_PATH},
        )
    try:
        out = wait_for_line(log, proc, "in another terminal:")
        hint = out.split("in another terminal:\n", 1)[1].splitlines()[:2]
        printed = run_as_printed(hint, tmp_path)  # another terminal, another folder
        assert printed.returncode == 0, (hint, printed.stderr)
        assert printed.stdout.count("Hello from wsemail") == 2  # listed, then read
        assert "Signed, sealed, delivered over SOAP." in printed.stdout
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
