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
import random
import signal
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography import x509

from wsemail.bench.load import Client, Connection, Plan, feeder
from wsemail.bench.nodes import (
    CountingProxy,
    Node,
    add_users,
    free_port,
    prime,
    write_config,
)
from wsemail.bench.options import EXTERNAL, FEEDER, LOCAL, OPS, Options, parse_mix, py_spy
from wsemail.bench.report import cpu_seconds, plot, print_report, process_tree_cpu, summarise
from wsemail.pki import create_root, issue_server, write_crl
from wsemail.protocol.auth import Credentials
from wsemail.protocol.dsig import cert_digest
from wsemail.protocol.errors import UsageError
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.server.pipeline import PluginSpec


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
    pg = None
    try:
        store_url = options.store
        if store_url == "pg":
            from wsemail.bench.pgserver import PgServer

            pg = PgServer().start()
            store_url = pg.database()
        return _run(options, root, quiet, store_url, pg.pid if pg is not None else None)
    finally:
        if pg is not None:
            pg.close()
        if temp is not None:
            temp.cleanup()


def _run(
    options: Options, root: Path, quiet: bool, store_url: str, db_pid: int | None
) -> dict[str, Any]:
    say: Callable[[str], None] = (lambda _: None) if quiet else (lambda m: print(m, flush=True))
    ca = root / "ca"
    create_root(ca, name="wsemail test bed root")
    write_crl(ca)
    locals_ = [
        Node(
            LOCAL,
            root / (LOCAL if n == 0 else f"{LOCAL}-{n + 1}"),
            free_port(),
            store_url=store_url,
        )
        for n in range(options.nodes)
    ]
    local = locals_[0]
    external = Node(EXTERNAL, root / EXTERNAL, free_port())
    to_external = CountingProxy(external.port).start()
    to_local = CountingProxy(local.port).start()
    nodes = [*locals_, external]
    sections = {"store": {"url": store_url}} if store_url else None
    try:
        for node, proxy, other, plugins in (
            *((n, to_external, EXTERNAL, list(DEFAULT_PLUGINS)) for n in locals_),
            (
                external,
                to_local,
                LOCAL,
                [*DEFAULT_PLUGINS, PluginSpec("wsemail.bench.nodes:DiscardDelivery", 50)],
            ),
        ):
            node.data_dir.mkdir(mode=0o700)
            identity = root / f"{node.domain}-identity"
            if not identity.exists():  # one identity for every node of a domain
                issue_server(ca, node.domain, identity)
            write_config(
                node.data_dir,
                domain=node.domain,
                port=node.port,
                ca=ca,
                identity=identity,
                routes={other: f"https://127.0.0.1:{proxy.port}/wsemail"},
                plugins=plugins,
                sections=sections if node.domain == LOCAL else None,
            )
        local_users = [f"client{i}@{LOCAL}" for i in range(options.clients)]
        external_users = [f"reader{i}@{EXTERNAL}" for i in range(options.clients)]
        say(f"testbed: creating {2 * options.clients + 1} accounts (scrypt each)")
        local.data_dir.joinpath("wsemail.db")
        keys = add_users(local.data_dir / "wsemail.db", LOCAL, local_users, store_url=store_url)
        feeder_key = add_users(
            external.data_dir / "wsemail.db", EXTERNAL, [*external_users, FEEDER]
        )
        prime(local.data_dir / "wsemail.db", local_users, options.size, store_url=store_url)
        local.start(options.profile)
        for node in locals_[1:]:
            node.start()
        external.start()
        spy = None
        if options.profile is not None and options.profile.suffix not in (".prof", ".pstats"):
            spy = _start_py_spy(options.profile, local)
        say(
            f"testbed: {LOCAL} at {', '.join(n.url for n in locals_)}"
            + (f" (PostgreSQL, {options.nodes} nodes)" if store_url else "")
            + f", {EXTERNAL} at {external.url}; "
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
            options,
            locals_,
            external,
            context,
            keys,
            feeder_key[FEEDER],
            local_users,
            external_users,
            db_pid,
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
    spy = py_spy()
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
    locals_: list[Node],
    external: Node,
    context: ssl.SSLContext,
    keys: dict[str, bytes],
    feeder_key: bytes,
    local_users: list[str],
    external_users: list[str],
    db_pid: int | None,
) -> dict[str, Any]:
    rng = random.Random(options.seed)  # noqa: S311 -- load mix, not security
    local = locals_[0]
    assert all(n.process is not None for n in locals_) and external.process is not None
    local_pids = [n.process.pid for n in locals_ if n.process is not None]
    external_pid = external.process.pid

    def local_cpu() -> float:
        return sum(process_tree_cpu(pid) for pid in local_pids)

    def db_cpu() -> float:
        return process_tree_cpu(db_pid) if db_pid is not None else 0.0

    async def main() -> tuple[list[Client], dict[str, int], float, dict[str, float]]:
        stop_at = None
        plan = Plan(options, local_users, external_users, stop_at, rng)
        if options.signed_answers:
            pem = (local.data_dir.parent / f"{LOCAL}-identity" / "server.pem").read_bytes()
            digest = cert_digest(x509.load_pem_x509_certificate(pem))
            plan.known = base64.b64encode(digest).decode("ascii")
        clients = [  # client i talks to node i mod N
            Client(
                Credentials(u, keys[u]),
                Connection(locals_[i % len(locals_)].url, context, LOCAL),
                plan,
            )
            for i, u in enumerate(local_users)
        ]
        await asyncio.gather(*(c.conn.open() for c in clients))
        stop = asyncio.Event()
        feed_counts = {"ok": 0, "failed": 0}
        feeding = asyncio.create_task(
            feeder(
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
            "database": db_cpu(),
            "local": local_cpu(),
            "external": cpu_seconds(external_pid),
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
            "database": db_cpu() - cpu0["database"],
            "local": local_cpu() - cpu0["local"],
            "external": cpu_seconds(external_pid) - cpu0["external"],
            "generator": time.process_time() - cpu0["generator"],
        }
        stop.set()
        await feeding
        await asyncio.gather(*(c.conn.close() for c in clients))
        return clients, feed_counts, wall, cpu

    try:
        import uvloop

        clients, feed_counts, wall, cpu = uvloop.run(main())
    except ImportError:  # pragma: no cover - uvloop is a server dependency
        clients, feed_counts, wall, cpu = asyncio.run(main())
    result = summarise(options, clients, feed_counts, wall, cpu)
    if options.store:
        result["nodes"] = len(locals_)
    if options.plot is not None:
        plot(
            {op: [x for c in clients for x in c.tallies[op].latencies] for op in OPS}, options.plot
        )
        result["plot"] = str(options.plot)
    return result


__all__ = ["OPS", "Options", "parse_mix", "run_testbed"]
