"""Two nodes of one domain over one PostgreSQL database (issue 20): a listener whose push
stream is held by node A is told of new mail and sent the instant messages that come in
through node B, each once on the wire (read raw, not through the client that drops
repeats); presence and acknowledgements cross nodes; an unacknowledged push moves on once;
the nodes listen again after the database restarts or their LISTEN connection is cut; a
node that starts leaves alone the pushes another node waits on."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from lxml import etree
from stores import on_store
from test_im_scale import hub_of, with_im

from wsemail.bench.pgserver import PgServer
from wsemail.client.im import InstantMessenger
from wsemail.protocol.errors import ServerBusy
from wsemail.protocol.soap import q, text_of
from wsemail.server.im.nodes import Nodes

from conftest import Running, start_server, wait_for

BOB = "bob@localhost"


def nodes_of(running: Running) -> Nodes:
    found = hub_of(running)._nodes
    assert found is not None
    return found


class Wire:
    """A push stream read raw by a thread: every SSE event as (kind, id, data)."""

    def __init__(self, running: Running, user: str, query: str = "") -> None:
        im = InstantMessenger(running.client(user))
        answer = im._call(etree.Element(q("OpenStream")))
        ticket = text_of(answer, "Ticket", "") or ""
        url = httpx.URL(running.url).copy_with(
            path="/wsemail/im/stream", query=f"ticket={ticket}{query}".encode()
        )
        self.events: list[tuple[str, str, dict[str, object]]] = []
        self._http = httpx.Client(timeout=httpx.Timeout(10, read=None))
        self._response = self._http.send(self._http.build_request("GET", url), stream=True)
        assert self._response.status_code == 200
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        assert self._ready.wait(10), "no ready event"

    def _read(self) -> None:
        kind, push_id = "", ""
        try:
            for line in self._response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("id: "):
                    push_id = line[4:]
                elif line.startswith("data: "):
                    self.events.append((kind, push_id, json.loads(line[6:])))
                    if kind == "ready":
                        self._ready.set()
                    kind, push_id = "", ""
        except httpx.HTTPError:
            pass

    def of(self, kind: str) -> list[tuple[str, str, dict[str, object]]]:
        return [e for e in self.events if e[0] == kind]

    def close(self) -> None:
        self._response.close()
        self._http.close()
        self._thread.join(10)


@pytest.fixture
def nodes(tmp_path: Path, pg_url: str) -> Iterator[tuple[Running, Running]]:
    settings = on_store(pg_url, with_im(heartbeat=1))
    a = start_server(tmp_path / "a", **settings)
    b = start_server(tmp_path / "b", **settings)
    yield a, b
    b.stop()
    a.stop()


def test_new_mail_sent_through_node_b_reaches_a_listener_on_node_a_once(
    nodes: tuple[Running, Running],
) -> None:
    a, b = nodes
    wire = Wire(a, BOB, "&mail=now&im=0")
    try:
        for subject, node in [("one", b), ("two", a), ("three", b), ("four", b)]:
            node.client().send([BOB], subject, "x")
        wait_for(lambda: len(wire.of("mail")) >= 4, "four new-mail events on node A")
        mails = wire.of("mail")
        assert sorted(str(m[2]["subject"]) for m in mails) == ["four", "one", "three", "two"]
        ids = [m[2]["id"] for m in mails]
        assert len(set(ids)) == 4  # each copy told once
        cursors = [int(str(m[2]["cursor"])) for m in mails]
        assert cursors == sorted(cursors) and len(set(cursors)) == 4
        assert set(ids) == {h.id for h in a.client(BOB).list_headers().headers}
    finally:
        wire.close()
    assert len(wire.of("mail")) == 4  # and nothing came twice before the stream closed


def test_an_instant_message_sent_through_node_b_is_pushed_by_node_a_once(
    nodes: tuple[Running, Running],
) -> None:
    a, b = nodes
    wire = Wire(a, BOB)
    try:
        alice_b = InstantMessenger(b.client())
        # B sees bob online (his session is on A) and pushes through A
        wait_for(lambda: alice_b.who([BOB])[0].status == "online", "bob online as B sees him")
        alice_b.send(BOB, "hello from b")
        wait_for(lambda: wire.of("message"), "the push on node A")
        [(_, push_id, data)] = wire.of("message")
        assert data["body"] == "hello from b" and data["from"] == "alice@localhost"
        # acknowledged through node B: node A does not take the session for dead
        assert InstantMessenger(b.client(BOB)).ack([push_id]) == {push_id: "acked"}
        alice_b.send(BOB, "second")
        wait_for(lambda: len(wire.of("message")) == 2, "the second push")
        second = wire.of("message")[1][1]
        assert InstantMessenger(a.client(BOB)).ack([second]) == {second: "acked"}
        assert [e[1] for e in wire.of("message")] == [push_id, second]  # once each
        assert a.count(f"SELECT count(*) FROM messages WHERE owner='{BOB}'") == 0  # noqa: S608
        assert a.count("SELECT count(*) FROM im_history WHERE outcome='acked'") == 2
    finally:
        wire.close()
    # bob gone from A: B keeps the next one in the mailbox at once
    alice_b = InstantMessenger(b.client())
    wait_for(lambda: alice_b.who([BOB])[0].status == "offline", "bob offline as B sees him")
    alice_b.send(BOB, "later")
    assert [h.subject for h in b.client(BOB).list_headers().headers] == ["Instant message"]


def test_a_recipient_on_both_nodes_gets_one_push_per_session_and_it_moves_on_once(
    tmp_path: Path, pg_url: str
) -> None:
    settings = on_store(pg_url, with_im(heartbeat=1, ack_timeout=0.5))
    a = start_server(tmp_path / "a", **settings)
    b = start_server(tmp_path / "b", **settings)
    on_a, on_b = Wire(a, BOB), Wire(b, BOB)
    try:
        alice_b = InstantMessenger(b.client())
        wait_for(lambda: alice_b.who([BOB])[0].sessions == 2, "bob's two sessions")
        alice_b.send(BOB, "nobody acknowledges this")
        wait_for(lambda: on_a.of("message") and on_b.of("message"), "a push on each node")
        # not acknowledged: moved on by one node's sweeper into the mailbox, once
        wait_for(
            lambda: (
                [h.subject for h in a.client(BOB).list_headers().headers] == ["Instant message"]
            ),
            "the fallback copy",
        )
        assert len(on_a.of("message")) == len(on_b.of("message")) == 1
        assert a.count("SELECT count(*) FROM im_history WHERE outcome='mailbox'") == 1
        assert a.count("SELECT count(*) FROM im_pending") == 0
    finally:
        on_a.close()
        on_b.close()
        b.stop()
        a.stop()


def test_the_nodes_listen_again_when_the_database_comes_back(tmp_path: Path) -> None:
    pg = PgServer().start()  # its own: stopped and started again here
    try:
        url = pg.database()
        settings = on_store(url, with_im(heartbeat=1))
        a = start_server(tmp_path / "a", **settings)
        b = start_server(tmp_path / "b", **settings)
        wire = Wire(a, BOB, "&mail=now")
        listeners = [nodes_of(a).listener, nodes_of(b).listener]
        try:
            wait_for(lambda: all(li.connected.is_set() for li in listeners), "both listening")
            alice_b = InstantMessenger(b.client())
            wait_for(lambda: alice_b.who([BOB])[0].status == "online", "bob online at B")
            pg.stop()
            wait_for(lambda: not any(li.connected.is_set() for li in listeners), "both cut off")
            pg.start()
            wait_for(lambda: all(li.connected.is_set() for li in listeners), "both back")

            def online() -> bool:  # node A said it is alive again
                try:
                    return alice_b.who([BOB])[0].status == "online"
                except ServerBusy:  # B's writer finds its connection broken once
                    return False

            wait_for(online, "bob online as B sees him")

            def sent() -> bool:
                try:
                    alice_b.send(BOB, "after the restart")
                except ServerBusy:  # B's writer finds its connection broken once
                    return False
                return True

            wait_for(sent, "a send through node B")
            wait_for(lambda: wire.of("message"), "the push on node A")
            [(_, push_id, data)] = wire.of("message")
            assert data["body"] == "after the restart"
            assert InstantMessenger(a.client(BOB)).ack([push_id]) == {push_id: "acked"}
            b.client().send([BOB], "mail after the restart", "x")
            wait_for(lambda: wire.of("mail"), "the new-mail event on node A")
            assert [m[2]["subject"] for m in wire.of("mail")] == ["mail after the restart"]
        finally:
            wire.close()
            b.stop()
            a.stop()
    finally:
        pg.close()


def test_a_push_announced_while_a_listener_was_cut_off_still_arrives_once(
    nodes: tuple[Running, Running], pg_url: str
) -> None:
    a, b = nodes
    wire = Wire(a, BOB)
    try:
        alice_b = InstantMessenger(b.client())
        wait_for(lambda: alice_b.who([BOB])[0].status == "online", "bob online as B sees him")
        with psycopg.connect(pg_url, autocommit=True) as db:  # every node's LISTEN cut off
            cut = db.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname=current_database() AND query LIKE 'LISTEN%'"
            ).fetchone()
        assert cut is not None and cut[0] == 2
        alice_b.send(BOB, "while nobody listened")  # heard, or sent on reconnecting: once
        wait_for(lambda: wire.of("message"), "the push on node A")
        wait_for(lambda: nodes_of(a).listener.connected.is_set(), "node A listening again")
        [(_, push_id, _)] = wire.of("message")
        assert InstantMessenger(a.client(BOB)).ack([push_id]) == {push_id: "acked"}
        assert len(wire.of("message")) == 1
    finally:
        wire.close()


def test_a_node_starting_leaves_the_pushes_another_node_waits_on(
    tmp_path: Path, pg_url: str
) -> None:
    settings = on_store(pg_url, with_im(heartbeat=1, ack_timeout=60))
    a = start_server(tmp_path / "a", **settings)
    b = start_server(tmp_path / "b", **settings)
    wire = Wire(a, BOB)
    try:
        alice_b = InstantMessenger(b.client())
        wait_for(lambda: alice_b.who([BOB])[0].status == "online", "bob online as B sees him")
        alice_b.send(BOB, "wait for me")
        wait_for(lambda: wire.of("message"), "the push on node A")
        b.stop()
        b = start_server(tmp_path / "b", **settings)
        [(_, push_id, _)] = wire.of("message")
        assert InstantMessenger(b.client(BOB)).ack([push_id]) == {push_id: "acked"}
        assert a.count(f"SELECT count(*) FROM messages WHERE owner='{BOB}'") == 0  # noqa: S608
    finally:
        wire.close()
        b.stop()
        a.stop()
