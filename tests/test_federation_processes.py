"""The federation as an operator sets it up: `wsemail ca` for the root and two domains, two
real `wsemail serve` processes over TLS, and the CLI on both ends."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from wsemail.bench.nodes import free_port

from conftest import PASSWORD, wsemail_binary


def start_serving(data_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    """`wsemail serve` with its output in a file (a full pipe would block the server)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [wsemail_binary(), "serve", "--data-dir", str(data_dir)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    while "serving" not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc


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
            for user in ("alice", "dave") if domain == "a.test" else ("bob",):
                run(
                    "user",
                    "add",
                    f"{user}@{domain}",
                    "--password-stdin",
                    "--data-dir",
                    str(data),
                    input=PASSWORD + "\n",
                )
            procs.append(start_serving(data, tmp_path / f"{domain}.log"))
            line = (tmp_path / f"{domain}.log").read_text()
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
            "--cc",
            "dave@a.test",
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
        # bob's server altered the stored copy: the reader's check fails, the content stays
        # hidden unless asked for, and the exit says so
        db = tmp_path / "b.test" / "wsemail.db"
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE messages SET body = 'Pay mallory', signed_xml = CAST(replace("
                "CAST(signed_xml AS TEXT), 'Across two processes', 'Pay mallory') AS BLOB) "
                "WHERE id = ?",
                (message["id"],),
            )
        conn.close()
        for extra in ([], ["--show-unverified"]):
            shown = subprocess.run(
                [wsemail_binary(), "retrieve", *extra, message["id"]],
                capture_output=True,
                text=True,
                timeout=60,
                env=env("b.test", "bob@b.test"),
            )
            assert shown.returncode == 2 and "Traceback" not in shown.stderr, shown.stderr
            assert "signature check FAILED" in shown.stdout + shown.stderr
            assert ("Pay mallory" in shown.stdout) == bool(extra), shown.stdout
        local = run("list", "--json", env=env("a.test", "dave@a.test"))
        dave_copy = json.loads(
            run(
                "retrieve",
                "--json",
                input=json.loads(local)["id"],
                env=env("a.test", "dave@a.test"),
            )
        )
        assert dave_copy["provenance"]["status"] == "local"

        # and back: bob answers alice
        run(
            "send",
            "--to",
            "alice@a.test",
            "-s",
            "Re: From the CLI",
            input="Got it",
            env=env("b.test", "bob@b.test"),
        )
        deadline = time.monotonic() + 30
        while not (listed := run("list", "--json", env=env("a.test", "alice@a.test"))):
            assert time.monotonic() < deadline, "alice never got the answer"
            time.sleep(0.2)
        answer = json.loads(
            run(
                "retrieve",
                "--json",
                input=json.loads(listed)["id"],
                env=env("a.test", "alice@a.test"),
            )
        )
        assert answer["body"] == "Got it" and answer["provenance"]["signer"] == "b.test"
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=20)


def test_sender_killed_mid_delivery_delivers_each_message_once_after_restart(
    tmp_path: Path,
) -> None:
    from wsemail.client.mail import Client

    ca = tmp_path / "ca"
    run("ca", "init", "--ca-dir", str(ca))
    run("ca", "crl", "--ca-dir", str(ca))
    ports = {"a.test": free_port(), "b.test": free_port()}
    data = {d: tmp_path / d for d in ports}
    for domain, port in ports.items():
        run("ca", "issue-server", domain, "--ca-dir", str(ca), "--out", str(data[domain] / "fed"))
        peer = "b.test" if domain == "a.test" else "a.test"
        (data[domain] / "server.toml").write_text(
            f'domain = "{domain}"\nport = {port}\n'
            '[tls]\ncert = "fed/server.pem"\nkey = "fed/server.key"\n'
            '[federation]\nidentity = "fed"\ntrust_roots = ["fed/root.pem"]\n'
            f'crls = ["{ca / "crl.pem"}"]\n'
            f'[routes]\n"{peer}" = ["https://127.0.0.1:{ports[peer]}/wsemail"]\n'
            "[queue]\nretry_base = 0.2\nretry_max = 0.5\nbatch_max = 5\n"
        )
    run(
        "user",
        "add",
        "alice@a.test",
        "--password-stdin",
        "--data-dir",
        str(data["a.test"]),
        input=PASSWORD + "\n",
    )
    run(
        "user",
        "add",
        "bob@b.test",
        "--password-stdin",
        "--data-dir",
        str(data["b.test"]),
        input=PASSWORD + "\n",
    )

    def serve(domain: str) -> subprocess.Popen[bytes]:
        return start_serving(data[domain], tmp_path / f"{domain}-{time.monotonic_ns()}.log")

    def client(domain: str, user: str) -> Client:
        return Client(
            f"https://127.0.0.1:{ports[domain]}/wsemail",
            user,
            PASSWORD,
            verify=str(ca / "root.pem"),
            tls_name=domain,
        )

    b = serve("b.test")
    a = serve("a.test")
    procs = [a, b]
    try:
        with client("a.test", "alice@a.test") as alice:
            ids = [alice.send(["bob@b.test"], f"m{n}", "x" * 500).message_id for n in range(60)]
        a.send_signal(signal.SIGKILL)  # while its relay is busy with the batches
        a.wait(timeout=20)
        a = serve("a.test")
        procs.append(a)
        with client("b.test", "bob@b.test") as bob:
            deadline = time.monotonic() + 60
            while len(got := list(bob.iter_headers())) < len(ids):
                assert time.monotonic() < deadline, f"only {len(got)} of {len(ids)} arrived"
                time.sleep(0.2)
            time.sleep(1.0)  # let any duplicate arrive before counting
            got = list(bob.iter_headers())
        assert sorted(h.message_id for h in got) == sorted(ids)  # each exactly once
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=20)
