"""Benchmark, not a test (pytest does not collect it): the terminal client opening a
10,000-message inbox. A real `wsemail serve` process on loopback gets its mailbox filled
through the client library (several threads, each its own session); then, several times,
a fresh Python process starts the app headless (Textual's `run_test`, 80×24, the same
defaults as `wsemail tui`: 50 headers a page, polling, the IM push stream) and reports
when the inbox shows its first page, how many headers it holds, and its memory.

    .venv/bin/python tests/bench_tui_inbox.py [MESSAGES] [RUNS]
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PASSWORD = "correct horse battery"
USER = "alice@localhost"
SENDER = "bob@localhost"
THREADS = 8


def wsemail() -> str:
    return str(Path(sys.executable).with_name("wsemail"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fill(url: str, count: int) -> float:
    """`count` messages from bob to alice; returns the seconds it took."""
    from wsemail.client.mail import Client

    done = 0
    lock = threading.Lock()

    def worker(share: int, index: int) -> None:
        nonlocal done
        with Client(url, SENDER, PASSWORD) as client:
            for n in range(share):
                client.send([USER], f"Report {index}-{n}", f"Body of message {index}-{n}.\n" * 5)
                with lock:
                    done += 1

    shares = [count // THREADS + (1 if i < count % THREADS else 0) for i in range(THREADS)]
    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(s, i)) for i, s in enumerate(shares)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert done == count
    return time.perf_counter() - started


def memory_mb() -> dict[str, float]:
    """This process's resident and peak resident memory (VmHWM starts afresh at exec, unlike
    ru_maxrss, which a child inherits from the parent that forked it)."""
    found: dict[str, float] = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) / 1024
    return found


def child(url: str) -> None:
    """One cold start: import, sign in (scrypt once), first page shown."""
    started = time.perf_counter()
    at_start = memory_mb()
    from wsemail.tui.app import WsemailApp
    from wsemail.tui.screens.inbox import InboxScreen
    from wsemail.tui.signin import LoginDefaults

    imported = time.perf_counter()

    async def run() -> dict[str, object]:
        app = WsemailApp(LoginDefaults(url, USER, PASSWORD))
        async with app.run_test(size=(80, 24)) as pilot:
            while True:
                screen = app.screen
                if (
                    isinstance(screen, InboxScreen)
                    and screen.mailbox.loaded
                    and not screen.loading
                    and screen.table.row_count
                ):
                    break
                await pilot.pause(0.002)
            shown = time.perf_counter()
            rss_first_page = memory_mb()["VmRSS"]
            loaded = len(screen.mailbox.headers)
            more = screen.mailbox.more
            # paging: the user pages down; near the last loaded row the next page is asked for
            while len(screen.mailbox.headers) <= loaded or screen.loading:
                await pilot.press("pagedown")
                await pilot.pause(0.002)
            paged = time.perf_counter()
            return {
                "import_s": imported - started,
                "first_page_s": shown - started,
                "first_page_after_import_s": shown - imported,
                "next_page_s": paged - shown,
                "rows_first_page": loaded,
                "rows_after_paging": len(screen.mailbox.headers),
                "more_on_server": more,
                "rss_start_mb": at_start["VmRSS"],
                "rss_first_page_mb": rss_first_page,
                "peak_rss_mb": memory_mb()["VmHWM"],
            }

    print(json.dumps(asyncio.run(run())))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    with tempfile.TemporaryDirectory(prefix="wsemail-bench-tui-") as folder:
        data = Path(folder) / "server"
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
        env["HOME"] = folder
        env["PYTHON_KEYRING_BACKEND"] = "keyring.backends.fail.Keyring"
        for user in (USER, SENDER):
            subprocess.run(
                [wsemail(), "user", "add", user, "--password-stdin", "--data-dir", str(data)],
                input=PASSWORD + "\n",
                text=True,
                check=True,
                capture_output=True,
                env=env,
            )
        port = free_port()
        server = subprocess.Popen(
            [wsemail(), "serve", "--data-dir", str(data), "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        url = f"http://127.0.0.1:{port}/wsemail"
        try:
            from wsemail.client.mail import Client

            deadline = time.monotonic() + 30
            while True:
                try:
                    with Client(url, USER, PASSWORD) as probe:
                        probe.list_headers(limit=1)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            seconds = fill(url, count)
            print(f"filled {count} messages in {seconds:.1f} s ({count / seconds:.0f}/s)")
            with Client(url, USER, PASSWORD) as client:
                started = time.perf_counter()
                every = sum(1 for _ in client.iter_headers())
                whole = time.perf_counter() - started
            print(f"for scale: listing all {every} headers through the client took {whole:.2f} s")
            results = []
            for _ in range(runs):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", url],
                    capture_output=True,
                    text=True,
                    check=True,
                    env={**env, "TZ": "UTC"},
                )
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            for key in ("import_s", "first_page_after_import_s", "first_page_s", "next_page_s"):
                values = [float(r[key]) for r in results]  # type: ignore[arg-type]
                print(
                    f"{key:27} median {statistics.median(values) * 1000:7.1f} ms"
                    f"  (min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f}, n={runs})"
                )
            last = results[-1]
            print(
                f"first page: {last['rows_first_page']} headers of {every} "
                f"(more on server: {last['more_on_server']}); after paging down: "
                f"{last['rows_after_paging']}"
            )

            def mb(key: str) -> float:
                return statistics.median(float(r[key]) for r in results)  # type: ignore[arg-type]

            print(
                f"client process RSS (medians): {mb('rss_start_mb'):.1f} MB at start, "
                f"{mb('rss_first_page_mb'):.1f} MB with the first page shown, "
                f"peak {mb('peak_rss_mb'):.1f} MB"
            )
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2])
    else:
        main()
