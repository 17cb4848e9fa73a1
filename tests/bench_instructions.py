"""Benchmark, not a test (pytest does not collect it): the server's user-space instructions
per accepted send, counted by valgrind's callgrind (Debian's `valgrind` package). Unlike
CPU seconds, which drift by ±20 % between runs on a shared machine, the count is the same
to ±0.2 % from run to run, so a change of a few per cent shows in one run of each tree.
It leaves out the kernel (the WAL's writes, the fsync, the sockets) and cache misses.

The accept path of `wsemail bench` (16 clients, password MAC, plain answers, one recipient,
5,000 messages in the inbox before): a data dir is made and seeded by `wsemail bench` once,
then `wsemail serve` runs under callgrind with instrumentation off; 128 sends warm it up,
then the count runs over the next SENDS sends (16 clients at once) and stops.

    .venv/bin/python tests/bench_instructions.py [SENDS] [TREE]

TREE: another checkout's directory holding `wsemail/` (e.g. `git archive` of an older
commit), to compare with this one in the same way: the server and the seeding run that
tree's code, the clients this checkout's (the protocol is the same). Each tree seeds its own
data dir with
its own code (kept in the temp dir as `wsemail-instructions-<hash of the path>`; a newer
tree upgrades an older one's at start, as a real upgrade would: delete it to start
afresh). Valgrind runs the server ~50 times slower, so its batches are larger than in
`wsemail bench`: per-batch costs count less.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import hashlib
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

from wsemail.bench.accept import BENCH_PASSWORD, _envelope, post
from wsemail.protocol import soap
from wsemail.protocol.auth import Credentials, derive_key

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = 16


def _seeded(template: Path, tree: Path) -> None:
    """A data dir with the bench's users and 5,000 messages, made by `tree`'s own code (its
    schema: an older tree must not run on a newer schema), once, then copied."""
    if (template / "wsemail.db").exists():
        return
    subprocess.run(
        [
            sys.executable,
            "-m",
            "wsemail.cli",
            "bench",
            "--seconds",
            "0.2",
            "--data-dir",
            str(template),
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        cwd=tree,
        env=dict(os.environ, PYTHONPATH=str(tree)),
    )


async def _client(url: str, creds: Credentials, count: int) -> None:
    """`count` sends on one kept-alive connection, each answered whole (`accept.post`)."""
    parts = urlsplit(url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    head = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: {soap.CONTENT_TYPE}\r\n"
    ).encode()
    for n in range(count):
        status = await post(reader, writer, head, _envelope(creds, "sink@localhost", n, None))
        if b" 200 " not in status:
            raise SystemExit(f"bench: a send was refused: {status!r}")
    writer.close()


def main() -> None:
    sends = int(sys.argv[1]) if len(sys.argv) > 1 else 320
    tree = Path(sys.argv[2]).resolve() if len(sys.argv) > 2 else ROOT
    if shutil.which("valgrind") is None:
        raise SystemExit("bench: needs valgrind (apt-get install valgrind)")
    work = Path(tempfile.mkdtemp(prefix="wsemail-instructions-"))
    try:
        mark = hashlib.sha256(str(tree).encode()).hexdigest()[:12]
        template = Path(tempfile.gettempdir()) / f"wsemail-instructions-{mark}"
        _seeded(template, tree)
        data = work / "data"
        shutil.copytree(template, data)
        # read as it is: this code's store would migrate an older tree's database
        with contextlib.closing(sqlite3.connect(data / "wsemail.db")) as db:
            salts = dict(db.execute("SELECT address, salt FROM users").fetchall())
        senders = [f"sender{i}@localhost" for i in range(CLIENTS)]
        creds = [Credentials(a, derive_key(BENCH_PASSWORD, salts[a])) for a in senders]
        out = work / "callgrind.out"
        server = subprocess.Popen(
            # serve executes itself again: the child is the one that serves
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--trace-children=yes",
             f"--callgrind-out-file={out}.%p",
             sys.executable, "-m", "wsemail.cli", "serve", "--data-dir", str(data), "--port", "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=work,
            env=dict(os.environ, PYTHONPATH=str(tree)),
        )  # fmt: skip
        assert server.stdout is not None
        line = server.stdout.readline()
        if " at " not in line:
            raise SystemExit(f"bench: server did not start: {line!r}")
        url = line.split(" at ")[1].split()[0]

        def control(*args: str) -> None:
            subprocess.run(["callgrind_control", *args, str(server.pid)], capture_output=True)

        async def drive() -> float:
            await asyncio.gather(*(_client(url, c, 8) for c in creds))  # warm-up
            control("--instr=on")
            began = time.perf_counter()
            await asyncio.gather(*(_client(url, c, sends // CLIENTS) for c in creds))
            control("--instr=off")
            control("--dump")
            return time.perf_counter() - began

        seconds = asyncio.run(drive())
        server.terminate()
        server.wait(timeout=60)
        dumps = glob.glob(f"{out}.*.1")
        if not dumps:
            raise SystemExit("bench: callgrind wrote no profile")
        text = subprocess.run(
            ["callgrind_annotate", dumps[0]], capture_output=True, text=True, check=True
        ).stdout
        total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", text) or re.search(
            r"([\d,]+)\s+PROGRAM TOTALS", text
        )
        if total is None:
            raise SystemExit("bench: no total in the profile")
        counted = sends // CLIENTS * CLIENTS
        per_send = int(total.group(1).replace(",", "")) / counted
        print(
            f"wsemail bench instructions: {tree}: {per_send / 1e6:.3f} M instructions per"
            f" accepted send (user space, server process; {counted} sends under callgrind"
            f" in {seconds:.0f} s)"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
