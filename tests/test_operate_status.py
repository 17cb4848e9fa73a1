"""Operating a server (issue 21): `wsemail admin status` and `wsemail admin queue` against
a.test holding mail for b.test, which is down — real servers on loopback over TLS, the real
binary, signed answers checked; non-admin accounts are refused as for the plug-in
commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lxml import etree
from operate_helpers import holding_a, one_line_failure, run
from stores import on_store

import wsemail
from wsemail.client import admin
from wsemail.client.mail import Client
from wsemail.pki import create_root, write_crl
from wsemail.protocol.errors import Forbidden, UnknownRecipient
from wsemail.protocol.soap import q
from wsemail.server.operate import records
from wsemail.server.operate.records import SQLITE_MIGRATIONS as OPERATE_MIGRATIONS
from wsemail.server.postgres import schema as pg_schema
from wsemail.server.schema import MIGRATIONS

from conftest import PASSWORD, Running, inbox, start_server, wait_for


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    return ca


def signed_client(running: Running, ca: Path, user: str) -> Client:
    client = Client(
        running.url,
        user,
        PASSWORD,
        verify=str(ca / "root.pem"),
        tls_name=running.config.domain,
        trust_roots=[ca / "root.pem"],
    )
    running.clients.append(client)
    return client


def attempted(running: Running, count: int) -> bool:
    return running.count("SELECT coalesce(min(attempts), 0) FROM queue") >= count


def test_admin_status_reports_a_server_holding_mail_for_a_down_domain(
    tmp_path: Path, ca: Path
) -> None:
    a = holding_a(tmp_path, ca)
    try:
        alice = a.client("alice@a.test")
        alice.send(["bob@b.test", "carol@a.test"], "Held", "for b.test")  # one local delivery
        with pytest.raises(UnknownRecipient):  # one refusal
            alice.send(["nobody@a.test"], "Refused", "no such user")
        wait_for(lambda: attempted(a, 1), "the first attempt to b.test")

        done = run(a, ca, "admin", "status", "--json")
        assert done.returncode == 0, done.stderr
        status = json.loads(done.stdout)
        assert status["domain"] == "a.test" and status["version"] == wsemail.__version__
        assert status["uptime"] >= 0 and status["started"].endswith("Z")
        assert status["users"] == 4 and status["messages"] == 2  # alice's sent copy, carol's
        store = status["store"]
        assert store["kind"] == "sqlite-store" and store["size"] > 0
        assert store["schema"] == len(MIGRATIONS) and store["components"]["operate"] == len(
            OPERATE_MIGRATIONS
        )
        [held] = status["queue"]
        assert held["name"] == "b.test" and held["depth"] == 1 and held["attempts"] == 1
        assert 1800 - 5 <= held["next-attempt-in"] <= 3600
        assert held["last-error"] and held["oldest-age"] >= 0
        assert status["rates"]["deliveries"]["m1"] == 1.0
        assert status["rates"]["deliveries"]["m15"] == pytest.approx(1 / 15, abs=0.01)
        assert status["rates"]["refusals"]["total"] == 1
        assert status["rates"]["refusals"]["m5"] == 0.2
        assert status["sessions"] == {"push": 0, "party-lines": 0}
        roles = status["plugins"]
        assert {"name": "operate", "priority": 30} in roles["delivery"]
        assert roles["local-mta"] == [{"name": "local-delivery", "priority": 1000}]
        assert {"name": "admin", "priority": 100} in roles["extension"]
        assert "a.test" in status["certificate"]["subject"]
        assert status["certificate"]["seconds-left"] > 0
        [crl] = status["crls"]
        assert crl["seconds-left"] > 0 and crl["next-update"].endswith("Z")
        assert 0 < status["disk-free"] <= status["disk-total"]

        text = run(a, ca, "admin", "status").stdout
        assert "serving a.test" in text and "accounts    4 users, 2 messages" in text
        assert "queue       b.test: 1 waiting" in text and "1 attempt, last error:" in text
        assert "deliveries  1.00" in text and "local-mta: local-delivery (1000)" in text

        # the answer is signed by a.test's server and checked, as for every admin call
        checked = signed_client(a, ca, "admin@a.test")
        assert admin.status(checked)["domain"] == "a.test"
        assert checked.answer_check == "verified"
    finally:
        a.stop()


def test_non_admin_accounts_are_refused_the_operating_actions(tmp_path: Path, ca: Path) -> None:
    a = holding_a(tmp_path, ca)
    try:
        a.client("alice@a.test").send(["bob@b.test"], "Held", "for b.test")
        wait_for(lambda: attempted(a, 1), "the first attempt")
        before = a.count("SELECT count(*) FROM queue"), a.count("SELECT count(*) FROM messages")
        for args in (
            ("admin", "status"),
            ("admin", "queue"),
            ("admin", "queue", "--bounce", "1"),
            ("admin", "users", "--usage"),
            ("admin", "quota", "bob@a.test", "1G"),
            ("plugins", "list"),  # as today's plug-in commands
        ):
            line = one_line_failure(run(a, ca, *args, user="alice@a.test"), 4)
            assert "admin" in line, (args, line)
        alice = a.client("alice@a.test")
        for action in ("status", "rows", "users"):
            with pytest.raises(Forbidden):
                alice.extension("admin", etree.Element(q("Admin"), {"action": action}))
        after = a.count("SELECT count(*) FROM queue"), a.count("SELECT count(*) FROM messages")
        assert after == before
        assert admin.status(a.client("admin@a.test"))["domain"] == "a.test"  # still answers
    finally:
        a.stop()


def test_admin_queue_lists_retries_and_bounces_one_message(tmp_path: Path, ca: Path) -> None:
    a = holding_a(tmp_path, ca)
    try:
        alice = a.client("alice@a.test")
        alice.send(["bob@b.test"], "First", "one")
        alice.send(["carol@b.test", "dave@b.test"], "Second", "two")
        wait_for(lambda: attempted(a, 1), "the first attempts")

        rows = [
            json.loads(line) for line in run(a, ca, "admin", "queue", "--json").stdout.splitlines()
        ]
        assert [r["recipients"] for r in rows] == ["bob@b.test", "carol@b.test dave@b.test"]
        assert all(r["domain"] == "b.test" and r["attempts"] == 1 for r in rows)
        assert all(r["sender"] == "alice@a.test" and r["state"] == "deferred" for r in rows)
        first, second = rows[0]["id"], rows[1]["id"]
        assert run(a, ca, "admin", "queue", "--domain", "b.test", "--json").stdout.count("\n") == 2
        other = run(a, ca, "admin", "queue", "--domain", "c.test")
        assert other.stdout.strip() == "the outbound queue is empty for c.test"
        table = run(a, ca, "admin", "queue").stdout.splitlines()
        assert table[0].split()[:3] == ["id", "domain", "tries"] and "last error:" in table[2]

        retried = run(a, ca, "admin", "queue", "--retry", str(first))
        assert retried.returncode == 0 and f"{first} will be tried now" in retried.stdout
        wait_for(lambda: a.count(f"SELECT attempts FROM queue WHERE id={first}") == 2, "the retry")
        assert a.count(f"SELECT attempts FROM queue WHERE id={second}") == 1

        bounced = run(a, ca, "admin", "queue", "--bounce", str(second))
        assert bounced.returncode == 0, bounced.stderr
        assert a.count(f"SELECT count(*) FROM queue WHERE id={second}") == 0
        assert inbox(a, "alice@a.test") == ["Undeliverable: Second"]
        notice = a.client("alice@a.test")
        body = notice.retrieve(notice.list_headers().headers[0].id).body
        assert "carol@b.test, dave@b.test" in body
        assert "returned by the administrator of a.test (admin@a.test)" in body

        gone = one_line_failure(run(a, ca, "admin", "queue", "--bounce", str(second)), 4)
        assert f"no waiting queued message {second}" in gone
        both = one_line_failure(run(a, ca, "admin", "queue", "--retry", "1", "--bounce", "2"), 2)
        assert "not both" in both
        assert a.count("SELECT count(*) FROM queue") == 1  # the first still waits
    finally:
        a.stop()


@pytest.mark.both_stores
def test_admin_status_names_the_store_its_size_and_schema(tmp_path: Path, store_url: str) -> None:
    running = start_server(tmp_path / "s", **on_store(store_url))
    try:
        running.client().send(["bob@localhost"], "Kept", "x" * 50)
        status = admin.status(running.client("admin@localhost"))
        store = status["store"]
        assert status["messages"] == 2 and store["size"] > 0
        if store_url:  # the database's size as PostgreSQL counts it, its schema_version
            assert store["kind"] == "postgresql-store"
            assert store["schema"] == len(pg_schema.MIGRATIONS)
            assert store["components"]["operate"] == len(records.POSTGRESQL_MIGRATIONS)
            size = running.count("SELECT pg_database_size(current_database())")
            assert abs(store["size"] - size) < size // 2
        else:
            assert store["kind"] == "sqlite-store" and store["schema"] == len(MIGRATIONS)
            assert store["components"]["operate"] == len(OPERATE_MIGRATIONS)
        # the quota totals the triggers keep agree with the mailboxes on both stores
        usage = admin.storage_usage(running.client("bob@localhost"))
        assert usage is not None and usage.messages == 1
        assert usage.message_bytes == running.count(
            "SELECT sum(size) FROM messages WHERE owner='bob@localhost'"
        )
    finally:
        running.stop()
