"""The outbound queue (issue 16, DESIGN.md §6): retries within seconds, doubling with jitter
up to an hour; a domain that answers again gets its whole queue at once; one delay notice,
then the bounce; the queue in the admin status. Real servers on loopback over TLS, with an
injected clock that the tests move on."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from test_federation import start_domain

from wsemail.pki import create_root, write_crl

from conftest import Cli, Running, inbox, start_server, wait_for

HOUR = 3600.0


class Clock:
    """A clock the test moves; the servers under test read it."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def relay_to(running: Running, when: float) -> None:
    """Move the clock to `when` and wake the relay."""
    relay = running.controller.server.relay
    assert relay is not None
    clock = running.controller.server.clock
    assert isinstance(clock, Clock)
    clock.now = when
    relay.wake_threadsafe()


def row(running: Running) -> tuple[int, float, float, int]:
    """(attempts, next_attempt, created, notified) of the one queued row."""
    return running.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute(
            "SELECT attempts, next_attempt, created, notified FROM queue"
        ).fetchone()
    )


def attempts(running: Running) -> int:
    return running.count("SELECT coalesce(max(attempts), 0) FROM queue")


@pytest.fixture
def ca(tmp_path: Path) -> Path:
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    return ca


def down_domain(tmp_path: Path, ca: Path, clock: Clock) -> tuple[str, int]:
    """b.test started once for an address, then stopped: (url, port)."""
    b = start_domain(tmp_path, ca, "b.test", clock=clock)
    url = b.url
    b.stop()
    return url, int(url.split(":")[2].split("/")[0])


def sender(tmp_path: Path, ca: Path, clock: Clock, url: str) -> Running:
    return start_domain(
        tmp_path,
        ca,
        "a.test",
        clock=clock,
        routes={"b.test": [url]},
        retry_base=5.0,
        retry_max=HOUR,
        relay_poll=0.1,
    )


def test_retries_start_within_seconds_and_double_with_jitter_up_to_an_hour(
    tmp_path: Path, ca: Path
) -> None:
    clock = Clock()
    url, _ = down_domain(tmp_path, ca, clock)
    a = sender(tmp_path, ca, clock, url)
    try:
        a.client("alice@a.test").send(["bob@b.test"], "Nowhere")
        wait_for(lambda: attempts(a) == 1, "the first attempt")
        delays = []
        for failures in range(1, 15):
            done, due, _, _ = row(a)
            assert done == failures
            delays.append(due - clock.now)
            relay_to(a, due)
            wait_for(lambda n=failures: attempts(a) == n + 1, "the next attempt")
        for failures, delay in enumerate(delays, start=1):
            ceiling = min(5.0 * 2 ** (failures - 1), HOUR)
            assert ceiling / 2 <= delay <= ceiling, (failures, delay)
        assert delays[0] <= 5.0  # the first retry comes within seconds, not minutes
        assert max(delays) <= HOUR and max(delays) >= HOUR / 2  # capped at an hour
        assert len({round(d, 3) for d in delays[-4:]}) == 4  # jittered, not in lockstep
        print("retry delays (s):", [round(d, 1) for d in delays])
    finally:
        a.stop()


def test_one_delivery_to_a_domain_back_brings_its_whole_queue_forward(
    tmp_path: Path, ca: Path
) -> None:
    clock = Clock()
    url, port = down_domain(tmp_path, ca, clock)
    a = sender(tmp_path, ca, clock, url)
    b = None
    try:
        alice = a.client("alice@a.test")
        for n in range(3):
            alice.send(["bob@b.test"], f"while down {n}")
        wait_for(lambda: a.count("SELECT min(attempts) FROM queue") == 1, "failed attempts")
        b = start_domain(tmp_path, ca, "b.test", port=port, clock=clock)
        alice.send(["bob@b.test"], "after")  # due now: delivered, and the rest follow
        wait_for(lambda: len(inbox(b, "bob@b.test")) == 4, "the whole queue")
        assert sorted(inbox(b, "bob@b.test")) == ["after"] + [f"while down {n}" for n in range(3)]
        assert a.count("SELECT count(*) FROM queue") == 0 and inbox(a, "alice@a.test") == []
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_mail_from_a_domain_back_brings_the_queue_for_it_forward(tmp_path: Path, ca: Path) -> None:
    clock = Clock()
    url, port = down_domain(tmp_path, ca, clock)
    a = sender(tmp_path, ca, clock, url)
    b = None
    try:
        for n in range(2):
            a.client("alice@a.test").send(["bob@b.test"], f"waiting {n}")
        wait_for(lambda: a.count("SELECT min(attempts) FROM queue") == 1, "failed attempts")
        b = start_domain(tmp_path, ca, "b.test", port=port, clock=clock, routes={"a.test": [a.url]})
        b.client("bob@b.test").send(["alice@a.test"], "I am back")
        wait_for(lambda: len(inbox(b, "bob@b.test")) == 2, "the queue for b.test")
        assert inbox(a, "alice@a.test") == ["I am back"]
    finally:
        a.stop()
        if b is not None:
            b.stop()


def test_one_delay_notice_after_four_hours_then_the_bounce_after_five_days(
    tmp_path: Path, ca: Path
) -> None:
    clock = Clock()
    url, _ = down_domain(tmp_path, ca, clock)
    a = sender(tmp_path, ca, clock, url)
    try:
        a.client("alice@a.test").send(["bob@b.test"], "Patience")
        wait_for(lambda: attempts(a) == 1, "the first attempt")
        _, due, created, _ = row(a)
        relay_to(a, created + 3.9 * HOUR)
        wait_for(lambda: attempts(a) == 2, "an attempt before four hours")
        assert inbox(a, "alice@a.test") == []
        for n, hours in enumerate((4.1, 5.5, 30.0), start=3):
            relay_to(a, created + hours * HOUR)
            wait_for(lambda n=n: attempts(a) == n, f"attempt {n}")
            assert inbox(a, "alice@a.test") == ["Delayed: Patience"]  # once, not per attempt
        notice = a.client("alice@a.test")
        first = notice.retrieve(notice.list_headers().headers[0].id)
        assert first.sender == "mailer-daemon@a.test" and "bob@b.test" in first.body
        assert "keeps trying until" in first.body
        relay_to(a, created + 5 * 24 * HOUR + 1)
        wait_for(lambda: a.count("SELECT count(*) FROM queue") == 0, "the bounce")
        assert inbox(a, "alice@a.test") == ["Undeliverable: Patience", "Delayed: Patience"]
    finally:
        a.stop()


def test_the_admin_status_shows_the_queue_per_domain(tmp_path: Path) -> None:
    server = start_server(
        tmp_path / "a",
        routes={"nowhere.test": ["https://127.0.0.1:9/wsemail"]},
        retry_base=3600.0,
        relay_poll=0.1,
    )
    try:
        home = tmp_path / "home"
        home.mkdir()
        cli = Cli(server, home)
        assert cli("plugins", "queue", user="admin@localhost").stdout.strip() == (
            "the outbound queue is empty"
        )
        for n in range(2):
            server.client().send(["x@nowhere.test"], f"queued {n}")
        wait_for(lambda: server.count("SELECT min(attempts) FROM queue") == 1, "attempts")
        lines = cli("plugins", "queue", "--json", user="admin@localhost").stdout.splitlines()
        status = [json.loads(line) for line in lines]
        assert len(status) == 1 and status[0]["name"] == "nowhere.test"
        assert status[0]["depth"] == 2 and status[0]["attempts"] == 1
        assert 1800 <= status[0]["next-attempt-in"] <= 3600
        assert "127.0.0.1:9" in status[0]["last-error"]
        table = cli("plugins", "queue", user="admin@localhost").stdout.splitlines()
        assert table[0].split()[:5] == ["domain", "depth", "oldest", "next", "in"]
        assert table[1].split()[:2] == ["nowhere.test", "2"]
        refused = cli("plugins", "queue", check=False)  # alice is no admin
        assert refused.returncode == 4 and "admin" in refused.stderr
    finally:
        server.stop()
