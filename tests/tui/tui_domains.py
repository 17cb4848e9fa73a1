"""Shared by the TUI tests that need two real TLS domains (a.test, b.test) trusting one
root on loopback: end-to-end encryption, sending directly, the party line."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_federation import Federation, start_domain
from tui_helpers import make_app

from wsemail.client.mail import Client
from wsemail.client.usercerts import keystore, new_private_key, request_certificate
from wsemail.pki import create_root, write_crl
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.tui.app import WsemailApp

from conftest import PASSWORD, Running


@dataclass
class Two:
    """a.test and b.test, both trusting one root; clients as the TUI builds them."""

    ca: Path
    servers: dict[str, Running]

    def running(self, address: str) -> Running:
        return self.servers[address.rpartition("@")[2]]

    def client(self, server: str, user: str, password: str) -> Client:
        running = self.running(user)
        c = Client(
            server,
            user,
            password,
            verify=running.verify,
            tls_name=running.config.domain,
            trust_roots=[self.ca / "root.pem"],
        )
        running.clients.append(c)
        return c

    def user(self, address: str) -> Client:
        return self.client(self.running(address).url, address, PASSWORD)

    def app(self, address: str, *, im_notify: bool = False) -> WsemailApp:
        return make_app(
            self.running(address), address, im_notify=im_notify, client_factory=self.client
        )

    def key(self, address: str) -> None:
        keystore.save(request_certificate(self.user(address), new_private_key()))

    def stored(self) -> int:
        return sum(r.count("SELECT count(*) FROM messages") for r in self.servers.values())

    def db_bytes(self) -> bytes:
        found = b""
        for running in self.servers.values():
            path = running.config.db_path
            found += b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        return found


@pytest.fixture
def two(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Two]:
    monkeypatch.setenv("WSEMAIL_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("WSEMAIL_KEY_PASSPHRASE", "device passphrase")
    ca = tmp_path / "ca"
    create_root(ca)
    write_crl(ca)
    servers = {
        d: start_domain(tmp_path, ca, d, plugins=list(DEFAULT_PLUGINS))
        for d in ("a.test", "b.test")
    }
    Federation(ca, servers).route_all()
    # what `wsemail send --encrypt` reads to find and check other users' certificates
    monkeypatch.setenv("WSEMAIL_TRUST_ROOTS", str(ca / "root.pem"))
    monkeypatch.setenv("WSEMAIL_CACERT", str(ca / "root.pem"))
    monkeypatch.setenv(
        "WSEMAIL_DIRECTORY_ROUTES", ",".join(f"{d}={r.url}" for d, r in servers.items())
    )
    yield Two(ca, servers)
    for running in servers.values():
        running.stop()
