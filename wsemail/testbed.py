"""In charge of `wsemail bench testbed`: the retrospective paper's test bed (§5) on loopback.

Two real `wsemail serve` processes over TLS, `local.test` (S_i) and `external.test` (S_e),
trusting one throw-away federation root and routed to each other through byte-counting TCP
relays (the paper's tcpflow). N clients, each on its own keep-alive TLS connection, make R
requests (or run for a duration) drawn from a send / list / retrieve / delete mix; every
request carries the password MAC, every send goes to one random local and one external user
(so it is queued, signed, relayed and verified by S_e, which discards it), and a feeder
sends one message per second to each client through S_e. It reports latency per request
and per operation, requests/s and messages/minute, bytes per operation between clients and
S_i (the paper's Table 1) and between the servers (Table 2).
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from lxml import etree

from wsemail import soap
from wsemail.auth import SIGN_RESPONSE, Credentials, derive_key
from wsemail.dsig import cert_digest
from wsemail.errors import UsageError
from wsemail.message import Draft, Message, new_message_id
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.server.accounts import set_user
from wsemail.server.config import CONFIG_NAME, DEFAULT_PLUGINS
from wsemail.server.pipeline import DeliveryProcessor, Environment, PluginSpec, Verdict
from wsemail.server.store import SqliteStore
from wsemail.soap import element, q

LOCAL, EXTERNAL = "local.test", "external.test"
OPS = ("send", "list", "retrieve", "delete")
PASSWORD = "testbed password"  # noqa: S105 -- throw-away accounts in a temp dir
PRIMED = 6
FEEDER = f"feeder@{EXTERNAL}"
_ID = re.compile(rb"<(?:[\w.-]+:)?Id>([^<]+)</")


class DiscardDelivery(DeliveryProcessor):
    """Test bed: take every message delivered here and drop it (S_e verifies, then discards)."""

    name = "testbed-discard"

    def deliver(self, message: Message, recipient: str, env: Environment) -> Verdict:
        return Verdict.TAKEN


# -- options and results ------------------------------------------------------------------


def parse_mix(text: str) -> dict[str, float]:
    """`25,25,25,25` (send,list,retrieve,delete) or `send=40,list=20,...`; normalised."""
    weights: dict[str, float] = dict.fromkeys(OPS, 0.0)
    try:
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all("=" not in p for p in parts):
            if len(parts) != len(OPS):
                raise ValueError
            weights = {op: float(p) for op, p in zip(OPS, parts, strict=True)}
        else:
            for part in parts:
                name, _, value = part.partition("=")
                if name.strip() not in weights:
                    raise ValueError
                weights[name.strip()] = float(value)
    except ValueError:
        raise UsageError(
            f"--mix {text!r}: use four weights for send,list,retrieve,delete (25,25,25,25) "
            "or name=weight pairs"
        ) from None
    total = sum(weights.values())
    if total <= 0 or any(w < 0 for w in weights.values()):
        raise UsageError("--mix needs non-negative weights with a positive sum")
    return {op: w / total for op, w in weights.items()}


@dataclass
class Options:
    clients: int = 4
    requests: int = 2000  # per client (ignored with a duration)
    mix: dict[str, float] = field(default_factory=lambda: dict.fromkeys(OPS, 0.25))
    size: int = 1024  # message body bytes
    duration: float | None = None  # seconds instead of a request count
    rate: float | None = None  # open loop: total requests/s over all clients
    feed_rate: float = 1.0  # messages/s from S_e to each client
    profile: Path | None = None
    plot: Path | None = None
    data_dir: Path | None = None
    seed: int | None = None
    signed_answers: bool = False  # clients ask for signed answers (certificate by digest)

    def check(self) -> None:
        if self.clients < 1 or self.clients > 256:
            raise UsageError("--clients must be between 1 and 256")
        if self.duration is None and self.requests < 1:
            raise UsageError("--requests must be at least 1")
        if self.duration is not None and self.duration <= 0:
            raise UsageError("--duration must be positive")
        if self.rate is not None and self.rate <= 0:
            raise UsageError("--rate must be positive")
        if self.size < 0 or self.size > 1 << 20:
            raise UsageError("--size must be between 0 and 1048576 bytes")
        if self.plot is not None:
            try:
                import matplotlib  # noqa: F401
            except ImportError:
                raise UsageError("--plot needs matplotlib: pip install 'matplotlib>=3.8'") from None
        if self.profile is not None and self.profile.suffix not in (".prof", ".pstats"):
            if _py_spy() is None:
                raise UsageError("--profile: py-spy is not installed (or name a .prof file)")


@dataclass
class OpTally:
    latencies: list[float] = field(default_factory=list)  # ms
    sent: int = 0  # bytes client -> server (HTTP request line, headers, body)
    received: int = 0  # bytes server -> client
    failed: int = 0
    skipped: int = 0  # retrieve/delete with nothing in the inbox: no request made
    relayed: int = 0  # retrieves of a message relayed from S_e (with its compact provenance)
    relayed_received: int = 0


@dataclass
class Failure:
    op: str
    status: str
    body: str


# -- byte-counting TCP relay between the servers --------------------------------------------


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


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _py_spy() -> str | None:
    return shutil.which("py-spy", path=f"{Path(sys.executable).parent}:{os.environ['PATH']}")


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
) -> None:
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

    def start(self, profile: Path | None = None) -> None:
        command = [sys.executable, "-m", "wsemail.cli", "serve", "--data-dir", str(self.data_dir)]
        if profile is not None and profile.suffix in (".prof", ".pstats"):
            command[1:1] = ["-m", "cProfile", "-o", str(profile)]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
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
        with sqlite3.connect(self.data_dir / "wsemail.db", timeout=10) as db:
            return int(db.execute(sql, args).fetchone()[0])


def _add_users(db: Path, domain: str, addresses: list[str]) -> dict[str, bytes]:
    """Create accounts (scrypt once each) and return each one's MAC key."""
    store = SqliteStore(db)
    try:
        for address in addresses:
            set_user(store, domain, address, PASSWORD)
        salts = {u.address: u.salt for u in store.transact_sync(lambda tx: tx.users())}
    finally:
        store.close()
    return {a: derive_key(PASSWORD, salts[a]) for a in addresses}


def _prime(db: Path, owners: list[str], size: int) -> None:
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

    store = SqliteStore(db)
    try:
        store.transact_sync(work)
    finally:
        store.close()


# -- the load generator ---------------------------------------------------------------------


class Connection:
    """One keep-alive HTTP/1.1 connection over TLS, raw, so the generator stays cheap."""

    def __init__(self, url: str, context: ssl.SSLContext, tls_name: str) -> None:
        host, _, rest = url.split("://", 1)[1].partition(":")
        port, _, path = rest.partition("/")
        self.host, self.port, self.path = host, int(port), "/" + path
        self.context, self.tls_name = context, tls_name
        self.head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {soap.CONTENT_TYPE}\r\n"
        ).encode()
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(
            self.host, self.port, ssl=self.context, server_hostname=self.tls_name
        )
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def post(self, data: bytes) -> tuple[int, bytes, int, int]:
        """(status, body, bytes sent, bytes received)."""
        assert self.reader is not None and self.writer is not None
        request = self.head + b"Content-Length: %d\r\n\r\n" % len(data) + data
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        return status, body, len(request), len(head) + length

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                async with asyncio.timeout(2):
                    await self.writer.wait_closed()
            except (TimeoutError, OSError):
                self.writer.transport.abort()


def _envelope(creds: Credentials, op: etree._Element, known: str | None = None) -> bytes:
    env, header, body = soap.new_envelope()
    body.append(op)
    creds.sign(header, body)
    if known is not None:  # a signed answer, naming the server certificate the client holds
        etree.SubElement(header, q(SIGN_RESPONSE)).set("ServerCertificate", known)
    return soap.serialize(env)


@dataclass
class Plan:
    options: Options
    local_users: list[str]
    external_users: list[str]
    stop_at: float | None
    rng: random.Random
    known: str | None = None  # digest of local.test's server certificate (signed answers)


class Client:
    """One simulated user: its own connection, its known inbox, its tallies."""

    def __init__(self, creds: Credentials, conn: Connection, plan: Plan) -> None:
        self.creds, self.conn, self.plan = creds, conn, plan
        self.known: list[str] = []
        self.tallies = {op: OpTally() for op in OPS}
        self.failures: list[Failure] = []
        self.n = 0

    def build(self, op: str) -> bytes | None:
        plan, rng = self.plan, self.plan.rng
        if op == "send":
            self.n += 1
            node = etree.Element(q("Send"))
            Draft(
                to=[rng.choice(plan.local_users), rng.choice(plan.external_users)],
                subject=f"testbed {self.creds.username} {self.n}",
                body="x" * plan.options.size,
            ).to_xml(node)
        elif op == "list":
            node = etree.Element(q("ListHeaders"))
            element(node, "Folder", "inbox")
            element(node, "Limit", "50")
        else:
            if not self.known:
                return None
            target = rng.choice(self.known)
            node = etree.Element(q("Retrieve" if op == "retrieve" else "Delete"))
            element(node, "Id", target)
            if op == "delete":
                self.known.remove(target)
        return _envelope(self.creds, node, self.plan.known)

    async def call(self, op: str, data: bytes, started: float) -> None:
        status, body, sent, received = await self.conn.post(data)
        elapsed = (time.perf_counter() - started) * 1000
        tally = self.tallies[op]
        tally.sent += sent
        tally.received += received
        if status != 200:
            tally.failed += 1
            if len(self.failures) < 5:
                self.failures.append(
                    Failure(op, str(status), body[:300].decode("utf-8", "replace"))
                )
            return
        tally.latencies.append(elapsed)
        if op == "list":
            self.known = [m.decode() for m in _ID.findall(body)]
        elif op == "retrieve" and b"Provenance" in body:
            tally.relayed += 1
            tally.relayed_received += received

    async def run(self, count: int, interval: float | None, offset: float) -> None:
        ops, weights = list(self.plan.options.mix), list(self.plan.options.mix.values())
        rng = self.plan.rng
        # learn the primed inbox (not counted)
        data = self.build("list")
        assert data is not None
        status, body, _, _ = await self.conn.post(data)
        self.known = [m.decode() for m in _ID.findall(body)] if status == 200 else []
        start = time.perf_counter() + offset
        made = attempts = 0
        stop_at = self.plan.stop_at
        while True:
            if stop_at is not None:
                if time.perf_counter() >= stop_at:
                    return
            elif made >= count or attempts >= 20 * count:
                return
            attempts += 1
            op = rng.choices(ops, weights)[0]
            scheduled = None
            if interval is not None:
                scheduled = start + made * interval
                # loop: the event loop's timers may fire up to a millisecond early
                while (delay := scheduled - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
            data = self.build(op)
            if data is None:
                self.tallies[op].skipped += 1
                continue
            made += 1
            # open loop: latency from the scheduled start (no coordinated omission)
            await self.call(op, data, scheduled if scheduled is not None else time.perf_counter())


async def _feeder(
    creds: Credentials,
    conn: Connection,
    recipients: list[str],
    rate: float,
    stop: asyncio.Event,
    counts: dict[str, int],
) -> None:
    """S_e's load: `rate` messages/s to each client, through S_e's client interface."""
    if rate <= 0:
        return
    await conn.open()
    try:
        tick, n = time.perf_counter(), 0
        while not stop.is_set():
            for recipient in recipients:
                n += 1
                op = etree.Element(q("Send"))
                Draft(to=[recipient], subject=f"from outside {n}", body="e" * 1024).to_xml(op)
                status, _, _, _ = await conn.post(_envelope(creds, op))
                counts["ok" if status == 200 else "failed"] += 1
            tick += 1.0 / rate
            try:
                await asyncio.wait_for(stop.wait(), max(0.0, tick - time.perf_counter()))
            except TimeoutError:
                pass
    finally:
        await conn.close()


# -- statistics ---------------------------------------------------------------------------


def _percentile(ordered: list[float], pct: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(len(ordered) * pct / 100) - 1)
    return ordered[min(len(ordered) - 1, rank)]


def latency_summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return dict.fromkeys(("mean", "variance", "stdev", "min", "p50", "p90", "p99", "max"), 0.0)
    return {
        "mean": round(statistics.fmean(ordered), 3),
        "variance": round(statistics.pvariance(ordered), 3),
        "stdev": round(statistics.pstdev(ordered), 3),
        "min": round(ordered[0], 3),
        "p50": round(_percentile(ordered, 50), 3),
        "p90": round(_percentile(ordered, 90), 3),
        "p99": round(_percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the run ------------------------------------------------------------------------------


def run_testbed(options: Options, *, quiet: bool = False) -> dict[str, Any]:
    """Set up both domains, run the load, tear down; return the figures."""
    options.check()
    temp = None
    if options.data_dir is None:
        temp = tempfile.TemporaryDirectory(prefix="wsemail-testbed-")
        root = Path(temp.name)
    else:
        root = options.data_dir
        if root.exists() and any(root.iterdir()):
            raise UsageError(f"--data-dir {root} must be empty or absent")
        root.mkdir(parents=True, exist_ok=True)
    try:
        return _run(options, root, quiet)
    finally:
        if temp is not None:
            temp.cleanup()


def _run(options: Options, root: Path, quiet: bool) -> dict[str, Any]:
    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda m: print(m, flush=True))
    ca = root / "ca"
    create_root(ca, name="wsemail test bed root")
    write_crl(ca)
    local = Node(LOCAL, root / LOCAL, _free_port())
    external = Node(EXTERNAL, root / EXTERNAL, _free_port())
    to_external = CountingProxy(external.port).start()
    to_local = CountingProxy(local.port).start()
    nodes = [local, external]
    try:
        for node, proxy, other, plugins in (
            (local, to_external, EXTERNAL, list(DEFAULT_PLUGINS)),
            (
                external,
                to_local,
                LOCAL,
                [*DEFAULT_PLUGINS, PluginSpec("wsemail.testbed:DiscardDelivery", 50)],
            ),
        ):
            node.data_dir.mkdir(mode=0o700)
            identity = root / f"{node.domain}-identity"
            issue_server(ca, node.domain, identity)
            write_config(
                node.data_dir,
                domain=node.domain,
                port=node.port,
                ca=ca,
                identity=identity,
                routes={other: f"https://127.0.0.1:{proxy.port}/wsemail"},
                plugins=plugins,
            )
        local_users = [f"client{i}@{LOCAL}" for i in range(options.clients)]
        external_users = [f"reader{i}@{EXTERNAL}" for i in range(options.clients)]
        say(f"testbed: creating {2 * options.clients + 1} accounts (scrypt each)")
        local.data_dir.joinpath("wsemail.db")
        keys = _add_users(local.data_dir / "wsemail.db", LOCAL, local_users)
        feeder_key = _add_users(
            external.data_dir / "wsemail.db", EXTERNAL, [*external_users, FEEDER]
        )
        _prime(local.data_dir / "wsemail.db", local_users, options.size)
        local.start(options.profile)
        external.start()
        spy = None
        if options.profile is not None and options.profile.suffix not in (".prof", ".pstats"):
            spy = _start_py_spy(options.profile, local)
        say(
            f"testbed: {LOCAL} at {local.url}, {EXTERNAL} at {external.url}; "
            f"{options.clients} clients, "
            + (
                f"{options.duration:g} s"
                if options.duration
                else f"{options.requests} requests each"
            )
            + (f", open loop {options.rate:g} req/s" if options.rate else ", closed loop")
        )
        context = ssl.create_default_context(cafile=str(ca / "root.pem"))
        result = _drive(
            options, local, external, context, keys, feeder_key[FEEDER], local_users, external_users
        )
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(timeout=60)
        # let both relays drain so Table 2 holds every message of the run
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and (
            local.count("SELECT count(*) FROM queue")
            or external.count("SELECT count(*) FROM queue")
        ):
            time.sleep(0.1)
        result["queue_left"] = local.count("SELECT count(*) FROM queue") + external.count(
            "SELECT count(*) FROM queue"
        )
        relayed_out = external.count(
            "SELECT count(DISTINCT message_id) FROM deliveries WHERE origin=?", LOCAL
        )
        relayed_in = local.count(
            "SELECT count(DISTINCT message_id) FROM deliveries WHERE origin=?", EXTERNAL
        )
    finally:
        to_external.stop()
        to_local.stop()
        for node in nodes:
            node.stop()
    result["servers"] = {
        LOCAL: {
            "messages_relayed": relayed_out,
            "sent_bytes": to_external.upstream,
            "confirmation_bytes": to_external.downstream,
            "connections": to_external.connections,
        },
        EXTERNAL: {
            "messages_relayed": relayed_in,
            "sent_bytes": to_local.upstream,
            "confirmation_bytes": to_local.downstream,
            "connections": to_local.connections,
        },
    }
    wall = result["seconds"]
    sends = result["per_op"]["send"]["count"]
    result["messages_per_minute"] = round((sends + relayed_in) * 60 / wall, 1) if wall else 0.0
    if options.profile is not None:
        result["profile"] = str(options.profile)
    if not quiet:
        print_report(result)
    return result


def _start_py_spy(target: Path, node: Node) -> subprocess.Popen[bytes]:
    spy = _py_spy()
    assert spy is not None and node.process is not None
    fmt = {".svg": "flamegraph", ".json": "speedscope"}.get(target.suffix, "raw")
    process = subprocess.Popen(
        [spy, "record", "-p", str(node.process.pid), "-f", fmt, "-o", str(target), "-r", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return process


def _drive(
    options: Options,
    local: Node,
    external: Node,
    context: ssl.SSLContext,
    keys: dict[str, bytes],
    feeder_key: bytes,
    local_users: list[str],
    external_users: list[str],
) -> dict[str, Any]:
    rng = random.Random(options.seed)  # noqa: S311 -- load mix, not security
    assert local.process is not None and external.process is not None
    local_pid, external_pid = local.process.pid, external.process.pid

    async def main() -> tuple[list[Client], dict[str, int], float, dict[str, float]]:
        stop_at = None
        plan = Plan(options, local_users, external_users, stop_at, rng)
        if options.signed_answers:
            pem = (local.data_dir.parent / f"{LOCAL}-identity" / "server.pem").read_bytes()
            digest = cert_digest(x509.load_pem_x509_certificate(pem))
            plan.known = base64.b64encode(digest).decode("ascii")
        clients = [
            Client(Credentials(u, keys[u]), Connection(local.url, context, LOCAL), plan)
            for u in local_users
        ]
        await asyncio.gather(*(c.conn.open() for c in clients))
        stop = asyncio.Event()
        feed_counts = {"ok": 0, "failed": 0}
        feeder = asyncio.create_task(
            _feeder(
                Credentials(FEEDER, feeder_key),
                Connection(external.url, context, EXTERNAL),
                local_users,
                options.feed_rate,
                stop,
                feed_counts,
            )
        )
        interval = options.clients / options.rate if options.rate else None
        cpu0 = {
            "local": _cpu_seconds(local_pid),
            "external": _cpu_seconds(external_pid),
            "generator": time.process_time(),
        }
        started = time.perf_counter()
        if options.duration is not None:
            plan.stop_at = started + options.duration
        await asyncio.gather(
            *(
                c.run(options.requests, interval, i * (interval or 0) / options.clients)
                for i, c in enumerate(clients)
            )
        )
        wall = time.perf_counter() - started
        cpu = {
            "local": _cpu_seconds(local_pid) - cpu0["local"],
            "external": _cpu_seconds(external_pid) - cpu0["external"],
            "generator": time.process_time() - cpu0["generator"],
        }
        stop.set()
        await feeder
        await asyncio.gather(*(c.conn.close() for c in clients))
        return clients, feed_counts, wall, cpu

    try:
        import uvloop

        clients, feed_counts, wall, cpu = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a server dependency
        clients, feed_counts, wall, cpu = asyncio.run(main())
    result = summarise(options, clients, feed_counts, wall, cpu)
    if options.plot is not None:
        plot(
            {op: [x for c in clients for x in c.tallies[op].latencies] for op in OPS}, options.plot
        )
        result["plot"] = str(options.plot)
    return result


def summarise(
    options: Options,
    clients: list[Client],
    feed_counts: dict[str, int],
    wall: float,
    cpu: dict[str, float],
) -> dict[str, Any]:
    per_op: dict[str, Any] = {}
    every: list[float] = []
    sent_total = received_total = failed = 0
    for op in OPS:
        tallies = [c.tallies[op] for c in clients]
        latencies = [x for t in tallies for x in t.latencies]
        every += latencies
        count = len(latencies)
        op_failed = sum(t.failed for t in tallies)
        sent = sum(t.sent for t in tallies)
        received = sum(t.received for t in tallies)
        sent_total += sent
        received_total += received
        failed += op_failed
        requests = count + op_failed
        relayed = sum(t.relayed for t in tallies)
        relayed_down = sum(t.relayed_received for t in tallies)
        per_op[op] = {
            "count": count,
            "failed": op_failed,
            "skipped": sum(t.skipped for t in tallies),
            "latency_ms": latency_summary(latencies),
            "bytes_client_to_server": sent,
            "bytes_server_to_client": received,
            "bytes_per_request_up": round(sent / requests) if requests else 0,
            "bytes_per_request_down": round(received / requests) if requests else 0,
        }
        if op == "retrieve":  # local copies vs copies relayed from S_e (compact provenance)
            local_n = requests - relayed
            per_op[op]["local_bytes_per_request_down"] = (
                round((received - relayed_down) / local_n) if local_n else 0
            )
            per_op[op]["relayed_count"] = relayed
            per_op[op]["relayed_bytes_per_request_down"] = (
                round(relayed_down / relayed) if relayed else 0
            )
    total = len(every) + failed
    for op in OPS:
        n = per_op[op]["count"] + per_op[op]["failed"]
        per_op[op]["share_percent"] = round(100 * n / total, 1) if total else 0.0
    return {
        "clients": options.clients,
        "requests": total,
        "failed": failed,
        "failures": [vars(f) for c in clients for f in c.failures][:10],
        "seconds": round(wall, 3),
        "message_size": options.size,
        "signed_answers": options.signed_answers,
        "mix": {op: round(w, 4) for op, w in options.mix.items()},
        "open_loop_rate": options.rate,
        "latency_ms": latency_summary(every),
        "requests_per_s": round(total / wall, 1) if wall else 0.0,
        "per_op": per_op,
        "bytes": {
            "client_to_server": sent_total,
            "server_to_client": received_total,
        },
        "external_feed": {"sent": feed_counts["ok"], "failed": feed_counts["failed"]},
        "cpu_seconds": {k: round(v, 2) for k, v in cpu.items()},
        "cpu_ms_per_request": {
            k: round(v * 1000 / total, 3) if total else 0.0 for k, v in cpu.items()
        },
    }


# -- output -------------------------------------------------------------------------------


def print_report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    mb = 1 / 1e6
    print(
        f"\nwsemail test bed: {r['clients']} clients, {r['requests']} requests in "
        f"{r['seconds']:.1f} s, {r['message_size']} B messages, TLS + password MAC + "
        "XMLDSIG on every server hop" + (" + signed answers" if r.get("signed_answers") else "")
    )
    print(
        f"  latency ms   mean {lat['mean']:.2f}  stdev {lat['stdev']:.2f}  variance "
        f"{lat['variance']:.2f}  min {lat['min']:.2f}  p50 {lat['p50']:.2f}  p90 "
        f"{lat['p90']:.2f}  p99 {lat['p99']:.2f}  max {lat['max']:.2f}"
    )
    print(
        f"  throughput   {r['requests_per_s']} requests/s, {r['messages_per_minute']} "
        f"messages/minute (sends + incoming relayed), {r['failed']} failed"
    )
    print("  paper (2005) latency mean 284 ms, min 47 ms, max 4,000 ms; ~1,787 messages/minute")
    print("\n  Table 1: clients <-> local.test, per operation (HTTP bytes)")
    print(
        f"  {'operation':<10}{'requests':>9}{'share %':>9}{'mean ms':>9}{'p50':>8}{'p99':>8}"
        f"{'max':>9}{'up MB':>9}{'down MB':>9}{'up B/req':>10}{'down B/req':>11}"
    )
    for op, s in r["per_op"].items():
        ls = s["latency_ms"]
        print(
            f"  {op:<10}{s['count'] + s['failed']:>9}{s['share_percent']:>9.1f}"
            f"{ls['mean']:>9.2f}{ls['p50']:>8.2f}{ls['p99']:>8.2f}{ls['max']:>9.2f}"
            f"{s['bytes_client_to_server'] * mb:>9.3f}{s['bytes_server_to_client'] * mb:>9.3f}"
            f"{s['bytes_per_request_up']:>10}{s['bytes_per_request_down']:>11}"
        )
    retrieve = r["per_op"]["retrieve"]
    print(
        f"  retrieve answer: {retrieve['local_bytes_per_request_down']} B for a local message, "
        f"{retrieve['relayed_bytes_per_request_down']} B for one relayed from {EXTERNAL} "
        f"({retrieve['relayed_count']} of them, with compact provenance)"
    )
    skipped = {op: s["skipped"] for op, s in r["per_op"].items() if s["skipped"]}
    if skipped:
        print(f"  not counted (empty inbox): {skipped}")
    print("\n  Table 2: between the servers (TLS stream bytes)")
    print(
        f"  {'server':<15}{'messages':>9}{'sent MB':>10}{'confirmations MB':>18}{'B/message':>11}"
    )
    for name, s in r["servers"].items():
        per = round(s["sent_bytes"] / s["messages_relayed"]) if s["messages_relayed"] else 0
        print(
            f"  {name:<15}{s['messages_relayed']:>9}{s['sent_bytes'] * mb:>10.3f}"
            f"{s['confirmation_bytes'] * mb:>18.3f}{per:>11}"
        )
    cpu = r["cpu_ms_per_request"]
    print(
        f"\n  CPU ms per request: local server {cpu['local']}, external server "
        f"{cpu['external']}, load generator {cpu['generator']}"
    )
    if r.get("queue_left"):
        print(f"  warning: {r['queue_left']} queue rows were still undelivered at the end")
    for failure in r["failures"]:
        print(f"  failed {failure['op']}: HTTP {failure['status']} {failure['body'][:160]!r}")
    if "plot" in r:
        print(f"  latency plot written to {r['plot']}")
    if "profile" in r:
        print(f"  profile of {LOCAL} written to {r['profile']}")


def plot(latencies: dict[str, list[float]], target: Path) -> None:
    """Latency distribution per operation (needs matplotlib): a histogram on a log axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 4.5))
    values = [x for xs in latencies.values() for x in xs if x > 0]
    if values:
        low, high = min(values), max(values)
        edges = [low * (high / low) ** (i / 60) for i in range(61)] if high > low else 10
        for op, xs in latencies.items():
            if xs:
                axes.hist(xs, bins=edges, histtype="step", linewidth=1.5, label=f"{op} ({len(xs)})")
        axes.set_xscale("log")
    axes.set_xlabel("latency (ms)")
    axes.set_ylabel("requests")
    axes.set_title("wsemail test bed: latency per operation")
    axes.legend()
    figure.tight_layout()
    try:
        figure.savefig(target)
    except OSError as exc:
        raise UsageError(f"cannot write {target}: {exc.strerror}") from exc
    finally:
        plt.close(figure)


__all__ = ["DiscardDelivery", "Options", "parse_mix", "run_testbed"]
