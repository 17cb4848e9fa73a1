"""Benchmark, not a test (pytest does not collect it): the IMAP plug-in (issue 19) in a real
`wsemail serve --imap-port` process on loopback, plain IMAP, one client on raw sockets.

- a 10,000-message INBOX written straight through the store (1 KB bodies);
- SELECT the first time (every message gets its UID) and again;
- a full sync, `UID FETCH 1:* (FLAGS ENVELOPE)`, first and warm;
- `UID FETCH n (BODY.PEEK[])` of single 1 KB messages (p50/p99 round trip: an upper
  bound of the server's time), and `BODY[]` (sets \\Seen: a committed write);
- memory per idle connection: RSS of the server before and after N logged-in sessions
  sitting in IDLE on INBOX.

    .venv/bin/python tests/bench_imap.py [MESSAGES] [CONNECTIONS]
"""

from __future__ import annotations

import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import tomli_w

from wsemail.server.config import DEFAULT_PLUGINS

PASSWORD = "correct horse battery"
USER = "bob@localhost"


def fill(data_dir: Path, count: int) -> None:
    from wsemail.protocol.message import Message
    from wsemail.server.accounts import set_user
    from wsemail.server.store import SqliteStore

    store = SqliteStore(data_dir / "wsemail.db")
    set_user(store, "localhost", USER, PASSWORD)
    set_user(store, "localhost", "alice@localhost", PASSWORD)
    rng = random.Random(19)
    words = ["budget", "meeting", "report", "draft", "numbers", "travel", "lunch", "plan"]
    made = 0
    while made < count:
        batch = []
        for _ in range(min(2000, count - made)):
            made += 1
            body = " ".join(rng.choice(words) for _ in range(160))[:1024]
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + made * 60))
            batch.append(
                Message(
                    id="",
                    message_id=f"<m{made}@localhost>",
                    folder="inbox",
                    sender="alice@localhost",
                    to=[USER],
                    cc=[],
                    subject=f"message {made} about {rng.choice(words)}",
                    date=date,
                    size=len(body),
                    seen=rng.random() < 0.7,
                    body=body,
                )
            )

        def write(tx: object, batch: list[Message] = batch) -> None:
            for message in batch:
                tx.add_message(USER, "inbox", message)  # type: ignore[attr-defined]

        store.transact_sync(write)
    store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Conn:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=120)
        self.stream = self.sock.makefile("rb", buffering=1 << 16)
        self.stream.readline()
        self.n = 0

    def command(self, text: str) -> tuple[float, int]:
        """Seconds to the tagged OK, and bytes answered."""
        self.n += 1
        tag = b"t%d" % self.n
        started = time.perf_counter()
        self.sock.sendall(tag + b" " + text.encode() + b"\r\n")
        total = 0
        while True:
            line = self.stream.readline()
            total += len(line)
            if line.endswith(b"}\r\n"):
                size = int(line[line.rindex(b"{") + 1 : -3])
                total += len(self.stream.read(size))
                continue
            if line.startswith(tag + b" "):
                assert line.startswith(tag + b" OK"), line
                return time.perf_counter() - started, total
            if not line:
                raise ConnectionError("closed")

    def login(self) -> None:
        self.command(f'LOGIN {USER} "{PASSWORD}"')


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def render_cold() -> None:
    """The server's work for a message not rendered before (in this process, no I/O)."""
    import json

    from wsemail.server.imap import render
    from wsemail.server.imap.records import Row

    body = ("budget meeting report " * 60)[:1024]
    rows = [
        Row(n, f"id{n}", f"<m{n}@localhost>", "alice@localhost", json.dumps([USER]), "[]",
            f"message {n}", "2026-01-01T10:00:00Z", 1024, body, None, None, False, False, None)
        for n in range(2000)
    ]  # fmt: skip
    started = time.perf_counter()
    for row in rows:
        data = render.render(row, USER, "localhost", [])
        render.section(data, "", [])
    each = (time.perf_counter() - started) / len(rows)
    print(f"rendering a 1 KB message not rendered before + BODY[]: {each * 1e6:.0f} µs")


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    connections = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    binary = str(Path(sys.executable).parent / "wsemail")
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "server"
        data_dir.mkdir()
        started = time.perf_counter()
        fill(data_dir, count)
        print(f"filled {count} messages in {time.perf_counter() - started:.1f} s")
        port, imap_port = free_port(), free_port()
        config = Path(tmp) / "server.toml"  # the defaults, and imap taking many connections
        plugins = [{"ref": p.ref, "priority": p.priority, "options": p.options}
                   for p in DEFAULT_PLUGINS]  # fmt: skip
        options = {  # both sets of connections the bench holds, and its own session
            "port": imap_port,
            "max_connections": 2 * connections + 16,
            "max_connections_per_peer": 2 * connections + 16,
        }
        plugins.append({"ref": "imap", "priority": 30, "options": options})
        config.write_text(tomli_w.dumps({"plugins": plugins}))
        process = subprocess.Popen(
            [binary, "serve", "--data-dir", str(data_dir), "--domain", "localhost",
             "--host", "127.0.0.1", "--port", str(port), "--config", str(config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            assert process.stdout is not None
            process.stdout.readline()  # "serving …"
            conn = Conn(imap_port)
            conn.login()
            first_select, _ = conn.command("SELECT INBOX")
            again_select, _ = conn.command("SELECT INBOX")
            print(f"SELECT INBOX ({count}): first {first_select * 1000:.0f} ms "
                  f"(UIDs assigned), again {again_select * 1000:.0f} ms")  # fmt: skip
            for label in ("first", "warm", "warm"):
                took, size = conn.command("UID FETCH 1:* (FLAGS ENVELOPE)")
                print(f"UID FETCH 1:* (FLAGS ENVELOPE), {label}: {took * 1000:.0f} ms, "
                      f"{size / 1e6:.1f} MB")  # fmt: skip
            took, size = conn.command("UID FETCH 1:* (UID FLAGS RFC822.SIZE)")
            print(f"UID FETCH 1:* (UID FLAGS RFC822.SIZE), first (renders all): "
                  f"{took * 1000:.0f} ms")  # fmt: skip
            took, size = conn.command("UID FETCH 1:* (UID FLAGS RFC822.SIZE)")
            print(f"UID FETCH 1:* (UID FLAGS RFC822.SIZE), sizes kept: {took * 1000:.0f} ms")
            rng = random.Random(3)
            for item, label in (
                ("BODY.PEEK[]", ""),
                ("BODY[]", ", sets \\Seen when unseen (a committed write)"),
                ("BODY[]", ", already seen"),
            ):
                times = []
                if label == ", already seen":
                    conn.command("STORE 1:* +FLAGS.SILENT (\\Seen)")
                for _ in range(500):
                    took, _ = conn.command(f"UID FETCH {rng.randint(1, count)} ({item})")
                    times.append(took * 1000)
                times.sort()
                print(f"UID FETCH n ({item}) of a 1 KB message{label}, round trip: "
                      f"p50 {statistics.median(times):.2f} ms, "
                      f"p99 {times[int(len(times) * 0.99)]:.2f} ms")  # fmt: skip
            render_cold()
            before = rss_kb(process.pid)
            bare = []
            for _ in range(connections):
                c = Conn(imap_port)
                c.login()
                bare.append(c)
            time.sleep(1)
            after = rss_kb(process.pid)
            print(f"{connections} connections logged in, nothing selected: "
                  f"+{(after - before) / 1024:.1f} MB RSS, "
                  f"{(after - before) / connections:.0f} KB each")  # fmt: skip
            before = rss_kb(process.pid)
            idle = []
            for _ in range(connections):
                c = Conn(imap_port)
                c.login()
                c.command("SELECT INBOX")
                c.sock.sendall(b"i IDLE\r\n")
                c.stream.readline()
                idle.append(c)
            time.sleep(1)
            after = rss_kb(process.pid)
            print(f"{connections} idle connections (logged in, INBOX of {count} selected, "
                  f"in IDLE): +{(after - before) / 1024:.1f} MB RSS, "
                  f"{(after - before) / connections:.0f} KB each")  # fmt: skip
            for c in [*bare, *idle]:  # a bench of memory, not of shutting down under load
                c.sock.close()
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
