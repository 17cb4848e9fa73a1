"""Benchmark, not a test (pytest does not collect it): live IM push sessions at scale. A real
`wsemail serve` process on loopback; users share one password (their rows are written
straight into the fresh data dir: one scrypt instead of thousands); each user opens
PER_USER push streams (one-time ticket from the MAC-authenticated `im` extension, then the
server-sent-events stream), read by one asyncio loop in this process. At each step it
reports the server's memory per live session, push latency from `Send` to the event on
every live session of the recipient (p50 / p99), and how long an ordinary ListHeaders
takes meanwhile; at the end, how long the server takes to stop (SIGTERM) with all the
streams open.

    .venv/bin/python tests/bench_im_sessions.py [N ...] [--per-user K] [--pushes M]
                                                [--nofile LIMIT] [--tls]

N defaults to 2000 5000 (5000 only if the file-descriptor limit allows: this process and
the server each need one descriptor per session; the soft limit is raised to the hard one).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from wsemail.client.im import InstantMessenger
from wsemail.client.mail import Client
from wsemail.core.units import percentile
from wsemail.protocol.auth import Credentials, derive_key
from wsemail.protocol.errors import WsemailError
from wsemail.protocol.soap import q, text_of
from wsemail.server.store import SqliteStore

PASSWORD = "correct horse battery"
SENDER = "sender@localhost"
BATCH_USERS = 50


def wsemail() -> str:
    return str(Path(sys.executable).with_name("wsemail"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def raise_nofile(wanted: int | None) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if wanted is None else min(wanted, hard)
    if target != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


@dataclass
class Live:
    user: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    got: dict[str, float] = field(default_factory=dict)  # push body → arrival


@dataclass
class Bench:
    url: str
    host: str
    port: int
    tls: ssl.SSLContext | None
    key: bytes
    per_user: int
    sessions: list[Live] = field(default_factory=list)
    refused: dict[str, int] = field(default_factory=dict)
    readers: set[asyncio.Task[None]] = field(default_factory=set)
    waiters: dict[str, asyncio.Event] = field(default_factory=dict)
    clients: dict[str, Client] = field(default_factory=dict)

    def client(self, user: str) -> Client:
        if user not in self.clients:
            verify: ssl.SSLContext | bool = self.tls if self.tls is not None else True
            tls_name = "localhost" if self.tls is not None else None
            self.clients[user] = Client(
                self.url,
                user,
                credentials=Credentials(user, self.key),
                verify=verify,
                tls_name=tls_name,
            )
        return self.clients[user]

    def tickets(self, user: str) -> list[str]:
        im = InstantMessenger(self.client(user))
        found = []
        for _ in range(self.per_user):
            answer = im._call(etree.Element(q("OpenStream")))
            found.append(text_of(answer, "Ticket", "") or "")
        return found

    async def open(self, user: str, ticket: str) -> Live | str:
        """A live session, or why it was refused."""
        try:
            return await self._open(user, ticket)
        except (OSError, TimeoutError) as exc:
            return f"{type(exc).__name__}: {exc}"

    async def _open(self, user: str, ticket: str) -> Live | str:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                self.host,
                self.port,
                ssl=self.tls,
                server_hostname="localhost" if self.tls else None,
                limit=1 << 20,
            ),
            10,
        )
        writer.write(
            f"GET /wsemail/im/stream?ticket={ticket} HTTP/1.1\r\nHost: localhost\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        status = await asyncio.wait_for(reader.readline(), 10)
        if b" 200 " not in status:
            writer.close()
            return status.decode().strip() or "connection closed"
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        live = Live(user, reader, writer)
        while True:  # chunked: size line, then the event
            line = await reader.readline()
            if line.startswith(b"event: ready"):
                break
        task = asyncio.get_running_loop().create_task(self.read(live))
        self.readers.add(task)
        task.add_done_callback(self.readers.discard)
        return live

    async def read(self, live: Live) -> None:
        kind = ""
        try:
            while line := await live.reader.readline():
                if line.startswith(b"event: "):
                    kind = line[7:].strip().decode()
                elif line.startswith(b"data: ") and kind == "message":
                    body = str(json.loads(line[6:])["body"])
                    live.got[body] = time.perf_counter()
                    event = self.waiters.get(body)
                    if event is not None:
                        event.set()
        except (ConnectionError, OSError, ValueError):
            return


async def grow(bench: Bench, users: list[str], pool: ThreadPoolExecutor) -> None:
    loop = asyncio.get_running_loop()
    for start in range(0, len(users), BATCH_USERS):
        chunk = users[start : start + BATCH_USERS]
        tickets = await asyncio.gather(
            *(loop.run_in_executor(pool, bench.tickets, u) for u in chunk)
        )
        opened = await asyncio.gather(
            *(bench.open(u, t) for u, ts in zip(chunk, tickets, strict=True) for t in ts)
        )
        for outcome in opened:
            if isinstance(outcome, Live):
                bench.sessions.append(outcome)
            else:
                bench.refused[outcome] = bench.refused.get(outcome, 0) + 1


async def pushes(bench: Bench, count: int, pool: ThreadPoolExecutor) -> tuple[list[float], int]:
    """Sequential instant messages to users with live sessions; latency until the last of
    the recipient's sessions has the event. Returns (latencies in ms, pushes lost)."""
    loop = asyncio.get_running_loop()
    by_user: dict[str, list[Live]] = {}
    for live in bench.sessions:
        by_user.setdefault(live.user, []).append(live)
    users = sorted(by_user)
    sender = bench.client(SENDER)
    latencies: list[float] = []
    lost = 0
    for i in range(count):
        user = users[(i * 7919) % len(users)]
        body = f"push {i} {time.time_ns()}"
        bench.waiters[body] = asyncio.Event()
        started = time.perf_counter()
        await loop.run_in_executor(
            pool, lambda u=user, b=body: sender.send([u], "IM", b, instant=True)
        )
        deadline = started + 10
        while not all(body in s.got for s in by_user[user]) and time.perf_counter() < deadline:
            bench.waiters[body].clear()
            try:
                await asyncio.wait_for(bench.waiters[body].wait(), 1)
            except TimeoutError:
                pass
        del bench.waiters[body]
        if all(body in s.got for s in by_user[user]):
            latencies.append((max(s.got[body] for s in by_user[user]) - started) * 1000)
        else:
            lost += 1
    return latencies, lost


async def list_latency(bench: Bench, pool: ThreadPoolExecutor, count: int = 50) -> list[float]:
    loop = asyncio.get_running_loop()
    client = bench.client(SENDER)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        await loop.run_in_executor(pool, client.list_headers)
        times.append((time.perf_counter() - started) * 1000)
    return times


def prepare(data: Path, users: list[str]) -> bytes:
    salt = os.urandom(16)
    key = derive_key(PASSWORD, salt)
    store = SqliteStore(data / "wsemail.db")
    try:
        store.transact_sync(lambda tx: [tx.put_user(u, salt, key, False) for u in [SENDER, *users]])
    finally:
        store.close()
    return key


def tls_files(tmp: Path) -> tuple[list[str], ssl.SSLContext]:
    from wsemail.pki import create_root, issue_server

    create_root(tmp / "ca")
    issue_server(tmp / "ca", "localhost", tmp / "id")
    context = ssl.create_default_context(cafile=str(tmp / "ca" / "root.pem"))
    args = [
        "--tls-cert",
        str(tmp / "id" / "server.pem"),
        "--tls-key",
        str(tmp / "id" / "server.key"),
    ]
    return args, context


async def main(args: argparse.Namespace) -> None:
    limit = raise_nofile(args.nofile)
    steps = sorted(args.sessions or [2000, 5000])
    usable = [n for n in steps if 2 * n + 200 <= limit] or steps[:1]
    if usable != steps:
        print(f"fd limit {limit}: running {usable} only (needs ~2 per session)")
    per_user = args.per_user
    users = [f"u{i:05d}@localhost" for i in range(-(-max(usable) // per_user))]
    tmp = Path(tempfile.mkdtemp(prefix="wsemail-bench-im-"))
    data = tmp / "data"
    data.mkdir()
    key = prepare(data, users)
    port = free_port()
    tls_args, context = tls_files(tmp) if args.tls else ([], None)
    server_nofile = args.server_nofile

    def limit_server() -> None:
        if server_nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (server_nofile, server_nofile))

    server = subprocess.Popen(
        [wsemail(), "serve", "--data-dir", str(data), "--port", str(port), *tls_args],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=limit_server,  # otherwise it inherits this process's raised limit
    )
    try:
        await measure(args, server, port, url_of(server), key, context, usable, users)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def url_of(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    for line in server.stdout:
        if " at " in line:
            return line.split(" at ")[1].split(" ")[0]
    raise SystemExit(f"the server did not start (exit {server.wait()})")


async def measure(
    args: argparse.Namespace,
    server: subprocess.Popen[str],
    port: int,
    url: str,
    key: bytes,
    context: ssl.SSLContext | None,
    usable: list[int],
    users: list[str],
) -> None:
    per_user = args.per_user
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    bench = Bench(url, "127.0.0.1", port, context, key, per_user)
    pool = ThreadPoolExecutor(4)
    print(f"server pid {server.pid} at {url}; fd limit {limit}; {per_user} sessions per user")
    # warm-up: one session, one push, one list; then the baseline
    await grow(bench, users[:1], pool)
    await pushes(bench, 5, pool)
    await list_latency(bench, pool, 5)
    await asyncio.sleep(1)
    base_sessions, base_rss = len(bench.sessions), rss_kib(server.pid)
    results = []
    previous = (base_sessions, base_rss)
    next_user = 1
    for n in usable:
        need = -(-n // per_user)
        started = time.perf_counter()
        await grow(bench, users[next_user:need], pool)
        next_user = need
        opened_in = time.perf_counter() - started
        await asyncio.sleep(2)
        rss = rss_kib(server.pid)
        latencies, lost = await pushes(bench, args.pushes, pool)
        try:
            lists = await list_latency(bench, pool)
        except WsemailError as exc:
            print(f"ListHeaders failed: {exc}")
            lists = [float("nan")]
        live = len(bench.sessions)
        row = {
            "sessions": live,
            "open_s": round(opened_in, 1),
            "server_rss_mib": round(rss / 1024, 1),
            "kib_per_session": round((rss - base_rss) / (live - base_sessions), 1),
            "kib_per_added_session": round((rss - previous[1]) / (live - previous[0]), 1),
            "push_p50_ms": round(statistics.median(latencies), 2) if latencies else None,
            "push_p99_ms": round(percentile(latencies, 99), 2) if latencies else None,
            "pushes_lost": lost,
            "refused": dict(bench.refused),
            "list_p50_ms": round(statistics.median(lists), 2),
            "list_p99_ms": round(percentile(lists, 99), 2),
        }
        previous = (live, rss)
        results.append(row)
        print(json.dumps(row))
    started = time.perf_counter()
    server.send_signal(signal.SIGTERM)
    server.wait(60)
    stop_s = time.perf_counter() - started
    print(
        json.dumps({"stop_s_with_open_streams": round(stop_s, 2), "streams": len(bench.sessions)})
    )
    for task in list(bench.readers):
        task.cancel()
    await asyncio.gather(*bench.readers, return_exceptions=True)
    for live in bench.sessions:
        live.writer.close()
    for client in bench.clients.values():
        client.close()
    pool.shutdown()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sessions", nargs="*", type=int)
    parser.add_argument("--per-user", type=int, default=10)
    parser.add_argument("--pushes", type=int, default=200)
    parser.add_argument("--nofile", type=int, default=None, help="soft fd limit to use")
    parser.add_argument("--server-nofile", type=int, default=None, help="the server's fd limit")
    parser.add_argument("--tls", action="store_true", help="serve over TLS (a fresh test CA)")
    asyncio.run(main(parser.parse_args()))
