"""The scale-out fault scenario (issue 20): one domain, a.test, on two `wsemail serve`
processes (nodes) over one real PostgreSQL database, its clients sending to local readers
and to readers at b.test (a third process, SQLite) while one node or the other is killed
(SIGKILL) at random moments and started again. A client whose node does not answer sends
the same message (same MessageId) through the other node. Afterwards every acknowledged
message must be in each recipient's mailbox and in the sender's sent folder exactly once:
stored once whichever node took it, relayed to b.test once whichever node relayed it
(both relay, leasing queue rows with FOR UPDATE SKIP LOCKED; a killed node's leases are
taken back when it restarts, or by the other node once they run out).

Run through `scripts/faults nodes-kill9`; tests/test_faults_nodes.py runs a short one.
"""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from faults_mail import Bed, Count, Outcome, Senders, tally

from wsemail.bench.nodes import Node, add_users, free_port, write_config
from wsemail.bench.pgserver import PgServer
from wsemail.client.mail import Client
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.protocol.auth import Credentials
from wsemail.protocol.errors import ServerBusy, TransportError
from wsemail.server.config import DEFAULT_PLUGINS

A, B = "a.test", "b.test"


class FailoverClient:
    """A client of a.test that sends through one node and, when that node does not answer
    (or answers Busy), moves to the other one before the caller tries again."""

    def __init__(self, clients: list[Client]) -> None:
        self.clients = clients
        self.current = 0

    def send(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return self.clients[self.current].send(*args, **kwargs)
        except (TransportError, ServerBusy):
            self.current = (self.current + 1) % len(self.clients)
            raise

    def __enter__(self) -> FailoverClient:
        return self

    def __exit__(self, *exc: object) -> None:
        for client in self.clients:
            client.close()


class NodesBed(Bed):
    """a.test on two nodes over PostgreSQL (`url`), b.test on one (SQLite)."""

    def __init__(self, root: Path, users: dict[str, list[str]], url: str, lease: float) -> None:
        self.root = root
        self.ca = root / "ca"
        create_root(self.ca, name="wsemail faults root")
        write_crl(self.ca)
        (root / "logs").mkdir(exist_ok=True)
        ports = {"a1": free_port(), "a2": free_port(), B: free_port()}
        identities = {}
        for domain in (A, B):
            identities[domain] = root / f"{domain}-identity"
            issue_server(self.ca, domain, identities[domain])
        queue = {"retry_base": 0.5, "retry_max": 2.0, "batch_max": 20, "lease": lease}
        self.nodes: dict[str, Node] = {}
        self.keys: dict[str, bytes] = {}
        for name, domain in (("a1", A), ("a2", A), (B, B)):
            data = root / name
            data.mkdir(parents=True, mode=0o700)
            on_pg = domain == A
            routes = {B: self.url_of(ports[B])} if on_pg else {A: self.url_of(ports["a1"])}
            write_config(
                data,
                domain=domain,
                port=ports[name],
                ca=self.ca,
                identity=identities[domain],
                routes=routes,
                plugins=list(DEFAULT_PLUGINS),
                sections={"queue": queue, **({"store": {"url": url}} if on_pg else {})},
            )
            self.nodes[name] = Node(domain, data, ports[name], store_url=url if on_pg else "")
        self.keys.update(add_users(root / "a1" / "wsemail.db", A, users[A], store_url=url))
        self.keys.update(add_users(root / B / "wsemail.db", B, users[B]))

    def client(self, user: str, timeout: float = 20.0) -> Any:
        if user.endswith("@" + B):
            return self._client(user, B, timeout)
        return FailoverClient([self._client(user, n, timeout) for n in ("a1", "a2")])

    def _client(self, user: str, node: str, timeout: float) -> Client:
        domain = user.rpartition("@")[2]
        return Client(
            self.url_of(self.nodes[node].port),
            user,
            credentials=Credentials(user, self.keys[user]),
            verify=str(self.ca / "root.pem"),
            tls_name=domain,
            timeout=timeout,
        )

    def copies(self, recipients: list[str], senders: list[str]) -> Counter[tuple[str, str]]:
        found: Counter[tuple[str, str]] = Counter()
        for user, folder, key in [(r, "inbox", r) for r in recipients] + [
            (s, "sent", f"sent:{s}") for s in senders
        ]:
            node = B if user.endswith("@" + B) else "a2"
            with self._client(user, node, 60) as client:
                for header in client.iter_headers(folder):
                    found[(key, header.message_id)] += 1
        return found

    def queued(self, domain: str) -> int:
        return self.nodes["a1" if domain == A else B].count("SELECT count(*) FROM queue")


def nodes_kill9(
    root: Path, rounds: int, rng: random.Random, *, threads: int = 4, lease: float = 5.0
) -> Count:
    """Kill one a.test node or the other (SIGKILL) under load, `rounds` times."""
    started = time.monotonic()
    senders = [f"sender{n}@{A}" for n in range(threads)]
    local = [f"reader{n}@{A}" for n in range(2)]
    remote = [f"reader{n}@{B}" for n in range(2)]
    pg = PgServer().start()
    count = Count("nodes-kill9", rounds, show=("acknowledged", "delivered", "lost", "duplicated"))
    bed: NodesBed | None = None
    load: Senders | None = None
    try:
        bed = NodesBed(root, {A: senders + local, B: remote}, pg.database(), lease)
        for name in (B, "a1", "a2"):
            bed.start(name)
        load = Senders(bed, senders, local + remote, rng, pause=0.01)
        load.start()
        for _ in range(rounds):
            time.sleep(rng.uniform(0.5, 2.0))
            victim = rng.choice(("a1", "a2"))
            count.notes[f"{victim} SIGKILL"] += 1
            bed.hit(victim, signal.SIGKILL)
            time.sleep(rng.uniform(0.2, 1.5))  # the clients move to the other node
            bed.start(victim)
        load.wait_for("acknowledged", threads)
        outcomes = load.stop()
        count.notes["failovers"] = sum(load.errors.values())
        _settle(bed, outcomes, local + remote, 120)
        tally(count, outcomes, bed.copies(local + remote, senders))
    finally:
        if load is not None:
            load.abort()
        if bed is not None:
            bed.stop()
        pg.close()
    count.seconds = time.monotonic() - started
    return count


def _settle(bed: NodesBed, outcomes: list[Outcome], recipients: list[str], wait: float) -> None:
    """Until a.test's queue is empty and every acknowledged message reached its readers."""
    wanted = {(r, o.message_id) for o in outcomes if o.acknowledged for r in o.recipients}
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not bed.queued(A) and wanted <= set(bed.copies(recipients, [])):
            break
        time.sleep(1.0)
    time.sleep(1.0)  # a duplicate still on its way would arrive now
