"""Instant messages are delivered at least once (issue 16): a push is a delivery only once
the listener acknowledged it by id; one not acknowledged in time goes to the mailbox (or,
"delete if undeliverable", is dropped and the sender told), also across a restart; a new
session gets what still waits and the client drops repeats by id; a session that
acknowledges nothing in time is ended. Listener processes killed and stopped at random
moments lose nothing and duplicate nothing (`faults_im`)."""

from __future__ import annotations

import random
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from wsemail.client.im import Incoming, InstantMessenger, Stream
from wsemail.protocol.errors import RequestInvalid

from conftest import Running, inbox, start_server, wait_for

sys.path.insert(0, str(Path(__file__).parent))
import faults_im  # noqa: E402
from stores import on_store  # noqa: E402
from test_im_scale import with_im  # noqa: E402

pytestmark = pytest.mark.both_stores

BOB = "bob@localhost"


class Taking:
    """A stream read by a thread; what it got."""

    def __init__(self, stream: Stream) -> None:
        self.stream = stream
        self.got: list[Incoming] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for item in self.stream:
            self.got.append(item)

    def ids(self) -> list[str]:
        return [str(i.data["id"]) for i in self.got if i.kind == "message"]

    def close(self) -> None:
        self.stream.close()
        self.thread.join(10)


def running_with(tmp_path: Path, store_url: str = "", **options: object) -> Running:
    return start_server(tmp_path / "s", **on_store(store_url, with_im(heartbeat=1, **options)))


@pytest.fixture
def quick(tmp_path: Path, store_url: str) -> Iterator[Running]:
    running = running_with(tmp_path, store_url, ack_timeout=0.5)
    yield running
    running.stop()


def outcome(running: Running, message_id: str) -> str:
    rows = running.count(
        f"SELECT count(*) FROM im_history WHERE message_id='{message_id}' AND outcome='acked'"
    )
    copies = running.count(
        f"SELECT count(*) FROM messages WHERE owner='{BOB}' AND message_id='{message_id}'"
    )
    return f"acked={rows} copies={copies}"


def test_an_unacknowledged_push_goes_to_the_mailbox_and_its_session_ends(quick: Running) -> None:
    bob = InstantMessenger(quick.client(BOB))
    silent = Taking(bob.listen(ack=False))  # reads, never acknowledges (a hung client)
    sent = InstantMessenger(quick.client("alice@localhost")).send(BOB, "are you there?")
    wait_for(lambda: silent.ids(), "the push")
    wait_for(lambda: bob.missed(), "the mailbox copy")
    assert outcome(quick, sent.message_id) == "acked=0 copies=1"
    assert [h["outcome"] for h in bob.history()] == ["mailbox"]
    # the session acknowledged nothing in time: the server ended it
    silent.thread.join(10)
    assert not silent.thread.is_alive()
    # a late acknowledgement is told what became of it, and changes nothing
    assert bob.ack(silent.ids()) == {silent.ids()[0]: "mailbox"}
    assert outcome(quick, sent.message_id) == "acked=0 copies=1"
    silent.close()


def test_an_acknowledged_push_never_reaches_the_mailbox(quick: Running) -> None:
    bob = InstantMessenger(quick.client(BOB))
    alice = InstantMessenger(quick.client("alice@localhost"))
    live = Taking(bob.listen())
    first = alice.send(BOB, "one")
    wait_for(lambda: [h["outcome"] for h in bob.history()] == ["acked"], "the acknowledgement")
    live.close()
    # a later, unacknowledged one passes its deadline after the first one's: by the time it
    # is in the mailbox the sweeper has seen the first one's deadline pass too
    silent = Taking(bob.listen(ack=False))
    second = alice.send(BOB, "two")
    wait_for(lambda: bob.missed(), "the second one in the mailbox")
    assert outcome(quick, first.message_id) == "acked=1 copies=0"
    assert outcome(quick, second.message_id) == "acked=0 copies=1"
    silent.close()


def test_unacknowledged_delete_if_undeliverable_is_dropped_and_the_sender_told(
    quick: Running,
) -> None:
    bob = InstantMessenger(quick.client(BOB))
    silent = Taking(bob.listen(ack=False))
    alice = InstantMessenger(quick.client("alice@localhost"))
    sent = alice.send(BOB, "now or never", delete_if_undeliverable=True)
    wait_for(lambda: inbox(quick, "alice@localhost"), "alice's notice")
    assert inbox(quick, "alice@localhost") == [f"Undeliverable instant message to {BOB}"]
    assert outcome(quick, sent.message_id) == "acked=0 copies=0"
    assert [h["outcome"] for h in bob.history()] == ["dropped"]
    silent.close()


def test_a_push_pending_at_a_restart_reaches_the_mailbox(tmp_path: Path, store_url: str) -> None:
    first = running_with(tmp_path, store_url, ack_timeout=120)
    bob = InstantMessenger(first.client(BOB))
    silent = Taking(bob.listen(ack=False))
    sent = InstantMessenger(first.client("alice@localhost")).send(BOB, "before the restart")
    wait_for(lambda: silent.ids(), "the push")
    silent.close()
    first.stop()
    again = running_with(tmp_path, store_url, ack_timeout=120)
    try:
        assert outcome(again, sent.message_id) == "acked=0 copies=1"
        assert again.count("SELECT count(*) FROM im_pending") == 0
        assert inbox(again, BOB) == ["Instant message"]
    finally:
        again.stop()


def test_a_new_session_gets_what_waits_and_the_client_drops_the_repeat(tmp_path: Path) -> None:
    running = running_with(tmp_path, ack_timeout=60)
    try:
        bob = InstantMessenger(running.client(BOB))
        first = Taking(bob.listen(ack=False))  # got it, then died before acknowledging
        sent = InstantMessenger(running.client("alice@localhost")).send(BOB, "again?")
        wait_for(lambda: first.ids(), "the push")
        first.close()
        second = Taking(bob.listen())  # the same client reconnects: sent again, dropped
        wait_for(lambda: second.stream.duplicates == 1, "the repeat")
        wait_for(lambda: outcome(running, sent.message_id) == "acked=1 copies=0", "the ack")
        assert second.ids() == []
        other = Taking(InstantMessenger(running.client(BOB)).listen())  # nothing waits now
        second.close()
        other.close()
        assert other.ids() == []
    finally:
        running.stop()


def test_bad_acknowledgements_are_refused_and_others_ids_unknown(quick: Running) -> None:
    bob = InstantMessenger(quick.client(BOB))
    carol = InstantMessenger(quick.client("carol@localhost"))
    live = Taking(bob.listen(ack=False))
    InstantMessenger(quick.client("alice@localhost")).send(BOB, "mine")
    wait_for(lambda: live.ids(), "the push")
    before = quick.stored()
    assert carol.ack(live.ids()) == {live.ids()[0]: "unknown"}  # not carol's to take
    for bad in ([], ["x" * 65], [str(n) for n in range(101)]):
        with pytest.raises(RequestInvalid):
            bob.ack(bad)
    assert quick.stored()[0] == before[0]
    assert bob.ack(live.ids()) == {live.ids()[0]: "acked"}
    live.close()


def test_listeners_killed_and_stopped_at_random_lose_and_duplicate_nothing(
    tmp_path: Path,
) -> None:
    rng = random.Random(16)
    total = faults_im.Tally()
    faults = {"kill": 0, "stop": 0}
    for number in range(2):
        found, hit = faults_im.run_round(tmp_path / f"r{number}", 40, rng)
        total.add(found)
        faults = {k: faults[k] + hit[k] for k in faults}
    assert total.lost == 0 and total.duplicated == 0, total.line()
    assert total.acknowledged + total.mailbox == 80
    assert faults["kill"] + faults["stop"] > 0  # the scenario hit the listener


def test_a_silent_stream_is_taken_for_dead_and_follow_reconnects(quick: Running) -> None:
    from test_im_scale import hub_of

    hub = hub_of(quick).hub
    bob = InstantMessenger(quick.client(BOB))
    streams: list[Stream | None] = []
    got: list[Incoming] = []
    stop = threading.Event()

    def follow() -> None:
        for item in bob.follow(stop, streams.append):
            got.append(item)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    try:
        wait_for(lambda: streams, "the first stream")
        hub.heartbeat = 1000.0  # the server falls silent (as if the network vanished)
        wait_for(lambda: len(streams) >= 2, "a new stream after three silent heartbeats")
        hub.heartbeat = 1.0
        sent = InstantMessenger(quick.client("alice@localhost")).send(BOB, "still there?")
        wait_for(lambda: outcome(quick, sent.message_id) == "acked=1 copies=0", "the ack")
        assert [i.body for i in got if i.kind == "message"] == ["still there?"]
    finally:
        stop.set()
        for stream in streams:
            if stream is not None:
                stream.close()
        reader.join(10)
