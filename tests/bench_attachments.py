"""Benchmark, not a test (pytest does not collect it): a 1 GB on-demand attachment from
alice@a.test to bob@b.test between two real TLS servers on loopback. Reports upload and fetch
throughput, the CPU they took and the peak RSS of the process that runs both servers and the
client (most of it is that process's start: the imports, two servers, the test CA).

    WSEMAIL_BENCH_ATTACHMENT_MB=1024 .venv/bin/python tests/bench_attachments.py [--split]

`--split`: each server is the real `wsemail serve` (its own process, its server.toml with
the routes to both domains) and the client is the real `wsemail send --attach --on-demand`
and `wsemail fetch`, one process each; reports the peak RSS of each of them (the servers'
before and after the transfers).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from test_attachments import file_sha, make_file, newest  # noqa: E402

from wsemail.core.routing import StaticResolver  # noqa: E402
from wsemail.pki import create_root, issue_server, write_crl  # noqa: E402


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    megabytes = int(os.environ.get("WSEMAIL_BENCH_ATTACHMENT_MB", "0"))
    if megabytes <= 0:
        print("set WSEMAIL_BENCH_ATTACHMENT_MB (e.g. 1024) to run this benchmark")
        return
    if sys.argv[1:] == ["--split"]:
        split(megabytes)
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
            started, cpu = time.perf_counter(), _cpu()
            uploaded = alice.upload(source)
            upload_s, upload_cpu = time.perf_counter() - started, _cpu() - cpu
            alice.client.send(["bob@b.test"], "big", "", attachments=[uploaded.guid])
            source.unlink()
            bob = fed.box(b, "bob@b.test")
            [ref] = bob.list(newest(bob.client)).refs
            started, cpu = time.perf_counter(), _cpu()
            out = bob.fetch(ref, tmp / "fetched.bin")
            fetch_s, fetch_cpu = time.perf_counter() - started, _cpu() - cpu
            assert file_sha(out) == expected
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
            print(
                f"{megabytes} MB over TLS on loopback: upload {size / upload_s / 1e6:.0f} MB/s "
                f"({upload_s:.1f} s), fetch + SHA-256 check {size / fetch_s / 1e6:.0f} MB/s "
                f"({fetch_s:.1f} s); peak RSS of servers + client {rss} MB "
                f"({rss_before} MB before the transfer); CPU (user + system, all threads) "
                f"{upload_cpu:.1f} s upload, {fetch_cpu:.1f} s fetch"
            )
        finally:
            for running in (a, b):
                for client in running.clients:
                    client.close()
            a.stop()
            b.stop()


def _memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a running process, in MB."""
    found = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) // 1024
    return found


def serve(
    tmp: Path, domains: tuple[str, ...]
) -> tuple[dict[str, subprocess.Popen[str]], dict[str, str]]:
    """The real `wsemail serve` for each domain (TLS with its federation identity, routes to
    every domain in its server.toml, alice, bob and carol as users), once each is ready;
    and their URLs."""
    from wsemail.bench.nodes import free_port, write_config
    from wsemail.server.accounts import set_user
    from wsemail.server.store import SqliteStore

    from conftest import PASSWORD, wsemail_binary

    ports = {domain: free_port() for domain in domains}
    routes = {d: f"https://127.0.0.1:{port}/wsemail" for d, port in ports.items()}
    servers = {}
    for domain in domains:
        data_dir = tmp / domain
        data_dir.mkdir(mode=0o700)
        identity = tmp / f"{domain}-identity"
        issue_server(tmp / "ca", domain, identity)
        write_config(
            data_dir,
            domain=domain,
            port=ports[domain],
            ca=tmp / "ca",
            identity=identity,
            routes=routes,
            plugins=[],  # the default ones
            sections={"queue": {"retry_base": 0.2, "retry_max": 0.5}},
        )
        store = SqliteStore(data_dir / "wsemail.db")
        try:
            for user in ("alice", "bob", "carol"):
                set_user(store, domain, f"{user}@{domain}", PASSWORD)
        finally:
            store.close()
        env = {"PATH": "/usr/bin:/bin"}
        if "PYTHONPATH" in os.environ:  # comparing versions side by side
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        servers[domain] = subprocess.Popen(
            [wsemail_binary(), "serve", "--data-dir", str(data_dir)],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
    for domain, server in servers.items():
        line = _line(server)
        assert f" at {routes[domain]} " in line, f"{domain} did not start: {line!r}"
    return servers, routes


def _cpu_of(pid: int) -> float:
    """CPU seconds (user + system, all threads) a running process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cli(tmp: Path, url: str, user: str, *args: str) -> tuple[str, float, int, float]:
    """Run the real `wsemail` client: (stdout, seconds, its peak RSS in MB, its CPU s)."""
    from conftest import PASSWORD, wsemail_binary

    env = {
        "WSEMAIL_SERVER": url,
        "WSEMAIL_USER": user,
        "WSEMAIL_PASSWORD": PASSWORD,
        "WSEMAIL_CACERT": str(tmp / "ca" / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(tmp / "ca" / "root.pem"),
        "WSEMAIL_TLS_NAME": user.partition("@")[2],
        "WSEMAIL_CLIENT_CONFIG": str(tmp / "client.toml"),
        "PATH": "/usr/bin:/bin",
    }
    if "PYTHONPATH" in os.environ:  # comparing versions side by side
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    started = time.perf_counter()
    out, usage = tmp / "cli.out", tmp / "cli.usage"
    with open(out, "wb") as stdout:
        run = [sys.executable, "-c", _MEASURED, str(usage), wsemail_binary(), *args]
        status = subprocess.run(run, env=env, stdout=stdout, check=False).returncode
    seconds = time.perf_counter() - started
    assert status == 0, f"wsemail {args[0]} failed"
    maxrss, cpu = usage.read_text().split()
    return out.read_text(), seconds, int(maxrss) // 1024, float(cpu)


# The client's peak RSS and CPU, taken by a small process that forks it: a child this
# benchmark (~90 MB) started directly would report this process's RSS as its own peak
# (Linux counts the memory a process had before its exec in ru_maxrss).
_MEASURED = """
import os, sys
pid = os.fork()
if pid == 0:
    os.execv(sys.argv[2], sys.argv[2:])
_, status, usage = os.wait4(pid, 0)
with open(sys.argv[1], "w") as out:
    out.write(f"{usage.ru_maxrss} {usage.ru_utime + usage.ru_stime}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def split(megabytes: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        create_root(tmp / "ca")
        write_crl(tmp / "ca")
        servers, routes = serve(tmp, ("a.test", "b.test"))
        try:
            size = megabytes << 20
            source = tmp / "big.bin"
            expected = make_file(source, size)
            before = {d: _memory(s.pid) for d, s in servers.items()}
            cpu = _cpu_of(servers["a.test"].pid)
            _, upload_s, upload_rss, upload_cpu = _cli(
                tmp, routes["a.test"], "alice@a.test",
                "send", "--to", "bob@b.test", "-s", "big", "--body", "",
                "--attach", str(source), "--on-demand",
            )  # fmt: skip
            upload_server_cpu = _cpu_of(servers["a.test"].pid) - cpu
            uploaded = {d: _memory(s.pid) for d, s in servers.items()}
            source.unlink()
            message = ""
            for _ in range(100):  # until the relay has delivered it to b.test
                listed, *_ = _cli(tmp, routes["b.test"], "bob@b.test", "list", "--json")
                if listed.strip():
                    message = json.loads(listed.splitlines()[0])["id"]
                    break
                time.sleep(0.2)
            out = tmp / "fetched"
            out.mkdir()
            cpu = _cpu_of(servers["a.test"].pid)
            _, fetch_s, fetch_rss, fetch_cpu = _cli(
                tmp, routes["b.test"], "bob@b.test", "fetch", message, "-o", str(out)
            )
            fetch_server_cpu = _cpu_of(servers["a.test"].pid) - cpu
            assert file_sha(out / "big.bin") == expected
            after = {d: _memory(s.pid) for d, s in servers.items()}
            print(
                f"{megabytes} MB, split: `wsemail send --attach` {upload_s:.1f} s, CPU "
                f"{upload_cpu:.1f} s, peak RSS {upload_rss} MB (a.test's CPU "
                f"{upload_server_cpu:.1f} s); `wsemail fetch` {fetch_s:.1f} s, CPU "
                f"{fetch_cpu:.1f} s, peak RSS {fetch_rss} MB (a.test's CPU "
                f"{fetch_server_cpu:.1f} s); "
                + "; ".join(
                    f"{d} server peak RSS {before[d]['VmHWM']} MB before the transfers, "
                    f"{uploaded[d]['VmHWM']} MB after the upload, {after[d]['VmHWM']} MB after "
                    "the fetch"
                    for d in servers
                )
            )
        finally:
            for server in servers.values():
                server.send_signal(signal.SIGTERM)
                server.wait(60)


def _line(server: subprocess.Popen[str]) -> str:
    assert server.stdout is not None
    return server.stdout.readline().strip()


if __name__ == "__main__":
    main()
