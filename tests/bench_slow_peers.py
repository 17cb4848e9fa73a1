"""Benchmark, not a test (pytest does not collect it): legitimate requests while N
connections trickle request bodies (issue 16 "slow bodies"). A real server on loopback
(in this process, its own thread); N attacker connections each send headers announcing a
body and then one byte a second, reconnecting whenever the server closes them (as the
attacker of the issue did); meanwhile one client sends ListHeaders in a loop. Reports the
client's latency (p50 / p95 / max) and how many of its requests failed.

    .venv/bin/python tests/bench_slow_peers.py [N] [--seconds S] [--concurrency C]

The per-peer connection cap is lifted for the run (all connections come from 127.0.0.1:
the cap would otherwise refuse most attackers, which is its job).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

from wsemail.client.mail import Client
from wsemail.server.accounts import set_user
from wsemail.server.config import ServerConfig
from wsemail.server.controller import ServerController

PASSWORD = "correct horse battery"


async def trickle(host: str, port: int, stop: threading.Event, counts: dict[str, int]) -> None:
    head = (
        b"POST /wsemail HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/soap+xml\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    while not stop.is_set():
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            counts["refused"] += 1
            await asyncio.sleep(0.5)
            continue
        counts["connections"] += 1
        try:
            writer.write(head)
            while not stop.is_set() and not reader.at_eof():
                writer.write(b"<")
                await writer.drain()
                try:
                    if await asyncio.wait_for(reader.read(4096), 1.0):
                        counts["answered"] += 1
                        break
                except TimeoutError:
                    continue
        except OSError:
            pass
        finally:
            writer.close()


def attack(url: str, n: int) -> None:
    """The attacker process: until stdin closes, then prints its counts."""
    parts = urlsplit(url)
    assert parts.hostname and parts.port
    stop = threading.Event()
    counts = {"connections": 0, "answered": 0, "refused": 0}

    async def main() -> None:
        host, port = parts.hostname, parts.port
        assert host is not None and port is not None
        await asyncio.gather(*(trickle(host, port, stop, counts) for _ in range(n)))

    runner = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    runner.start()
    sys.stdin.read()
    stop.set()
    runner.join(15)
    print(counts["connections"], counts["answered"], flush=True)


def main() -> int:
    if sys.argv[1:2] == ["--attack"]:
        attack(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser()
    parser.add_argument("n", nargs="?", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--concurrency", type=int, default=64, help="the server's slots")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        config = ServerConfig(data_dir=Path(tmp), port=0, max_concurrency=options.concurrency)
        if hasattr(config, "max_connections_per_peer"):
            config.max_connections_per_peer = 100_000
        controller = ServerController(config)
        set_user(controller.server.store, config.domain, "alice@localhost", PASSWORD)
        controller.start()
        latencies: list[float] = []
        failed = 0
        try:
            with Client(controller.url, "alice@localhost", PASSWORD) as client:
                client.list_headers()
                attacker = subprocess.Popen(  # noqa: S603 -- this file, loopback only
                    [sys.executable, __file__, "--attack", controller.url, str(options.n)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
                time.sleep(3)  # every attacker connected
                end = time.monotonic() + options.seconds
                while time.monotonic() < end:
                    start = time.perf_counter()
                    try:
                        client.list_headers()
                        latencies.append(time.perf_counter() - start)
                    except Exception as exc:  # noqa: BLE001 -- counted, whatever it is
                        failed += 1
                        print("failed:", type(exc).__name__, exc, file=sys.stderr)
                    time.sleep(0.05)
            out, _ = attacker.communicate("", timeout=30)
        finally:
            controller.stop()
        connections, answered = out.split()
    latencies.sort()
    ms = [x * 1000 for x in latencies] or [float("nan")]
    print(
        f"{options.n} trickling connections, {options.concurrency} slots, "
        f"{options.seconds:g} s: {len(latencies)} ListHeaders ok, {failed} failed; "
        f"latency p50 {statistics.median(ms):.1f} ms, "
        f"p95 {ms[int(0.95 * (len(ms) - 1))]:.1f} ms, max {ms[-1]:.1f} ms; "
        f"attacker connections {connections}, answered (408 / 503) {answered}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
