"""Push sessions within bounds (a real server on loopback): the per-user and total caps
refuse a further stream with a clear fault and status while ordinary requests still
answer; the total cap never exceeds what the open-file limit leaves room for; a vanished
client's session is dropped; stopping refuses new streams and still answers a request in
flight. Figures at scale come from `tests/bench_im_sessions.py`, not from here."""

from __future__ import annotations

import resource
import socket
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from wsemail.client.im import InstantMessenger, Stream
from wsemail.protocol.errors import LimitExceeded, PluginError, ServerBusy
from wsemail.protocol.soap import q, text_of
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.im.plugin import InstantMessaging
from wsemail.server.pipeline import PluginSpec

from conftest import Running, fault_subcode, inbox, start_server, wait_for


def with_im(**options: object) -> list[PluginSpec]:
    return [
        *(spec for spec in DEFAULT_PLUGINS if spec.ref != "im"),
        PluginSpec("im", 40, dict(options)),
    ]


def hub_of(running: Running) -> InstantMessaging:
    loaded = {e.name: e.plugin for e in running.controller.server.pipeline.listing()}
    plugin = loaded["im"]
    assert isinstance(plugin, InstantMessaging)
    return plugin


@pytest.fixture
def capped(tmp_path: Path) -> Iterator[Running]:
    running = start_server(
        tmp_path / "s", plugins=with_im(max_sessions_per_user=2, max_sessions=3, heartbeat=1)
    )
    yield running
    running.stop()


class Reading:
    """An open stream drained by a thread (as a client would)."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.thread = threading.Thread(target=lambda: list(stream), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)


def ticket_url(running: Running, user: str) -> httpx.URL:
    answer = InstantMessenger(running.client(user))._call(etree.Element(q("OpenStream")))
    ticket = text_of(answer, "Ticket", "") or ""
    return httpx.URL(running.url).copy_with(
        path="/wsemail/im/stream", query=f"ticket={ticket}".encode()
    )


def test_a_stream_beyond_the_caps_is_refused_while_send_and_list_still_answer(
    capped: Running,
) -> None:
    open_streams = [
        Reading(InstantMessenger(capped.client(user)).listen())
        for user in ("alice@localhost", "alice@localhost", "bob@localhost")
    ]
    try:
        hub = hub_of(capped).hub
        assert hub.count() == 3
        # a third one for alice: her own cap (a Sender fault: close one of hers first);
        # carol's first one: the server's cap (try again later)
        alice_url, carol_url = (
            ticket_url(capped, u) for u in ("alice@localhost", "carol@localhost")
        )
        before = capped.stored()
        response = httpx.get(alice_url, timeout=10)
        assert response.status_code == 400
        assert fault_subcode(response) == "wsemail:LimitExceeded"
        assert b"at most 2 live sessions per user" in response.content
        response = httpx.get(carol_url, timeout=10)
        assert response.status_code == 503
        assert fault_subcode(response) == "wsemail:Busy"
        assert response.headers["retry-after"] == "30"
        assert hub.count() == 3 and capped.stored() == before  # nothing kept, none opened
        with pytest.raises(LimitExceeded, match="close one of yours"):
            InstantMessenger(capped.client("alice@localhost")).listen()
        # ordinary requests still answer, and a push still reaches a live session
        capped.client("carol@localhost").send(["bob@localhost"], "still serving", "yes")
        assert inbox(capped, "bob@localhost") == ["still serving"]
        assert hub.online() == {"alice@localhost": 2, "bob@localhost": 1}
        # a closed stream frees its place
        open_streams.pop().close()
        wait_for(lambda: hub.count() == 2, "bob's session to end")
        open_streams.append(Reading(InstantMessenger(capped.client("carol@localhost")).listen()))
        assert hub.online() == {"alice@localhost": 2, "carol@localhost": 1}
    finally:
        for reading in open_streams:
            reading.close()


def test_the_total_cap_stays_within_the_open_file_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))
    try:
        running = start_server(tmp_path / "s", plugins=with_im(max_sessions=10_000))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        assert hub_of(running).hub.max_sessions == 512  # half stays for everything else
        assert running.client().list_headers().headers == []
    finally:
        running.stop()


def test_a_stream_refused_when_the_server_is_stopping(capped: Running) -> None:
    hub_of(capped).stopping()
    with pytest.raises(ServerBusy, match="shutting down"):
        InstantMessenger(capped.client("alice@localhost")).listen()
    assert capped.client("alice@localhost").list_headers().headers == []


@pytest.mark.parametrize(
    "options",
    [{"heartbeat": 120}, {"heartbeat": 0}, {"max_sessions": 0}, {"max_sessions_per_user": -1}],
)
def test_push_session_limits_out_of_range_stop_the_server_from_starting(
    tmp_path: Path, options: dict[str, object]
) -> None:
    with pytest.raises(PluginError, match="bad options for plug-in 'im'"):
        start_server(tmp_path / "s", plugins=with_im(**options))


def test_a_stream_whose_client_vanished_is_cleaned_up_and_pushes_go_to_the_mailbox(
    capped: Running,
) -> None:
    url = ticket_url(capped, "bob@localhost")
    sock = socket.create_connection((url.host, url.port), timeout=10)
    sock.sendall(f"GET {url.raw_path.decode()} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    received = b""
    while b"event: ready" not in received:
        chunk = sock.recv(4096)
        assert chunk, received
        received += chunk
    hub = hub_of(capped).hub
    assert hub.online() == {"bob@localhost": 1}
    sock.close()  # gone without a word
    wait_for(lambda: hub.count() == 0, "the dead session to be dropped")
    capped.client("alice@localhost").send(["bob@localhost"], "IM", "while away", instant=True)
    assert inbox(capped, "bob@localhost") == ["IM"]  # kept, meant as an instant message


def test_a_send_in_flight_when_stop_begins_is_answered_and_kept(tmp_path: Path) -> None:
    running = start_server(tmp_path / "s")
    server = running.controller.server
    sender = running.client("alice@localhost")
    sender.list_headers()  # signed in
    gate = threading.Event()
    server.store.submit(lambda tx: gate.wait(20))  # the writer is busy: the Send waits
    answers: list[str] = []
    sending = threading.Thread(
        target=lambda: answers.append(
            sender.send(["bob@localhost"], "in flight", "kept", retries=0).message_id
        )
    )
    sending.start()
    stopping = threading.Thread(target=running.controller.stop)
    try:
        wait_for(lambda: server.inflight == 1, "the Send to be in flight")
        stopping.start()
        url = httpx.URL(running.url)

        def refused() -> bool:
            try:
                socket.create_connection((url.host, url.port), timeout=1).close()
            except OSError:
                return True
            return False

        wait_for(refused, "the server to stop listening")
    finally:
        gate.set()
        sending.join(20)
        stopping.join(20)
        sender.close()
    assert len(answers) == 1  # answered, not dropped
    with sqlite3.connect(running.config.data_dir / "wsemail.db") as db:
        stored = db.execute("SELECT message_id FROM messages WHERE owner='bob@localhost'")
        assert [row[0] for row in stored] == answers
