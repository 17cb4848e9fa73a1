"""In charge of the test bed's servers: two real `wsemail serve` processes with their
config, users and primed mailboxes, and the byte-counting TCP relay between them (the
paper's tcpflow)."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wsemail.bench.options import LOCAL, PASSWORD, PRIMED
from wsemail.protocol.auth import derive_key
from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import Message, new_message_id
from wsemail.server.accounts import set_user
from wsemail.server.config import CONFIG_NAME
from wsemail.server.pipeline import DeliveryProcessor, Environment, PluginSpec, Verdict
from wsemail.server.store import BatchStore, SqliteStore


class DiscardDelivery(DeliveryProcessor):
    """Test bed: take every message delivered here and drop it (S_e verifies, then discards)."""

    name = "testbed-discard"

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        return Verdict.TAKEN


# -- options and results ------------------------------------------------------------------


class CountingProxy:
    """A TCP forwarder (TLS passes through untouched) that counts bytes each way."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.upstream = 0  # bytes from the connecting server to the target
        self.downstream = 0  # answers back
        self.connections = 0
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="testbed-proxy", daemon=True)
        self._server: asyncio.base_events.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[Any]] = set()

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        """Drop every forwarded connection (so neither server waits on an idle peer's TLS
        close_notify when it shuts down), then the loop."""

        async def drop() -> None:
            for writer in self._writers:
                writer.transport.abort()
            pending = {t for t in self._tasks if not t.done()}
            if pending:
                await asyncio.wait(pending, timeout=2)
            self._loop.stop()

        self._loop.call_soon_threadsafe(lambda: self._loop.create_task(drop()))
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def open_server() -> None:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]

        self._loop.run_until_complete(open_server())
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            if self._server is not None:
                self._server.close()
                self._loop.run_until_complete(self._server.wait_closed())
            self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers += [writer, up_writer]

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, upstream: bool
        ) -> None:
            try:
                while data := await src.read(65536):
                    if upstream:
                        self.upstream += len(data)
                    else:
                        self.downstream += len(data)
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))


# -- the two servers -------------------------------------------------------------------------


def free_port() -> int:
    """A port free now, drawn below Linux's ephemeral range (32768-60999): a port the
    kernel hands out for bind(0) or an outgoing connection may be taken again by another
    process before the server that is told about it starts listening."""
    for _ in range(200):
        port = secrets.choice(range(20_000, 32_000))
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise UsageError("no free port between 20000 and 32000 on 127.0.0.1")


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


def write_config(
    data_dir: Path,
    *,
    domain: str,
    port: int,
    ca: Path,
    identity: Path,
    routes: dict[str, str],
    plugins: list[PluginSpec],
    sections: dict[str, dict[str, Any]] | None = None,
) -> None:
    """server.toml for a test bed node; `sections` adds tables such as
    `{"queue": {"retry_base": 0.5}}` or `{"limits": {"storage_reserve": 1 << 20}}`."""
    lines = [
        f'domain = "{domain}"',
        'host = "127.0.0.1"',
        f"port = {port}",
        "[tls]",
        f'cert = "{identity / "server.pem"}"',
        f'key = "{identity / "server.key"}"',
        "[federation]",
        f'identity = "{identity}"',
        f'trust_roots = ["{ca / "root.pem"}"]',
        f'crls = ["{ca / "crl.pem"}"]',
        "[routes]",
        *(f'"{d}" = ["{url}"]' for d, url in routes.items()),
    ]
    for table, values in (sections or {}).items():
        lines += [f"[{table}]", *(f"{k} = {_toml_value(v)}" for k, v in values.items())]
    for spec in plugins:
        lines += ["[[plugins]]", f'ref = "{spec.ref}"', f"priority = {spec.priority}"]
        if spec.options:
            lines.append(f"options = {_toml_value(spec.options)}")
    (data_dir / CONFIG_NAME).write_text("\n".join(lines) + "\n", encoding="utf-8")


@dataclass
class Node:
    domain: str
    data_dir: Path
    port: int
    process: subprocess.Popen[str] | None = None
    url: str = ""
    store_url: str = ""  # the PostgreSQL store the node shares with others ("": SQLite)

    def start(self, profile: Path | None = None, *, log: Path | None = None) -> None:
        """Start `wsemail serve` and wait for its ready line; its log (stderr) goes to the
        file `log` (appended) when given."""
        command = [sys.executable, "-m", "wsemail.cli", "serve", "--data-dir", str(self.data_dir)]
        if profile is not None and profile.suffix in (".prof", ".pstats"):
            command[1:1] = ["-m", "cProfile", "-o", str(profile)]
        if log is None:
            self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        else:
            with log.open("a") as err:
                self.process = subprocess.Popen(
                    command, stdout=subprocess.PIPE, stderr=err, text=True
                )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if " at " not in line:
            raise UsageError(f"testbed: {self.domain} did not start: {line.strip()!r}")
        self.url = line.split(" at ")[1].split()[0]

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()

    def count(self, sql: str, *args: object) -> int:
        if self.store_url:
            from wsemail.server.postgres.connection import PgConnection

            conn = PgConnection.open(self.store_url)
            try:
                row = conn.execute(sql, args).fetchone()
                return int(row[0]) if row else 0
            finally:
                conn.close()
        with sqlite3.connect(self.data_dir / "wsemail.db", timeout=10) as db:
            return int(db.execute(sql, args).fetchone()[0])


def add_users(
    db: Path, domain: str, addresses: list[str], *, store_url: str = ""
) -> dict[str, bytes]:
    """Create accounts (scrypt once each) and return each one's MAC key; in the data dir's
    SQLite file `db`, or in the PostgreSQL store of `store_url`."""
    store = _open(db, store_url)
    try:
        for address in addresses:
            set_user(store, domain, address, PASSWORD)
        salts = {u.address: u.salt for u in store.transact_sync(lambda tx: tx.users())}
    finally:
        store.close()
    return {a: derive_key(PASSWORD, salts[a]) for a in addresses}


def prime(db: Path, owners: list[str], size: int, *, store_url: str = "") -> None:
    """About six messages in each client's inbox before the run."""

    def work(tx: Any) -> None:
        for owner in owners:
            for n in range(PRIMED):
                body = "p" * size
                tx.add_message(
                    owner,
                    "inbox",
                    Message(
                        id="",
                        message_id=new_message_id(LOCAL),
                        folder="inbox",
                        sender=f"primer@{LOCAL}",
                        to=[owner],
                        cc=[],
                        subject=f"primed {n}",
                        date="2026-01-01T00:00:00Z",
                        size=size,
                        seen=False,
                        body=body,
                    ),
                )

    store = _open(db, store_url)
    try:
        store.transact_sync(work)
    finally:
        store.close()


def _open(db: Path, store_url: str) -> BatchStore:
    if store_url:
        from wsemail.server.postgres.store import PostgresStore

        return PostgresStore(store_url)
    return SqliteStore(db)


# -- the load generator ---------------------------------------------------------------------
