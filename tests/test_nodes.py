"""One domain on two nodes over one real PostgreSQL database: any node answers any request,
the replay cache and the failed-login counts are shared, and the outbound queue is relayed
once by some node."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_federation import Federation, start_domain
from test_rejections import SEND, signed

from wsemail.bench.nodes import free_port
from wsemail.bench.pgserver import PgServer
from wsemail.pki import create_root, write_crl
from wsemail.protocol.errors import RateLimited, ServerBusy

from conftest import (
    PASSWORD,
    Running,
    fault_subcode,
    inbox,
    start_server,
    wait_for,
    wsemail_binary,
)


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Running, Running]]:
    """Nodes a and b of localhost over one database (each with its own data dir)."""
    a = start_server(tmp_path / "node-a", store_url=pg_url, failures_per_user=3)
    b = start_server(tmp_path / "node-b", store_url=pg_url, users=False, failures_per_user=3)
    yield a, b
    a.stop()
    b.stop()


def test_mail_sent_at_one_node_is_listed_at_the_other(nodes: tuple[Running, Running]) -> None:
    a, b = nodes
    a.client("alice@localhost").send(["bob@localhost"], "Across nodes", "hello")
    assert inbox(b, "bob@localhost") == ["Across nodes"]
    header = b.client("bob@localhost").list_headers().headers[0]
    a.client("bob@localhost").delete(header.id)  # deleted at a: gone from b's listing too
    assert "Across nodes" not in inbox(b, "bob@localhost")


def test_a_request_accepted_at_one_node_is_refused_as_a_replay_at_the_other(
    nodes: tuple[Running, Running],
) -> None:
    a, b = nodes
    data = signed(a.credentials(), SEND)
    assert a.post(data).status_code == 200
    before = b.stored()
    replayed = b.post(data)
    assert replayed.status_code == 401 and fault_subcode(replayed) == "wsemail:Replay"
    assert b"Traceback" not in replayed.content
    assert b.stored() == before
    assert inbox(b, "bob@localhost") == ["s"]  # stored once, and b still serves


def test_failed_logins_at_one_node_count_at_the_other(nodes: tuple[Running, Running]) -> None:
    a, b = nodes
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 - AuthenticationFailed
            a.client("carol@localhost", "wrong password").list_headers()

    def refused_at_b() -> bool:
        try:
            b.client("carol@localhost", "still wrong").list_headers()
        except RateLimited:
            return True
        except Exception:  # AuthenticationFailed: b has not heard of a's failures yet
            return False
        raise AssertionError("a wrong password was accepted")

    wait_for(refused_at_b, "node b to count node a's failures", timeout=10)
    with pytest.raises(RateLimited):  # the right password too: this peer is limited
        b.client("carol@localhost", PASSWORD).list_headers()
    b.client("alice@localhost").list_headers()  # other users are not


@pytest.fixture
def fed_nodes(tmp_path: Path, pg_url: str) -> Iterator[Federation]:
    """a.test on two nodes over PostgreSQL, b.test on SQLite."""
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {
        "a.test": start_domain(tmp_path, ca, "a.test", store_url=pg_url),
        "b.test": start_domain(tmp_path, ca, "b.test"),
    }
    second = start_domain(tmp_path / "second", ca, "a.test", store_url=pg_url, users=False)
    fed = Federation(ca, {**servers, "a2": second})
    routes = {"a.test": [servers["a.test"].url], "b.test": [servers["b.test"].url]}
    from wsemail.core.routing import StaticResolver

    for running in fed.servers.values():
        running.controller.server.federation.resolver = StaticResolver(routes)  # type: ignore[union-attr]
    yield fed
    for running in fed.servers.values():
        for client in running.clients:
            client.close()
    for running in fed.servers.values():
        running.stop()


def test_both_nodes_relay_and_every_message_arrives_once(fed_nodes: Federation) -> None:
    a1, a2, b = fed_nodes.servers["a.test"], fed_nodes.servers["a2"], fed_nodes.b
    sent = 40
    for n in range(sent):
        node = a1 if n % 2 else a2
        node.client("alice@a.test").send(["bob@b.test"], f"m{n}", "x")
    wait_for(lambda: len(inbox(b, "bob@b.test")) >= sent, "every message at b.test", 30)
    subjects = inbox(b, "bob@b.test")
    assert sorted(subjects) == sorted(f"m{n}" for n in range(sent))  # each exactly once
    assert a1.count("SELECT count(*) FROM queue") == 0


def test_postgresql_stopped_mid_run_answers_busy_and_serves_again_when_back(
    tmp_path: Path,
) -> None:
    pg = PgServer().start()
    node = None
    try:
        node = start_server(tmp_path / "node", store_url=pg.database())
        alice = node.client("alice@localhost")
        alice.send(["bob@localhost"], "before", "x")
        pg.stop("immediate")  # as if the database host went away
        for _ in range(3):
            with pytest.raises(ServerBusy):
                alice.send(["bob@localhost"], "while down", "x")
        with pytest.raises(ServerBusy):
            node.client("bob@localhost").list_headers()
        pg.start()  # back on the same port: the node serves again without a restart

        def sends() -> bool:
            try:
                alice.send(["bob@localhost"], "after", "x")
            except ServerBusy:
                return False
            return True

        wait_for(sends, "a send after PostgreSQL came back", timeout=30)
        assert sorted(inbox(node, "bob@localhost")) == ["after", "before"]  # nothing else
    finally:
        if node is not None:
            node.stop()
        pg.close()


def test_an_unreachable_store_at_start_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = subprocess.run(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--port", "0",
         "--store", "postgresql://nobody@127.0.0.1:1/nothing"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot open the store" in lines[0], result.stderr
    bad = subprocess.run(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--store", "mysql://x"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert bad.returncode != 0 and "unknown store URL scheme" in bad.stderr
    assert "Traceback" not in bad.stderr + result.stderr


def test_workers_are_refused_on_the_sqlite_store(tmp_path: Path) -> None:
    result = subprocess.run(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert "--workers needs the PostgreSQL store" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_unit_that_loses_a_deadlock_to_another_node_runs_again(pg_url: str) -> None:
    """Two processes' units lock two rows in opposite orders: PostgreSQL aborts one of them;
    its store rolls it back to its savepoint and runs it again, and both complete."""
    import threading

    from wsemail.server.postgres.store import PostgresStore
    from wsemail.server.store import Tx

    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    both_locked = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def create(tx: Tx) -> None:
        tx.conn.execute("CREATE TABLE pair(k INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        tx.conn.execute("INSERT INTO pair VALUES (1, 0), (2, 0)")

    def locker(first: int, second: int, name: str) -> object:
        def work(tx: Tx) -> None:
            runs.append(name)
            tx.conn.execute("UPDATE pair SET v=v+1 WHERE k=?", (first,))
            if runs.count(name) == 1:  # the first run meets the other in the middle
                both_locked.wait()
            tx.conn.execute("UPDATE pair SET v=v+1 WHERE k=?", (second,))

        return work

    try:
        one.transact_sync(create)
        a = one.submit(locker(1, 2, "a"))  # type: ignore[arg-type]
        b = two.submit(locker(2, 1, "b"))  # type: ignore[arg-type]
        a.result(30), b.result(30)
        assert sorted(runs) in (["a", "a", "b"], ["a", "b", "b"])  # one ran twice
        rows = one.transact_sync(lambda tx: tx.conn.execute("SELECT v FROM pair").fetchall())
        assert [r[0] for r in rows] == [2, 2]  # each unit's updates counted once
    finally:
        one.close()
        two.close()


def test_copies_for_the_same_owners_in_opposite_orders_at_two_nodes_do_not_deadlock(
    pg_url: str,
) -> None:
    """Two nodes' units store copies for owners x and y in opposite orders, each waiting
    for the other in the middle: the owners' totals change at commit under one lock, so
    neither waits on the other's rows, both run once, and each copy is counted once."""
    import threading

    from wsemail.protocol.message import Message
    from wsemail.server.operate import records as operate
    from wsemail.server.postgres.store import PostgresStore
    from wsemail.server.store import Tx

    one, two = PostgresStore(pg_url), PostgresStore(pg_url)
    one.ensure_schema(operate.COMPONENT, operate.MIGRATIONS)
    middle = threading.Barrier(2, timeout=10)
    runs: list[str] = []

    def copy(n: str) -> Message:
        return Message(
            id="", message_id=f"<{n}@localhost>", folder="inbox", sender="s@localhost",
            to=["x@localhost"], cc=[], subject=n, date="2026-12-05T00:00:00Z", size=10, seen=False,
        )  # fmt: skip

    def storer(first: str, second: str, name: str) -> object:
        def work(tx: Tx) -> None:
            runs.append(name)
            tx.add_message(first, "inbox", copy(f"{name}1"))
            middle.wait()  # the other unit holds its first copy too
            tx.add_message(second, "inbox", copy(f"{name}2"))

        return work

    try:
        a = one.submit(storer("x@localhost", "y@localhost", "a"))  # type: ignore[arg-type]
        b = two.submit(storer("y@localhost", "x@localhost", "b"))  # type: ignore[arg-type]
        a.result(30), b.result(30)
        assert sorted(runs) == ["a", "b"]  # neither lost a deadlock and ran again
        totals = one.transact_sync(
            lambda tx: tx.conn.execute(
                "SELECT owner, messages, bytes FROM operate_usage ORDER BY owner"
            ).fetchall()
        )
        assert [tuple(r) for r in totals] == [("x@localhost", 2, 20), ("y@localhost", 2, 20)]
    finally:
        one.close()
        two.close()


def test_both_nodes_give_an_unknown_name_the_same_fake_salt(
    nodes: tuple[Running, Running],
) -> None:
    """The server secret is the domain's, kept in the database: a name without an account
    gets the same salt from every node, so asking two nodes does not tell it apart."""
    a, b = nodes
    for name in ("nobody@localhost", "someone.else@localhost"):
        assert a.client().get_salt(name) == b.client().get_salt(name)
    assert a.client().get_salt("alice@localhost") == b.client().get_salt("alice@localhost")


def _children(pid: int) -> set[int]:
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def _socket_pids(port: int, state: str) -> list[int]:
    """The pids owning this machine's TCP sockets on local `port` in `state` (ss)."""
    out = subprocess.run(
        ["ss", "-Htnp", "state", state, f"( sport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [int(p.split("=")[1]) for p in re.findall(r"pid=\d+", out)]


def test_workers_listen_each_share_the_connections_and_come_back_when_killed(
    tmp_path: Path, pg_url: str
) -> None:
    """`serve --workers 2`: a listening socket per worker on the one port (SO_REUSEPORT),
    connections spread over both, a SIGKILLed worker started again and serving."""
    port = free_port()
    log = (tmp_path / "stderr").open("w")  # a file: a pipe nobody reads would fill up
    server = subprocess.Popen(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--store", pg_url,
         "--workers", "2", "--port", str(port)],
        stdout=subprocess.PIPE, stderr=log, text=True,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f":{port}/wsemail" in line, line
        url = f"http://127.0.0.1:{port}/wsemail"
        workers = _children(server.pid)
        assert len(workers) == 2
        wait_for(lambda: sorted(_socket_pids(port, "listening")) == sorted(workers), "listeners")
        for _ in range(32):  # each accepted by one worker or the other (2**-31: all by one)
            held.append(socket.create_connection(("127.0.0.1", port)))
        wait_for(lambda: len(_socket_pids(port, "established")) == 32, "32 accepted")
        assert set(_socket_pids(port, "established")) == workers
        victim = min(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(_children(server.pid)) == 2 and victim not in _children(server.pid),
                 "the killed worker started again", timeout=30)  # fmt: skip
        again = _children(server.pid)
        wait_for(lambda: sorted(_socket_pids(port, "listening")) == sorted(again), "listeners")
        for _ in range(8):  # whichever worker takes it, it answers
            assert httpx.get(url + "?wsdl", timeout=10).status_code == 200
    finally:
        for sock in held:
            sock.close()
        server.send_signal(signal.SIGTERM)
        try:
            assert server.wait(timeout=60) == 0
        finally:
            if server.poll() is None:  # never left behind, whatever failed
                server.kill()
                server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()
        log.close()
    assert "Traceback" not in (tmp_path / "stderr").read_text()
    with socket.socket() as sock:  # nobody listens there any more (TIME_WAIT aside)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        sock.listen()


def test_workers_end_when_their_parent_is_killed(tmp_path: Path, pg_url: str) -> None:
    server = subprocess.Popen(
        [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--store", pg_url,
         "--workers", "2", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    try:
        assert server.stdout is not None and " at " in server.stdout.readline()
        workers = _children(server.pid)
        assert len(workers) == 2
        server.kill()  # SIGKILL: no chance to stop them itself
        server.wait(timeout=30)

        def gone() -> bool:
            return not any(Path(f"/proc/{pid}").exists() for pid in workers)

        wait_for(gone, "the workers to end with their parent", timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()


def test_workers_on_a_taken_port_are_one_line_and_nothing_serves(
    tmp_path: Path, pg_url: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [wsemail_binary(), "serve", "--data-dir", str(tmp_path / "d"), "--store", pg_url,
             "--workers", "2", "--port", str(port)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode != 0
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and f"cannot listen on 127.0.0.1:{port}" in lines[0], lines
        assert _socket_pids(port, "listening") == [os.getpid()]  # the taker alone
