"""Benchmark, not a test (pytest does not collect it): a 1 GB on-demand attachment from
alice@a.test to bob@b.test between two real TLS servers on loopback. Reports upload and fetch
throughput and the peak RSS of the process that runs both servers and the client.

    WSEMAIL_BENCH_ATTACHMENT_MB=1024 .venv/bin/python tests/bench_attachments.py
"""

from __future__ import annotations

import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_attachments import file_sha, make_file, newest  # noqa: E402

from wsemail.core.routing import StaticResolver  # noqa: E402
from wsemail.pki import create_root, write_crl  # noqa: E402


def main() -> None:
    megabytes = int(os.environ.get("WSEMAIL_BENCH_ATTACHMENT_MB", "0"))
    if megabytes <= 0:
        print("set WSEMAIL_BENCH_ATTACHMENT_MB (e.g. 1024) to run this benchmark")
        return
    from test_attachments import Fed, start_domain

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        ca = tmp / "ca"
        create_root(ca)
        write_crl(ca)
        a, b = (start_domain(tmp, ca, d) for d in ("a.test", "b.test"))
        routes = {"a.test": [a.url], "b.test": [b.url]}
        for running in (a, b):
            assert running.controller.server.federation is not None
            running.controller.server.federation.resolver = StaticResolver(routes)
        fed = Fed(ca, tmp, a, b)
        try:
            size = megabytes << 20
            source = tmp / "big.bin"
            expected = make_file(source, size)
            rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            alice = fed.box(a, "alice@a.test")
            started = time.perf_counter()
            uploaded = alice.upload(source)
            upload_s = time.perf_counter() - started
            alice.client.send(["bob@b.test"], "big", "", attachments=[uploaded.guid])
            source.unlink()
            bob = fed.box(b, "bob@b.test")
            [ref] = bob.list(newest(bob.client)).refs
            started = time.perf_counter()
            out = bob.fetch(ref, tmp / "fetched.bin")
            fetch_s = time.perf_counter() - started
            assert file_sha(out) == expected
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(
                f"{megabytes} MB over TLS on loopback: upload {size / upload_s / 1e6:.0f} MB/s "
                f"({upload_s:.1f} s), fetch + SHA-256 check {size / fetch_s / 1e6:.0f} MB/s "
                f"({fetch_s:.1f} s); peak RSS of servers + client {rss} MB "
                f"({rss_before} MB before the transfer)"
            )
        finally:
            for running in (a, b):
                for client in running.clients:
                    client.close()
            a.stop()
            b.stop()


if __name__ == "__main__":
    main()
