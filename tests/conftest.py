"""Fixtures: real servers on loopback ports, real SQLite files, the real `wsemail` binary."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from lxml import etree

from wsemail.bench.pgserver import PgServer, binaries
from wsemail.client.mail import Client
from wsemail.protocol.auth import Credentials, derive_key
from wsemail.protocol.soap import SOAP, WSEMAIL
from wsemail.server.accounts import set_user
from wsemail.server.config import ServerConfig
from wsemail.server.controller import ServerController

# the user's cache folder (the terminal client's salt memory, directory caches) is the
# test session's own: the suite never writes to ~/.cache of the machine it runs on
os.environ["XDG_CACHE_HOME"] = tempfile.mkdtemp(prefix="wsemail-test-cache-")
atexit.register(shutil.rmtree, os.environ["XDG_CACHE_HOME"], True)

T = TypeVar("T")
PASSWORD = "correct horse battery"
USERS = ("alice@localhost", "bob@localhost", "carol@localhost")
ADMIN = "admin@localhost"


def wsemail_binary() -> str:
    found = shutil.which("wsemail", path=str(Path(sys.executable).parent))
    assert found, "the wsemail console script is not installed"
    return found


@dataclass
class Running:
    """A running server plus what tests need to poke it."""

    controller: ServerController
    config: ServerConfig
    verify: str | bool = True
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.controller.url

    def client(self, user: str = "alice@localhost", password: str = PASSWORD) -> Client:
        tls_name = self.config.domain if self.config.tls_cert else None
        c = Client(self.url, user, password, verify=self.verify, tls_name=tls_name)
        self.clients.append(c)
        return c

    def credentials(self, user: str = "alice@localhost") -> Credentials:
        salt = self.client(user).get_salt(user)
        return Credentials(user, derive_key(PASSWORD, salt))

    def count(self, sql: str) -> int:
        return int(
            self.controller.server.store.transact_sync(
                lambda tx: tx.conn.execute(sql).fetchone()[0]
            )
        )

    def stored(self) -> tuple[int, int]:
        """(messages, nonces): what a rejected request must leave unchanged."""
        return self.count("SELECT count(*) FROM messages"), self.count(
            "SELECT count(*) FROM nonces"
        )

    def post(self, data: bytes, **headers: str) -> httpx.Response:
        return httpx.post(
            self.url,
            content=data,
            timeout=10,
            headers={"content-type": "application/soap+xml", **headers},
        )

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.controller.stop()


def start_server(
    data_dir: Path,
    *,
    users: bool = True,
    clock: Callable[[], float] = time.time,
    **settings: object,
) -> Running:
    """A real server on a loopback port; alice, bob, carol and admin @ its domain. `clock`
    is the server's clock (freshness windows, rate limits; tests inject one to move time on)."""
    settings.setdefault("port", 0)
    config = ServerConfig(data_dir=data_dir, **settings)  # type: ignore[arg-type]
    controller = ServerController(config, clock=clock)
    if users:
        store = controller.server.store
        for name in ("alice", "bob", "carol", "admin"):
            user = f"{name}@{config.domain}"
            if store.transact_sync(lambda tx, u=user: tx.user(u)) is None:
                set_user(store, config.domain, user, PASSWORD, admin=name == "admin")
    controller.start()
    verify: str | bool = str(config.trust_roots[0]) if config.tls_cert else True
    return Running(controller, config, verify=verify)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PgServer]:
    """One real PostgreSQL server for the session (Debian's binaries, initdb in a temporary
    directory, a loopback port); tests take a fresh database each with `pg_url`."""
    if binaries() is None:
        pytest.fail("PostgreSQL is not installed: run scripts/install-system-deps")
    pg = PgServer(durable=False).start()
    yield pg
    pg.close()


@pytest.fixture
def pg_url(postgres: PgServer) -> str:
    """A new empty database on the session's PostgreSQL server."""
    return postgres.database()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_stores` run once on each store (through the `store_url` fixture,
    which the `server` fixture uses)."""
    if "store_url" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_stores"
    ):
        metafunc.parametrize("store_url", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def store_url(request: pytest.FixtureRequest) -> str:
    """The store a test's server runs on: "" (SQLite in the data dir) or the URL of a new
    PostgreSQL database. Parametrised for tests marked `both_stores`; otherwise SQLite, or
    PostgreSQL for the whole run with WSEMAIL_TEST_STORE=postgresql."""
    kind = getattr(request, "param", os.environ.get("WSEMAIL_TEST_STORE", "sqlite"))
    if kind == "sqlite":
        return ""
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def server(tmp_path: Path, store_url: str) -> Iterator[Running]:
    running = start_server(tmp_path / "server", store_url=store_url)
    yield running
    running.stop()


@dataclass
class Cli:
    server: Running
    home: Path

    def env(self, user: str, password: str = PASSWORD) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
        env.update(
            WSEMAIL_SERVER=self.server.url,
            WSEMAIL_USER=user,
            WSEMAIL_PASSWORD=password,
            WSEMAIL_CLIENT_CONFIG=str(self.home / "client.toml"),
            HOME=str(self.home),
            PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        )
        return env

    def __call__(
        self,
        *args: str,
        user: str = "alice@localhost",
        input: str | None = None,
        password: str = PASSWORD,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [wsemail_binary(), *args],
            input=input or "",
            capture_output=True,
            text=True,
            env=self.env(user, password),
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"wsemail {' '.join(args)} exited {result.returncode}: {result.stderr}"
            )
        return result


@pytest.fixture
def cli(server: Running, tmp_path: Path) -> Cli:
    home = tmp_path / "home"
    home.mkdir()
    return Cli(server, home)


def fault_subcode(response: httpx.Response) -> str:
    """The fault's subcode as prefix:local with prefixes wsse / wsemail."""
    root = etree.fromstring(response.content)
    value = root.findtext(f".//{{{SOAP}}}Subcode/{{{SOAP}}}Value") or ""
    prefix, _, local = value.partition(":")
    ns = root.find(f".//{{{SOAP}}}Subcode/{{{SOAP}}}Value").nsmap.get(prefix)  # type: ignore[union-attr]
    return f"{'wsemail' if ns == WSEMAIL else 'wsse'}:{local}"


def wait_for(condition: Callable[[], object], what: str, timeout: float = 20) -> None:
    """Poll `condition` until true (servers deliver and relay asynchronously); a bound, not a
    timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def inbox(running: Running, user: str) -> list[str]:
    """Subjects in `user`'s inbox, newest first."""
    return [h.subject for h in running.client(user).list_headers().headers]


def sqlite_steps(conn: Any, call: Callable[[], T]) -> tuple[T, int]:
    """`call()`'s result and about how many virtual-machine steps SQLite took for it on
    `conn` (counted by hundreds): how much a query reads, without timing it."""
    hundreds = 0

    def count() -> int:
        nonlocal hundreds
        hundreds += 1
        return 0

    conn.set_progress_handler(count, 100)
    try:
        result = call()
    finally:
        conn.set_progress_handler(None, 100)
    return result, hundreds * 100
