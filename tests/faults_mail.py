"""The mail fault scenarios (issue 16), counted from the clients' point of view: real
`wsemail serve` processes over TLS on loopback ports (the test bed's nodes, a throw-away
federation root), real SQLite files, client threads that send like an outbox does (a send
that got no answer is sent again with the same MessageId until the server answers), and
afterwards every recipient's mailbox listed through the client.

- `kill9`: one domain; the server is killed (SIGKILL, every fourth round SIGTERM) at random
  moments under load and started again.
- `receiver_down`: two domains; the receiving server is killed for a few seconds while the
  sending server's queue fills, then comes back; every other round the sending server is
  killed (SIGKILL) as well, while it relays the backlog.
- `full_disk` and `receiver_full` (in `faults_disk`): the data dir of the server, or of
  the receiving domain, on a small tmpfs that fills up.

An acknowledged message must be in each recipient's mailbox (and the sender's sent folder)
exactly once: one missing is lost, two copies are duplicated; a message that was refused
must be in none; one never answered (the sender gave up DRAIN seconds after the last
fault) may be in none or one, never two, and is a failure of its own.
Run through `scripts/faults` (tests/faults.py); `tests/test_faults_mail.py` runs short ones.
"""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsemail.bench.nodes import Node, add_users, free_port, write_config
from wsemail.client.mail import Client
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.protocol.auth import Credentials
from wsemail.protocol.errors import (
    RemoteFault,
    ServerBusy,
    ServerError,
    StorageFull,
    TransportError,
)
from wsemail.protocol.message import new_message_id
from wsemail.server.config import DEFAULT_PLUGINS

A, B = "a.test", "b.test"
DRAIN = 60.0  # seconds a sender keeps retrying its last message once told to stop


# -- what the clients saw and what the mailboxes hold ------------------------------------------


@dataclass
class Outcome:
    """One message as its sender saw it."""

    sender: str
    message_id: str
    subject: str
    recipients: list[str]
    acknowledged: bool = False
    refused: str = ""  # the fault that refused it, as the client got it
    attempts: int = 0


@dataclass
class Count:
    """A scenario's figures (`line()` is what `scripts/faults` prints)."""

    name: str
    rounds: int = 0
    acknowledged: int = 0
    delivered: int = 0
    refused: int = 0
    unanswered: int = 0  # never answered (the sender gave up): in no mailbox or in one
    in_mailbox: int = 0  # IM: not acknowledged by a listener, kept in the mailbox instead
    lost: int = 0
    duplicated: int = 0
    stored_after_refusal: int = 0
    reads: int = 0  # full disk: lists and retrieves made while the disk was full
    reads_refused: int = 0  # ... and refused (reads go on in the reserve)
    notes: Counter[str] = field(default_factory=Counter)  # faults made, and such
    seconds: float = 0.0
    skipped: str = ""
    show: tuple[str, ...] = ("acknowledged", "lost", "duplicated")

    @property
    def ok(self) -> bool:
        """Nothing lost or duplicated, nothing refused stored, and every message answered
        (a server that keeps failing one message for DRAIN seconds after the last fault
        is broken too)."""
        return not (
            self.lost
            or self.duplicated
            or self.stored_after_refusal
            or self.unanswered
            or self.reads_refused
        )

    def line(self) -> str:
        if self.skipped:
            return f"{self.name}: skipped ({self.skipped})"
        figures = " ".join(f"{name.replace('_', '-')} {getattr(self, name)}" for name in self.show)
        notes = self.notes + Counter({"unanswered": self.unanswered})  # shown when not 0
        hits = ", ".join(f"{what} {n}" for what, n in sorted(notes.items()))
        return f"{self.name}: rounds {self.rounds} {figures} ({hits}; {self.seconds:.0f} s)"


def tally(count: Count, outcomes: list[Outcome], copies: Counter[tuple[str, str]]) -> Count:
    """Judge each message by the copies found: `copies[(mailbox owner, message id)]`
    (recipients' inboxes) and `copies[("sent:" + sender, message id)]`."""
    for outcome in outcomes:
        found = [copies[(r, outcome.message_id)] for r in outcome.recipients]
        found.append(copies[(f"sent:{outcome.sender}", outcome.message_id)])
        if outcome.attempts > 1:
            count.notes["resent"] += 1
        if any(n > 1 for n in found):
            count.duplicated += 1
        if outcome.acknowledged:
            count.acknowledged += 1
            if all(n == 1 for n in found):
                count.delivered += 1
            elif any(n == 0 for n in found):
                count.lost += 1
        elif outcome.refused:
            count.refused += 1
            if any(found):
                count.stored_after_refusal += 1
        else:
            count.unanswered += 1
    return count


# -- the servers -------------------------------------------------------------------------------


class Bed:
    """One or more domains as real `wsemail serve` processes over TLS, routed to each other,
    with accounts made beforehand (their MAC keys kept, so no client runs scrypt)."""

    def __init__(
        self,
        root: Path,
        users: dict[str, list[str]],
        *,
        sections: dict[str, dict[str, Any]] | None = None,
        data_dirs: dict[str, Path] | None = None,
    ) -> None:
        self.root = root
        self.ca = root / "ca"
        create_root(self.ca, name="wsemail faults root")
        write_crl(self.ca)
        self.nodes: dict[str, Node] = {}
        self.keys: dict[str, bytes] = {}
        ports = {domain: free_port() for domain in users}
        (root / "logs").mkdir(exist_ok=True)
        for domain, addresses in users.items():
            data = (data_dirs or {}).get(domain, root / domain)
            data.mkdir(parents=True, mode=0o700)
            identity = root / f"{domain}-identity"
            issue_server(self.ca, domain, identity)
            write_config(
                data,
                domain=domain,
                port=ports[domain],
                ca=self.ca,
                identity=identity,
                routes={d: self.url_of(p) for d, p in ports.items() if d != domain},
                plugins=list(DEFAULT_PLUGINS),
                sections=sections,
            )
            self.keys.update(add_users(data / "wsemail.db", domain, addresses))
            self.nodes[domain] = Node(domain, data, ports[domain])

    @staticmethod
    def url_of(port: int) -> str:
        return f"https://127.0.0.1:{port}/wsemail"

    def start(self, domain: str) -> None:
        self.nodes[domain].start(log=self.root / "logs" / f"{domain}.log")

    def hit(self, domain: str, sig: signal.Signals) -> None:
        """Send `sig` to the domain's server and wait until it is gone."""
        process = self.nodes[domain].process
        assert process is not None
        process.send_signal(sig)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)
        if process.stdout is not None:
            process.stdout.close()

    def stop(self) -> None:
        for node in self.nodes.values():
            if node.process is not None and node.process.poll() is None:
                node.stop()

    def client(self, user: str, timeout: float = 20.0) -> Client:
        domain = user.rpartition("@")[2]
        return Client(
            self.url_of(self.nodes[domain].port),
            user,
            credentials=Credentials(user, self.keys[user]),
            verify=str(self.ca / "root.pem"),
            tls_name=domain,
            timeout=timeout,
        )

    def copies(self, recipients: list[str], senders: list[str]) -> Counter[tuple[str, str]]:
        """Every message id in the recipients' inboxes and the senders' sent folders, as
        their clients list them."""
        found: Counter[tuple[str, str]] = Counter()
        for user, folder, key in [(r, "inbox", r) for r in recipients] + [
            (s, "sent", f"sent:{s}") for s in senders
        ]:
            with self.client(user, timeout=60) as client:
                for header in client.iter_headers(folder):
                    found[(key, header.message_id)] += 1
        return found

    def queued(self, domain: str) -> int:
        return self.nodes[domain].count("SELECT count(*) FROM queue")


# -- the senders -------------------------------------------------------------------------------


TRANSIENT = (TransportError, ServerBusy, ServerError)


class Senders:
    """One thread per sender address, each sending to one or two random recipients until
    `stop()`: a message without an answer is sent again with its MessageId after a short
    pause (the server was down or went down), a refusal is final."""

    def __init__(
        self,
        bed: Bed,
        senders: list[str],
        recipients: list[str],
        rng: random.Random,
        *,
        body: int = 1500,
        pause: float = 0.0,
    ) -> None:
        self.bed = bed
        self.recipients = recipients
        self.body = body
        self.pause = pause
        self.outcomes: list[Outcome] = []
        self.errors: Counter[str] = Counter()  # transient errors by class, for the report
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.give_up_at = float("inf")
        self.died: list[BaseException] = []  # a thread's unexpected error, raised by stop()
        self.threads = [
            threading.Thread(
                target=self._run, args=(s, random.Random(rng.random())), daemon=True, name=s
            )
            for s in senders
        ]

    def start(self) -> Senders:
        for thread in self.threads:
            thread.start()
        return self

    def counts(self) -> tuple[int, int]:
        """(acknowledged, refused) so far."""
        outcomes = list(self.outcomes)
        return sum(o.acknowledged for o in outcomes), sum(bool(o.refused) for o in outcomes)

    def wait_for(self, what: str, grows: int = 1, timeout: float = 90.0) -> bool:
        """Until `grows` more messages were acknowledged (`what` "acknowledged") or refused."""
        index = 0 if what == "acknowledged" else 1
        start = self.counts()[index]
        deadline = time.monotonic() + timeout
        while self.counts()[index] < start + grows:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    def stop(self) -> list[Outcome]:
        """Stop after each thread's current message (retried for up to DRAIN seconds)."""
        self.give_up_at = time.monotonic() + DRAIN
        self.stopping.set()
        for thread in self.threads:
            thread.join(DRAIN + 60)
        if self.died:
            raise RuntimeError(f"a sender thread died: {self.died[0]!r}") from self.died[0]
        return list(self.outcomes)

    def abort(self) -> None:
        """Stop at once (a scenario failed): no thread goes on sending."""
        self.give_up_at = 0.0
        self.stopping.set()
        for thread in self.threads:
            if thread.is_alive():
                thread.join(60)

    def _run(self, sender: str, rng: random.Random) -> None:
        try:
            self._send_until_stopped(sender, rng)
        except Exception as exc:  # said by stop(), not lost in a thread
            self.died.append(exc)

    def _send_until_stopped(self, sender: str, rng: random.Random) -> None:
        body = "".join(rng.choice("abcdefghij \n") for _ in range(self.body))
        number = 0
        with self.bed.client(sender) as client:
            while not self.stopping.is_set():
                number += 1
                to = rng.sample(self.recipients, rng.choice((1, 2)))
                outcome = Outcome(
                    sender,
                    new_message_id(sender.rpartition("@")[2]),
                    f"faults {sender} #{number}",
                    to,
                )
                self.outcomes.append(outcome)
                self._deliver(client, outcome, body, rng)
                if self.pause:
                    self.stopping.wait(rng.uniform(0, 2 * self.pause))

    def _deliver(self, client: Client, outcome: Outcome, body: str, rng: random.Random) -> None:
        while True:
            outcome.attempts += 1
            try:
                client.send(
                    outcome.recipients, outcome.subject, body, message_id=outcome.message_id
                )
            except TRANSIENT as exc:
                with self._lock:
                    self.errors[type(exc).__name__] += 1
                if time.monotonic() > self.give_up_at:
                    return  # never answered
                time.sleep(rng.uniform(0.05, 0.3))
                continue
            except StorageFull as exc:
                outcome.refused = exc.reason
                time.sleep(rng.uniform(0.1, 0.3))
            except RemoteFault as exc:  # not expected: counted as refused, said why
                outcome.refused = f"{type(exc).__name__}: {exc.reason}"
            else:
                outcome.acknowledged = True
            return


def refusals(outcomes: list[Outcome]) -> Counter[str]:
    return Counter(o.refused for o in outcomes if o.refused)


# -- scenario 1: kill -9 under load ----------------------------------------------------------


def kill9(root: Path, rounds: int, rng: random.Random, *, threads: int = 6) -> Count:
    """The server killed at random moments while `threads` clients send through it."""
    started = time.monotonic()
    senders = [f"sender{n}@{A}" for n in range(threads)]
    recipients = [f"reader{n}@{A}" for n in range(4)]
    bed = Bed(root, {A: senders + recipients})
    count = Count("mail-kill9", rounds)
    load = Senders(bed, senders, recipients, rng)
    try:
        bed.start(A)
        load.start()
        for number in range(rounds):
            time.sleep(rng.uniform(0.3, 2.5))
            sig = signal.SIGTERM if number % 4 == 1 else signal.SIGKILL
            count.notes[sig.name] += 1
            bed.hit(A, sig)
            time.sleep(rng.uniform(0, 1.0))  # down for a moment
            bed.start(A)
        load.wait_for("acknowledged", threads)  # and it takes mail after the last restart
        outcomes = load.stop()
        tally(count, outcomes, bed.copies(recipients, senders))
    finally:
        load.abort()  # after an error: no thread left sending
        bed.stop()
    count.seconds = time.monotonic() - started
    return count


# -- scenario 2: the receiving domain down, then back ------------------------------------------


def relaying(bed: Bed, deadline: float) -> None:
    """Until b.test takes deliveries again (its deliveries table grows; only a cue for
    when to strike, not a count)."""
    query = "SELECT count(*) FROM deliveries"
    before = bed.nodes[B].count(query)
    while bed.nodes[B].count(query) == before and time.monotonic() < deadline:
        time.sleep(0.02)


def relayed(
    bed: Bed,
    count: Count,
    outcomes: list[Outcome],
    senders: list[str],
    recipients: list[str],
    wait: float,
) -> None:
    """Once a.test's queue is empty and every acknowledged message arrived (at most `wait`
    seconds), count what b.test's users and a.test's sent folders hold, and the bounces."""
    wanted = {(r, o.message_id) for o in outcomes if o.acknowledged for r in o.recipients}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not bed.queued(A) and wanted <= set(bed.copies(recipients, [])):
            break
        time.sleep(1.0)
    time.sleep(1.0)  # a duplicate still on its way would arrive now
    tally(count, outcomes, bed.copies(recipients, senders))
    for sender in senders:  # a bounce would say why something was lost
        with bed.client(sender) as client:
            count.notes["bounces"] += sum(
                h.sender.startswith("mailer-daemon@") for h in client.iter_headers()
            )


def receiver_down(
    root: Path,
    rounds: int,
    rng: random.Random,
    *,
    threads: int = 4,
    retry_base: float = 0.5,
    retry_max: float = 2.0,
    wait: float = 120.0,
) -> Count:
    """a.test's clients send to b.test's users; b.test is killed for a while each round
    (the queue fills), then started again (the queue delivers); every other round a.test is
    killed too, while it relays the backlog."""
    started = time.monotonic()
    senders = [f"sender{n}@{A}" for n in range(threads)]
    recipients = [f"reader{n}@{B}" for n in range(3)]
    queue = {"retry_base": retry_base, "retry_max": retry_max, "batch_max": 20}
    bed = Bed(root, {A: senders, B: recipients}, sections={"queue": queue})
    count = Count("mail-queue", rounds, show=("acknowledged", "delivered", "lost", "duplicated"))
    load = Senders(bed, senders, recipients, rng, pause=0.02)
    try:
        bed.start(B)
        bed.start(A)
        load.start()
        peak = 0
        for number in range(rounds):
            time.sleep(rng.uniform(0.3, 1.5))
            sig = signal.SIGTERM if number % 4 == 2 else signal.SIGKILL
            count.notes[f"receiver {sig.name}"] += 1
            bed.hit(B, sig)
            load.wait_for("acknowledged", 10 * threads)  # accepted meanwhile: queued
            time.sleep(rng.uniform(0, 2.0))
            peak = max(peak, bed.queued(A))
            bed.start(B)
            if number % 2 == 1:  # the sender killed while it relays the backlog
                relaying(bed, time.monotonic() + 30)
                time.sleep(rng.uniform(0, 0.3))
                count.notes["sender SIGKILL"] += 1
                bed.hit(A, signal.SIGKILL)
                count.notes["rows queued at sender kills"] += bed.queued(A)
                bed.start(A)
        outcomes = load.stop()
        count.notes["queue peak"] = peak
        relayed(bed, count, outcomes, senders, recipients, wait)
    finally:
        load.abort()
        bed.stop()
    count.seconds = time.monotonic() - started
    return count
