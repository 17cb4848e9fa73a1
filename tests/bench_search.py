"""Benchmark, not a test (pytest does not collect it): server-side search over a
100,000-message mailbox (issue 17), and the conversation listing (`wsemail list --threads`,
ListThreads) of the same mailbox. The mailbox is written straight through the store in
batches (the FTS5 triggers index as it goes, as delivery does), with a second user's tenth
beside it; then the index is built again from scratch ('rebuild' + 'optimize', what
migration 6 does for an existing store) and timed; the index size is read from dbstat;
the server-side SQL of each query is timed on its own; then a real `wsemail serve` process
on loopback answers the same queries through the client library (password MAC, SOAP,
HTTP), and per-query and overall p50/p99 are printed.

Half of the messages answer one of the 200 before them (In-Reply-To and References set as
a reply sets them, drawn from a random generator of their own, so the searched text is the
same as before), which makes conversations of 1 to a few hundred messages. The first page
of ListThreads is timed server-side (the operation's SQL and XML, in-process) and through
`wsemail serve`. 12,500 messages make an inbox of about 10,000:

    .venv/bin/python tests/bench_search.py [MESSAGES] [ROUNDS]
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PASSWORD = "correct horse battery"
USER = "bob@localhost"
OTHER = "carol@localhost"  # a second mailbox in the same store (a tenth of the size)
BATCH = 2000


def vocabulary(rng: random.Random, size: int = 6000) -> list[str]:
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "di", "on"]
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(syllables) for _ in range(rng.randint(2, 4))))
    return sorted(words)


def fill(store: object, owner: str, count: int, rng: random.Random, words: list[str]) -> float:
    from wsemail.protocol.message import MAX_REFERENCES, SEALED_MARKER, AttachmentRef, Message

    threading = random.Random(f"threads {owner}")  # apart: the text stays as it was
    recent: list[tuple[str, list[str]]] = []  # (message id, its References), the last 200
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf-like
    senders = [f"user{n}@{d}" for n in range(150) for d in ("a.test", "b.test")]
    ref = AttachmentRef("a.test", "https://a.test/wsemail", "g", "f.pdf", 1, "x/y", "0" * 64)
    folders = ["inbox"] * 16 + ["Archive"] * 2 + ["sent", "Projects"]
    started = time.perf_counter()
    made = 0
    while made < count:
        batch = []
        for _ in range(min(BATCH, count - made)):
            made += 1
            day = made * 1095 // count  # three years, oldest first
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1_700_000_000 + day * 86400))
            body_words = rng.choices(words, weights, k=rng.randint(40, 160))
            body = " ".join(body_words)
            if rng.random() < 0.05:
                body = f"{SEALED_MARKER}>{body}</e2e:Sealed>"
            message_id = f"<m{made}.{owner}@a.test>"
            in_reply_to, references = None, []
            if recent and threading.random() < 0.5:
                in_reply_to, before = threading.choice(recent)
                references = [*before, in_reply_to]
                if len(references) > MAX_REFERENCES:
                    references = [references[0], *references[-(MAX_REFERENCES - 1) :]]
            recent = [*recent[-199:], (message_id, references)]
            batch.append(
                (
                    rng.choice(folders),
                    Message(
                        id="",
                        message_id=message_id,
                        folder="inbox",
                        sender=rng.choice(senders),
                        to=[owner],
                        cc=[rng.choice(senders)] if rng.random() < 0.2 else [],
                        subject=" ".join(rng.choices(words, weights, k=rng.randint(2, 7))),
                        date=date,
                        size=len(body),
                        seen=rng.random() < 0.7,
                        body=body,
                        flagged=rng.random() < 0.05,
                        attachments=[ref] if rng.random() < 0.1 else [],
                        in_reply_to=in_reply_to,
                        references=references,
                    ),
                )
            )

        def work(tx: object, batch: list[tuple[str, Message]] = batch) -> None:
            for folder, message in batch:
                tx.add_message(owner, folder, message)  # type: ignore[attr-defined]

        store.transact_sync(work)  # type: ignore[attr-defined]
    return time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


def wsemail() -> str:
    return str(Path(sys.executable).with_name("wsemail"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def build_mailbox(db: Path, count: int) -> list[str]:
    """Fill, rebuild the index, print the figures; returns the queries to time."""
    from wsemail.server.mailbox import records
    from wsemail.server.mailbox.query import parse
    from wsemail.server.store import SqliteStore

    rng = random.Random(17)
    words = vocabulary(rng)
    store = SqliteStore(db)
    try:
        store.transact_sync(
            lambda tx: tx.conn.execute(
                "INSERT INTO folders(owner, name, created) VALUES (?, 'Projects', 0)", (USER,)
            )
        )
        seconds = fill(store, USER, count, rng, words)
        print(f"filled {count} messages for {USER} in {seconds:.1f} s (indexed as written)")
        seconds = fill(store, OTHER, count // 10, rng, words)
        print(f"filled {count // 10} messages for {OTHER} in {seconds:.1f} s")

        def rebuild(tx: object) -> None:
            conn = tx.conn  # type: ignore[attr-defined]
            conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('rebuild')")
            conn.execute("INSERT INTO messages_fts(messages_fts) VALUES ('optimize')")

        started = time.perf_counter()
        store.transact_sync(rebuild)
        build = time.perf_counter() - started

        def sizes(tx: object) -> tuple[int, int]:
            conn = tx.conn  # type: ignore[attr-defined]
            fts = conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'messages_fts%'"
            ).fetchone()[0]
            every = conn.execute("SELECT sum(pgsize) FROM dbstat").fetchone()[0]
            return int(fts), int(every)

        fts_bytes, db_bytes = store.transact_sync(sizes)
        total = count + count // 10
        print(
            f"index build (rebuild + optimize) of {total} messages: {build:.1f} s; "
            f"index size {fts_bytes / 2**20:.1f} MiB of a {db_bytes / 2**20:.1f} MiB database"
        )
        common, middling, rare = words[0], words[40], words[3000]
        sender = "user7@a.test"
        queries = [
            common,
            middling,
            rare,
            f"{middling} {rare}",
            f'"{common} {words[1]}"',
            f"from:{sender}",
            f"from:{sender} {middling}",
            "to:b.test",
            f"subject:{middling}",
            "has:attachment",
            "is:unread",
            "is:flagged",
            f"{common} is:flagged",
            "in:Archive",
            f"in:Projects {middling}",
            "after:2024-06-01 before:2024-07-01",
            f"{middling} after:2025-01-01",
            f"{rare} has:attachment is:unread",
            "nosuchwordanywhere",
            f"{common} {words[1]} {words[2]} {words[3]}",
        ]
        print("\nserver-side SQL only (median of 5, first page of 50):")
        for query in queries:
            parsed = parse(query)

            def run(tx: object, parsed: object = parsed) -> tuple[float, int]:
                t0 = time.perf_counter()
                where = None
                if parsed.folder:  # type: ignore[attr-defined]
                    where = records.resolve(tx, USER, parsed.folder)  # type: ignore
                rows = records.search(tx, USER, parsed, where, 51, None)  # type: ignore
                return time.perf_counter() - t0, len(rows[:50])

            timed = [store.transact_sync(run) for _ in range(5)]
            median = statistics.median(t for t, _ in timed)
            print(f"  {query[:44]:44} {timed[0][1]:3} hits {median * 1000:7.1f} ms")
        conversations_in_process(store)
    finally:
        store.close()
    return queries


def conversations_in_process(store: object) -> None:
    """ListThreads of the inbox, first page (and one deep page), as the server runs it:
    the operation itself on a transaction (SQL, headers, XML), median of 5."""
    from lxml import etree

    from wsemail.protocol.soap import element, q
    from wsemail.server.mailbox import threads
    from wsemail.server.pipeline import Environment

    def sizes(tx: object) -> tuple[int, int, int]:
        conn = tx.conn  # type: ignore[attr-defined]
        inbox, conversations = conn.execute(
            "SELECT count(*), count(DISTINCT thread) FROM messages WHERE owner=? AND "
            "folder='inbox'",
            (USER,),
        ).fetchone()
        largest = conn.execute(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM messages WHERE owner=? GROUP BY thread)",
            (USER,),
        ).fetchone()[0]
        return int(inbox), int(conversations), int(largest)

    inbox, conversations, largest = store.transact_sync(sizes)  # type: ignore[attr-defined]
    print(
        f"\nconversations: {USER}'s inbox holds {inbox} messages in {conversations} "
        f"conversations (the largest has {largest} messages in all folders)"
    )
    print("ListThreads, server-side (the operation in-process: SQL, headers, XML), median of 5:")
    cursor: list[str] = []

    def run(tx: object, limit: int, deep: bool) -> tuple[float, int, int]:
        op = etree.Element(q("ListThreads"))
        element(op, "Folder", "inbox")
        element(op, "Limit", str(limit))
        if deep and cursor:
            element(op, "Cursor", cursor[0])
        env = Environment(USER, "localhost", tx, op, None, time.time)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        answer = etree.tostring(threads.list_threads(env, op))
        took = time.perf_counter() - t0
        found = etree.fromstring(answer)
        next_cursor = found.findtext(q("NextCursor"))
        if next_cursor and not cursor:
            cursor.append(next_cursor)
        return took, len(found.findall(q("Thread"))), len(answer)

    for limit, deep in ((20, False), (50, False), (100, False), (20, True)):
        timed = [
            store.transact_sync(lambda tx, n=limit, d=deep: run(tx, n, d))  # type: ignore
            for _ in range(5)
        ]
        median = statistics.median(t for t, _, _ in timed)
        where = "second page" if deep else "first page"
        print(
            f"  {where} of {limit:3} conversations: {median * 1000:6.1f} ms "
            f"({timed[0][1]} conversations, {timed[0][2] / 1024:.0f} KiB of XML)"
        )


def main() -> None:
    from wsemail.client.mail import Client

    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    with tempfile.TemporaryDirectory(prefix="wsemail-bench-search-") as folder:
        data = Path(folder) / "server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
        env["HOME"] = folder
        for user in (USER, OTHER):
            subprocess.run(
                [wsemail(), "user", "add", user, "--password-stdin", "--data-dir", str(data)],
                input=PASSWORD + "\n",
                text=True,
                check=True,
                capture_output=True,
                env=env,
            )
        queries = build_mailbox(data / "wsemail.db", count)
        port = free_port()
        server = subprocess.Popen(
            [wsemail(), "serve", "--data-dir", str(data), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/wsemail"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with Client(url, USER, PASSWORD) as probe:
                        probe.list_headers(limit=1)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            with Client(url, USER, PASSWORD) as client:
                client.search("warm up")
                latencies: dict[str, list[float]] = {q: [] for q in queries}
                listing: list[float] = []
                threaded: list[float] = []
                for _ in range(rounds):
                    for query in queries:
                        started = time.perf_counter()
                        client.search(query, limit=50)
                        latencies[query].append(time.perf_counter() - started)
                    started = time.perf_counter()
                    client.list_headers(limit=50)
                    listing.append(time.perf_counter() - started)
                    started = time.perf_counter()
                    client.list_threads(limit=20)
                    threaded.append(time.perf_counter() - started)
            print(f"\nthrough wsemail serve (client library, loopback), {rounds} rounds:")
            print(f"  {'query':44} {'p50 ms':>8} {'max ms':>8}")
            for query in queries:
                values = latencies[query]
                print(
                    f"  {query[:44]:44} {statistics.median(values) * 1000:8.1f} "
                    f"{max(values) * 1000:8.1f}"
                )
            every = [v for values in latencies.values() for v in values]
            print(
                f"\nall {len(every)} searches (first page of 50): "
                f"p50 {percentile(every, 0.5) * 1000:.1f} ms, "
                f"p99 {percentile(every, 0.99) * 1000:.1f} ms, max {max(every) * 1000:.1f} ms; "
                f"for scale, ListHeaders of 50: p50 {statistics.median(listing) * 1000:.1f} ms"
            )
            print(
                f"ListThreads, first page of 20 conversations (client library, loopback): "
                f"p50 {statistics.median(threaded) * 1000:.1f} ms, "
                f"max {max(threaded) * 1000:.1f} ms"
            )
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
