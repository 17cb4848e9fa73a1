"""A throwaway PostgreSQL server for the tests and benchmarks: Debian's `postgresql`
binaries (scripts/install-system-deps installs them) run `initdb` and `pg_ctl` in a
temporary directory, listening on a loopback port; `database()` hands out a fresh
database per test. Run as root, the server runs as the `postgres` system user (PostgreSQL
refuses to run as root)."""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from wsemail.bench.nodes import free_port
from wsemail.protocol.errors import UsageError

USER = "wsemail"


def binaries() -> Path | None:
    """The directory of initdb/pg_ctl/postgres, the newest installed; None without one."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def _version(path: str) -> int:
    try:
        return int(Path(path).parts[-3])
    except ValueError:
        return 0


class PgServer:
    """initdb + pg_ctl start in `root` (a new temporary directory unless given). It detects
    deadlocks after 100 ms instead of PostgreSQL's default second: several nodes' batches can
    meet on the same rows (an owner's totals), and the loser is run again once detected
    (the same setting is advised for production in the README)."""

    def __init__(self, root: Path | None = None, *, durable: bool = True) -> None:
        """`durable=False` (the tests): no fsync and no synchronous commit. A test stops
        wsemail processes, never the machine, and PostgreSQL's files in the page cache
        survive its own stop; benchmarks and fault scenarios keep the durable default."""
        bindir = binaries()
        if bindir is None:
            raise UsageError("PostgreSQL is not installed: run scripts/install-system-deps")
        self.bin = bindir
        self.root = Path(root or tempfile.mkdtemp(prefix="wsemail-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            entry = pwd.getpwnam("postgres")
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
        self.root.chmod(0o700)
        self.running = False
        self.durable = durable

    def _run(self, *args: str, log: bool = False) -> None:
        result = subprocess.run(
            [*self.as_user, *args], capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            raise UsageError(f"{Path(args[0]).name} failed: {result.stderr.strip()[-500:]}")

    def start(self) -> PgServer:
        if not (self.data / "PG_VERSION").exists():
            self._run(
                str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", USER,
                "-E", "UTF8", "--no-sync", "--locale=C.UTF-8",
            )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=64MB -c deadlock_timeout=100ms"
        )
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
            "-l", str(self.root / "log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.running = True
        return self

    def stop(self, mode: str = "fast") -> None:
        if self.running:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
            self.running = False

    @property
    def pid(self) -> int:
        """The postmaster's process id (its backends are its children)."""
        return int((self.data / "postmaster.pid").read_text().split()[0])

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        name = "t_" + secrets.token_hex(6)
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
