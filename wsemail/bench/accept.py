"""`wsemail bench`: the accept path under load on loopback.

Starts the real `wsemail serve` in its own process on a fresh data dir (SQLite WAL,
synchronous=FULL), gives every simulated client its own account and key (scrypt once, as a
real client session), then has N clients send password-MAC-authenticated messages over
keep-alive HTTP/1.1 connections for a fixed time. With `signed_answers` each request asks
for a signed answer naming the server certificate by digest, as a client with trust roots
does once it holds the certificate. Prints accepted sends/s, latency
percentiles, the server's CPU time per accepted send (from /proc) and the load generator's
own CPU, and checks that every accepted send is in the database.
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from cryptography import x509
from lxml import etree

from wsemail.bench.nodes import free_port
from wsemail.bench.report import process_tree_cpu
from wsemail.core.units import percentile
from wsemail.protocol import soap
from wsemail.protocol.auth import SIGN_RESPONSE, Credentials, derive_key
from wsemail.protocol.dsig import cert_digest
from wsemail.protocol.message import Draft, Message
from wsemail.protocol.soap import q
from wsemail.server.accounts import set_user
from wsemail.server.config import ServerConfig
from wsemail.server.stores import open_store

if TYPE_CHECKING:
    from wsemail.bench.pgserver import PgServer
    from wsemail.server.store import BatchStore, Tx

BENCH_PASSWORD = "bench password"  # noqa: S105 -- throw-away accounts in a temp dir


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    refused: int = 0


def _envelope(creds: Credentials, recipient: str, n: int, known: str | None) -> bytes:
    env, header, body = soap.new_envelope()
    op = etree.SubElement(body, q("Send"))
    Draft(to=[recipient], subject=f"bench {n}", body="x" * 900).to_xml(op)
    creds.sign(header, body)
    if known is not None:
        etree.SubElement(header, q(SIGN_RESPONSE)).set("ServerCertificate", known)
    return soap.serialize(env)


async def post(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, head: bytes, data: bytes
) -> bytes:
    """One POST of `data` on a kept-alive connection (`head`: its request line and fixed
    header lines); the answer read whole (by its Content-Length). Returns its status line."""
    writer.write(head + b"Content-Length: %d\r\n\r\n" % len(data) + data)
    status_line = await reader.readuntil(b"\r\n")
    headers = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in headers.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await reader.readexactly(length)
    return status_line


async def _client(
    url: str,
    creds: Credentials,
    recipient: str,
    stop_at: float,
    measure_from: float,
    tally: Tally,
    known: str | None,
) -> None:
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: {soap.CONTENT_TYPE}\r\n"
    ).encode()
    n = 0
    try:
        while (now := time.perf_counter()) < stop_at:
            data = _envelope(creds, recipient, n, known)
            n += 1
            status_line = await post(reader, writer, head, data)
            if now < measure_from:
                continue
            if b" 200 " in status_line:
                tally.latencies.append(time.perf_counter() - now)
            else:
                tally.refused += 1
    finally:
        writer.close()


def run_bench(
    *,
    clients: int = 16,
    seconds: float = 5.0,
    data_dir: str | None = None,
    warmup: float = 1.0,
    signed_answers: bool = False,
    store_url: str = "",
    workers: int = 1,
    mailbox: int = 5000,
    recipients: int = 1,
) -> dict[str, float]:
    """`store_url` "": SQLite in the data dir; "pg": a throwaway PostgreSQL server started
    here (wsemail/bench/pgserver.py); else a postgresql:// URL of an empty database.
    `mailbox`: messages in the recipients' inboxes before the run (a live server's
    mailboxes are not empty; the database's statistics are taken after they are stored).
    `recipients`: client n sends to recipient n mod `recipients` (1: every copy goes to one
    mailbox, whose totals row every delivery updates)."""
    temp = None
    if data_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="wsemail-bench-")
        data_dir = temp.name
    root = Path(data_dir)
    pg = None
    if store_url == "pg":
        from wsemail.bench.pgserver import PgServer

        pg = PgServer().start()
        store_url = pg.database()
    try:
        return _run(
            root, clients, seconds, warmup, signed_answers, store_url, workers, pg,
            (mailbox, recipients),
        )  # fmt: skip
    finally:
        if pg is not None:
            pg.close()
        if temp is not None:
            temp.cleanup()


def _seed(store: BatchStore, recipients: list[str], senders: list[str], count: int) -> None:
    """`count` messages in the `recipients`' inboxes (and their senders' sent folders), as
    the accept path stores them, before the server starts; kept across runs in --data-dir."""
    for start in range(store.transact_sync(_inbox_copies), count, 500):

        def batch(tx: Tx, start: int = start) -> None:
            for n in range(start, min(start + 500, count)):
                sender = senders[n % len(senders)]
                recipient = recipients[n % len(recipients)]
                copy = Message(
                    id="",
                    message_id=f"<seed-{n}@localhost>",
                    folder="inbox",
                    sender=sender,
                    to=[recipient],
                    cc=[],
                    subject=f"seed {n}",
                    date="2026-01-01T00:00:00Z",
                    size=64,
                    seen=n % 3 == 0,
                    body=f"seed message {n} " * 4,
                )
                tx.add_message(sender, "sent", replace(copy, folder="sent", seen=True))
                tx.add_message(recipient, "inbox", copy)

        store.transact_sync(batch)


def _inbox_copies(tx: Tx) -> int:
    return int(tx.conn.execute("SELECT count(*) FROM messages WHERE arrival='inbox'").fetchone()[0])


def _analyze(url: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("ANALYZE")


def _run(
    root: Path,
    clients: int,
    seconds: float,
    warmup: float,
    signed_answers: bool,
    store_url: str,
    workers: int,
    pg: PgServer | None,
    sizes: tuple[int, int],
) -> dict[str, float]:
    mailbox, count = sizes
    config = ServerConfig(data_dir=root, store_url=store_url)
    root.mkdir(parents=True, exist_ok=True)
    store = open_store(config)
    senders = [f"sender{i}@localhost" for i in range(clients)]
    sinks = ["sink@localhost"] if count == 1 else [f"sink{i}@localhost" for i in range(count)]
    existing = {u.address for u in store.transact_sync(lambda tx: tx.users())}
    for address in [*senders, *sinks]:
        if address not in existing:
            set_user(store, "localhost", address, BENCH_PASSWORD)
    salts = {u.address: u.salt for u in store.transact_sync(lambda tx: tx.users())}
    _seed(store, sinks, senders, mailbox)
    store.close()
    if store_url:  # the statistics autovacuum keeps in a live database (none in a new one)
        _analyze(store_url)
    creds = [Credentials(a, derive_key(BENCH_PASSWORD, salts[a])) for a in senders]

    command = [sys.executable, "-m", "wsemail.cli", "serve", "--data-dir", str(root)]
    if store_url:
        command += ["--store", store_url, "--workers", str(workers)]
    port = "0" if workers == 1 else str(free_port())  # workers: the parent binds first
    server = subprocess.Popen([*command, "--port", port], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        if " at " not in line:
            raise SystemExit(f"bench: server did not start: {line!r}")
        url = line.split(" at ")[1].split()[0]
        known = None
        if signed_answers:  # the server certificate, as a client holds it after first contact
            cert = x509.load_pem_x509_certificate((root / "federation" / "server.pem").read_bytes())
            known = base64.b64encode(cert_digest(cert)).decode("ascii")
        tally = Tally()

        async def drive() -> tuple[float, float, float, float]:
            start = time.perf_counter()
            measure_from = start + warmup
            stop_at = measure_from + seconds
            tasks = [
                asyncio.create_task(
                    _client(url, c, sinks[n % count], stop_at, measure_from, tally, known)
                )
                for n, c in enumerate(creds)
            ]
            await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
            db0 = process_tree_cpu(pg.pid) if pg is not None else 0.0
            cpu0, gen0, wall0 = (
                process_tree_cpu(server.pid),
                time.process_time(),
                time.perf_counter(),
            )
            await asyncio.sleep(max(0.0, stop_at - time.perf_counter()))
            cpu1, gen1, wall1 = (
                process_tree_cpu(server.pid),
                time.process_time(),
                time.perf_counter(),
            )
            db1 = process_tree_cpu(pg.pid) if pg is not None else 0.0
            await asyncio.gather(*tasks)
            return cpu1 - cpu0, gen1 - gen0, wall1 - wall0, db1 - db0

        server_cpu, generator_cpu, wall, db_cpu = asyncio.run(drive())
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()

    store = open_store(config)
    try:
        stored, sent = store.transact_sync(
            lambda tx: (
                _inbox_copies(tx),
                tx.conn.execute("SELECT count(*) FROM messages WHERE folder='sent'").fetchone()[0],
            )
        )
    finally:
        store.close()
    accepted = len(tally.latencies)
    ms = [x * 1000 for x in tally.latencies] or [0.0]
    result = {
        "clients": clients,
        "seconds": round(wall, 2),
        "accepted": accepted,
        "refused": tally.refused,
        "sends_per_second": round(accepted / wall, 1),
        "latency_ms_mean": round(statistics.fmean(ms), 2),
        "latency_ms_p50": round(percentile(ms, 50), 2),
        "latency_ms_p90": round(percentile(ms, 90), 2),
        "latency_ms_p99": round(percentile(ms, 99), 2),
        "latency_ms_max": round(max(ms), 2),
        "server_cpu_ms_per_send": round(server_cpu * 1000 / max(accepted, 1), 3),
        "server_cpu_cores": round(server_cpu / wall, 2),
        "database_cpu_ms_per_send": round(db_cpu * 1000 / max(accepted, 1), 3),
        "workers": workers,
        "generator_cpu_ms_per_send": round(generator_cpu * 1000 / max(accepted, 1), 3),
        "generator_cpu_cores": round(generator_cpu / wall, 2),
        "stored_inbox_copies": stored,
        "stored_sent_copies": sent,
        "mailbox": mailbox,
        "recipients": count,
    }
    print(
        f"wsemail bench: {clients} clients, {wall:.1f} s measured after {warmup:.0f} s warm-up,"
        f" password-MAC auth, {'signed' if signed_answers else 'plain'} answers,"
        + (f" PostgreSQL, {workers} worker(s)" if store_url else " SQLite WAL synchronous=FULL")
        + f", {count} recipient(s), {mailbox} messages in the inboxes before"
    )
    print(
        f"  accepted sends     {accepted} ({result['sends_per_second']}/s), refused {tally.refused}"
    )
    print(
        f"  latency ms         mean {result['latency_ms_mean']}  p50 {result['latency_ms_p50']}"
        f"  p90 {result['latency_ms_p90']}  p99 {result['latency_ms_p99']}"
        f"  max {result['latency_ms_max']}"
    )
    print(
        f"  server CPU         {result['server_cpu_ms_per_send']} ms per accepted send "
        f"({result['server_cpu_cores']} cores busy)"
    )
    if pg is not None:
        print(f"  database CPU       {result['database_cpu_ms_per_send']} ms per accepted send")
    print(
        f"  load generator CPU {result['generator_cpu_ms_per_send']} ms per send "
        f"({result['generator_cpu_cores']} cores busy)"
    )
    print(
        f"  durable            {stored} inbox + {sent} sent copies in the database "
        "(includes warm-up sends and the ones before)"
    )
    return result


__all__ = ["run_bench"]
