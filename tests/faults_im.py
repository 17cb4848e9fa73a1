"""The instant-message fault scenario (issue 16): a real server on loopback, bob's push
listener in a separate process that is killed (SIGKILL) or stopped (SIGSTOP, then resumed
or killed) at random moments while alice sends instant messages to bob. Afterwards every
message must be acknowledged by a listener or in bob's mailbox once: none lost, none twice.

    python tests/faults_im.py [--rounds N] [--messages M] [--seed S]
    python tests/faults_im.py listener URL ADDRESS PASSWORD   (the listener process)

prints one line per round and `IM: acknowledged A / in mailbox M / lost L / duplicated D`.
Used by `scripts/faults` and `tests/test_im_acks.py`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "correct horse battery"
ALICE, BOB = "alice@localhost", "bob@localhost"
ACK_TIMEOUT = 2.0
HEARTBEAT = 1.0


@dataclass
class Tally:
    acknowledged: int = 0
    mailbox: int = 0
    lost: int = 0
    duplicated: int = 0

    def add(self, other: Tally) -> None:
        self.acknowledged += other.acknowledged
        self.mailbox += other.mailbox
        self.lost += other.lost
        self.duplicated += other.duplicated

    def line(self) -> str:
        return (
            f"IM: acknowledged {self.acknowledged} / in mailbox {self.mailbox} / "
            f"lost {self.lost} / duplicated {self.duplicated}"
        )


def listener(url: str, address: str, password: str) -> None:
    """The listener process: prints each message's push id once handled, then acknowledges
    it (through `InstantMessenger.follow`, which also reconnects)."""
    from wsemail.client.im import InstantMessenger
    from wsemail.client.mail import Client

    with Client(url, address, password) as client:
        im = InstantMessenger(client)

        def opened(stream: object) -> None:
            if stream is not None:
                print("live", flush=True)

        for item in im.follow(threading.Event(), opened):
            if item.kind == "message":
                print(item.data.get("id", ""), item.data.get("message_id", ""), flush=True)


class Listener:
    """One listener process at a time; `fault()` hits it with a random fault."""

    def __init__(self, url: str, rng: random.Random) -> None:
        self.url = url
        self.rng = rng
        self.process: subprocess.Popen[str] | None = None
        self.faults = {"kill": 0, "stop": 0}

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 -- our own module, loopback only
            [sys.executable, __file__, "listener", self.url, BOB, PASSWORD],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "live": its push stream is open

    def fault(self) -> None:
        process = self.process
        assert process is not None
        if self.rng.random() < 0.5:
            self.faults["kill"] += 1
            process.send_signal(signal.SIGKILL)
        else:
            self.faults["stop"] += 1
            process.send_signal(signal.SIGSTOP)
            time.sleep(self.rng.uniform(0.2, 2.5))  # past the deadline, or not
            if self.rng.random() < 0.5:
                process.send_signal(signal.SIGCONT)
                return  # resumed: it reconnects if the server ended its session
            process.send_signal(signal.SIGKILL)
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()
        self.start()

    def stop(self) -> None:
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if process is not None and process.stdout is not None:
            process.stdout.close()


def _start_server(data_dir: Path) -> object:
    from wsemail.server.accounts import set_user
    from wsemail.server.config import DEFAULT_PLUGINS, ServerConfig
    from wsemail.server.controller import ServerController
    from wsemail.server.pipeline import PluginSpec

    plugins = [s for s in DEFAULT_PLUGINS if s.ref != "im"]
    plugins.append(PluginSpec("im", 40, {"ack_timeout": ACK_TIMEOUT, "heartbeat": HEARTBEAT}))
    config = ServerConfig(data_dir=data_dir, port=0, plugins=plugins)
    controller = ServerController(config)
    for user in (ALICE, BOB):
        set_user(controller.server.store, config.domain, user, PASSWORD)
    return controller.start()


def _settle(store: object, deadline: float) -> None:
    """Until nothing waits for an acknowledgement any more (bounded)."""
    while time.monotonic() < deadline:
        left = store.transact_sync(  # type: ignore[attr-defined]
            lambda tx: tx.conn.execute("SELECT count(*) FROM im_pending").fetchone()[0]
        )
        if not left:
            return
        time.sleep(0.1)


def tally(store: object, message_ids: list[str]) -> Tally:
    """What became of each message sent to bob, from the server's store."""

    def work(tx: object) -> Tally:
        conn = tx.conn  # type: ignore[attr-defined]
        found = Tally()
        for message_id in message_ids:
            outcomes = [
                r[0]
                for r in conn.execute(
                    "SELECT outcome FROM im_history WHERE owner=? AND message_id=?",
                    (BOB, message_id),
                )
            ]
            copies = conn.execute(
                "SELECT count(*) FROM messages WHERE owner=? AND message_id=?", (BOB, message_id)
            ).fetchone()[0]
            if copies > 1 or (copies and "acked" in outcomes):
                found.duplicated += 1
            elif "acked" in outcomes:
                found.acknowledged += 1
            elif copies == 1:
                found.mailbox += 1
            else:
                found.lost += 1
        return found

    return store.transact_sync(work)  # type: ignore[attr-defined,no-any-return]


def run_round(data_dir: Path, messages: int, rng: random.Random) -> tuple[Tally, dict[str, int]]:
    from wsemail.client.im import InstantMessenger
    from wsemail.client.mail import Client

    controller = _start_server(data_dir)
    url = controller.url  # type: ignore[attr-defined]
    store = controller.server.store  # type: ignore[attr-defined]
    hits = Listener(url, rng)
    sent: list[str] = []
    try:
        hits.start()
        stop = threading.Event()

        def faults() -> None:
            while not stop.wait(rng.uniform(0.3, 2.0)):
                hits.fault()

        faulting = threading.Thread(target=faults, daemon=True)
        faulting.start()
        with Client(url, ALICE, PASSWORD) as client:
            im = InstantMessenger(client)
            for n in range(messages):
                sent.append(im.send(BOB, f"message {n}").message_id)
                time.sleep(rng.uniform(0, 0.1))
        stop.set()
        faulting.join(30)
        _settle(store, time.monotonic() + 10 * ACK_TIMEOUT + 10)
        return tally(store, sent), hits.faults
    finally:
        hits.stop()
        controller.stop()  # type: ignore[attr-defined]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["listener"]:
        listener(*args[1:4])
        return 0
    parser = argparse.ArgumentParser(prog="scripts/faults", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--messages", type=int, default=60, help="instant messages a round")
    parser.add_argument("--seed", type=int, default=None)
    options = parser.parse_args(args)
    rng = random.Random(options.seed)
    total = Tally()
    with tempfile.TemporaryDirectory(prefix="wsemail-faults-") as tmp:
        for number in range(1, options.rounds + 1):
            found, faults = run_round(Path(tmp) / f"r{number}", options.messages, rng)
            total.add(found)
            print(
                f"round {number}: {found.line()} "
                f"(listener killed {faults['kill']}, stopped {faults['stop']})",
                flush=True,
            )
    print(total.line())
    return 0 if total.lost == 0 and total.duplicated == 0 else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
