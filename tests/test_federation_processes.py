"""The federation as an operator sets it up: `wsemail ca` for the root and two domains, two
real `wsemail serve` processes over TLS, and the CLI on both ends."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from conftest import PASSWORD, wsemail_binary


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(*args: str, input: str = "", env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [wsemail_binary(), *args], input=input, capture_output=True, text=True, timeout=60, env=env
    )
    assert result.returncode == 0, f"wsemail {' '.join(args)}: {result.stderr}"
    return result.stdout


def test_two_domains_set_up_with_the_cli_exchange_signed_mail(tmp_path: Path) -> None:
    ca = tmp_path / "ca"
    run("ca", "init", "--ca-dir", str(ca))
    run("ca", "crl", "--ca-dir", str(ca))
    ports = {"a.test": free_port(), "b.test": free_port()}
    other = {"a.test": "b.test", "b.test": "a.test"}
    procs = []
    try:
        for domain, port in ports.items():
            data = tmp_path / domain
            run("ca", "issue-server", domain, "--ca-dir", str(ca), "--out", str(data / "fed"))
            (data / "server.toml").write_text(
                f'domain = "{domain}"\nport = {port}\n'
                '[tls]\ncert = "fed/server.pem"\nkey = "fed/server.key"\n'
                '[federation]\nidentity = "fed"\ntrust_roots = ["fed/root.pem"]\n'
                f'crls = ["{ca / "crl.pem"}"]\n'
                f'[routes]\n"{other[domain]}" = ["https://127.0.0.1:{ports[other[domain]]}'
                '/wsemail"]\n[queue]\nretry_base = 0.5\nretry_max = 1\n'
            )
            user = "alice" if domain == "a.test" else "bob"
            run(
                "user",
                "add",
                f"{user}@{domain}",
                "--password-stdin",
                "--data-dir",
                str(data),
                input=PASSWORD + "\n",
            )
            proc = subprocess.Popen(
                [wsemail_binary(), "serve", "--data-dir", str(data)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert f"serving {domain} at https://127.0.0.1:{port}/wsemail" in line, line

        def env(domain: str, user: str) -> dict[str, str]:
            return {
                **os.environ,
                "WSEMAIL_SERVER": f"https://127.0.0.1:{ports[domain]}/wsemail",
                "WSEMAIL_USER": user,
                "WSEMAIL_PASSWORD": PASSWORD,
                "WSEMAIL_CACERT": str(ca / "root.pem"),
                "WSEMAIL_TLS_NAME": domain,
                "WSEMAIL_TRUST_ROOTS": str(ca / "root.pem"),
            }

        run(
            "send",
            "--to",
            "bob@b.test",
            "-s",
            "From the CLI",
            input="Across two processes",
            env=env("a.test", "alice@a.test"),
        )
        deadline = time.monotonic() + 30
        while not (listed := run("list", "--json", env=env("b.test", "bob@b.test"))):
            assert time.monotonic() < deadline, "bob never got the message"
            time.sleep(0.2)
        message = json.loads(
            run(
                "retrieve",
                "--json",
                input=json.loads(listed)["id"],
                env=env("b.test", "bob@b.test"),
            )
        )
        assert message["subject"] == "From the CLI" and message["body"] == "Across two processes"
        assert message["provenance"]["status"] == "verified"
        assert message["provenance"]["signer"] == "a.test"
        plain = run("retrieve", message["id"], env=env("b.test", "bob@b.test"))
        assert "Provenance: signed by a.test ✓" in plain
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)
            if proc.stdout is not None:
                proc.stdout.close()
