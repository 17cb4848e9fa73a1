"""Benchmark, not a test (pytest does not collect it): an encrypted on-demand attachment from
alice@a.test to bob@b.test between two real TLS servers on loopback — encrypted on alice's
side while it uploads, fetched and decrypted on bob's. Reports throughput of each step and
the peak RSS of the process that runs both servers and both clients.

    WSEMAIL_BENCH_ATTACHMENT_MB=100 .venv/bin/python tests/bench_usercerts_attachments.py
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_attachments import file_sha, make_file  # noqa: E402
from test_usercerts import two_domains  # noqa: E402

from wsemail.client.attachments import Attachments  # noqa: E402
from wsemail.client.usercerts import fetch_encrypted, open_listing, send_encrypted  # noqa: E402


def main() -> None:
    megabytes = int(os.environ.get("WSEMAIL_BENCH_ATTACHMENT_MB", "0"))
    if megabytes <= 0:
        print("set WSEMAIL_BENCH_ATTACHMENT_MB (e.g. 100) to run this benchmark")
        return
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        tmp = Path(folder)
        with two_domains(tmp, patch) as fed:
            alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
            size = megabytes << 20
            source = tmp / "big.bin"
            expected = make_file(source, size)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            with fed.directory() as directory:
                started = time.perf_counter()
                send_encrypted(
                    fed.client("alice@a.test"),
                    alice_key,
                    directory,
                    ["bob@b.test"],
                    "big",
                    "",
                    attachments=[source],
                )
                upload_s = time.perf_counter() - started
                source.unlink()
                bob_client = fed.client("bob@b.test")
                bob_client.trust_roots = [fed.ca / "root.pem"]
                bob = Attachments(bob_client)
                while not bob_client.list_headers().headers:
                    time.sleep(0.05)
                listing = bob.list(bob_client.list_headers().headers[0].id)
                [item] = open_listing(listing, bob_key, directory)
                started = time.perf_counter()
                out = fetch_encrypted(bob, item, tmp / "fetched.bin")
                fetch_s = time.perf_counter() - started
            assert file_sha(out) == expected
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(
                f"{megabytes} MB encrypted end to end, TLS on loopback: encrypt + upload + send "
                f"{size / upload_s / 1e6:.0f} MB/s ({upload_s:.1f} s), fetch + SHA-256 check + "
                f"decrypt {size / fetch_s / 1e6:.0f} MB/s ({fetch_s:.1f} s); peak RSS of servers "
                f"+ clients {rss} MB ({rss_before} MB before the transfer)"
            )


if __name__ == "__main__":
    main()
