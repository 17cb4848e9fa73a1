"""The compose screen's protected deliveries between two real TLS domains on loopback,
driven by Textual's pilot: Send Encrypted (the stored bytes hold no plaintext, the reader's
TUI shows it decrypted with the sender's signature verified), its refusals (a recipient
without a certificate, no key on this device: a notification and nothing sent), and an
instant message sent directly to the recipient's server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_federation import Federation, start_domain
from textual.widgets import Checkbox, Input, TextArea
from tui_helpers import make_app, wait_for

from wsemail.client import Client
from wsemail.im_client import Incoming, InstantMessenger
from wsemail.pki import create_root, write_crl
from wsemail.server.config import DEFAULT_PLUGINS
from wsemail.tui.app import WsemailApp
from wsemail.tui.screens.compose import ComposeScreen
from wsemail.tui.screens.inbox import InboxScreen
from wsemail.tui.screens.message import MessageScreen
from wsemail.usercerts import keystore, new_private_key, request_certificate

from conftest import PASSWORD, Running
from conftest import wait_for as wait_until

pytestmark = pytest.mark.anyio

SUBJECT = "Merger plans zebra-umbrella"
BODY = "the launch code is 4711-walrus-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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


def notes(app: WsemailApp) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications]


def in_inbox(app: WsemailApp, rows: int) -> bool:
    screen = app.screen
    return (
        isinstance(screen, InboxScreen)
        and screen.mailbox.loaded
        and not screen.loading
        and screen.table.row_count == rows
    )


async def compose(
    app: WsemailApp, pilot: object, to: str, subject: str, body: str
) -> ComposeScreen:
    await pilot.press("c")  # type: ignore[attr-defined]
    await wait_for(pilot, lambda: isinstance(app.screen, ComposeScreen))  # type: ignore[arg-type]
    screen = app.screen
    assert isinstance(screen, ComposeScreen)
    screen.query_one("#compose-to", Input).value = to
    screen.query_one("#compose-subject", Input).value = subject
    screen.query_one("#compose-body", TextArea).text = body
    return screen


async def test_compose_sends_encrypted_and_the_reader_sees_it_decrypted(two: Two) -> None:
    two.key("alice@a.test")
    two.key("bob@b.test")
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test", SUBJECT, BODY)
        sign = screen.query_one("#compose-sign", Checkbox)
        assert sign.value and sign.disabled  # signing follows the CLI default (--sign)
        screen.query_one("#compose-instant", Checkbox).value = True
        await pilot.pause()
        screen.query_one("#compose-encrypt", Checkbox).value = True  # mail, not an IM
        await pilot.pause()
        assert screen.encrypt and not screen.instant and not sign.disabled
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
        assert any("Encrypted message sent, signed" in n for n in notes(app))

    bob = two.user("bob@b.test")
    wait_until(lambda: bob.list_headers().headers, "bob's copy")
    stored = two.db_bytes()
    assert SUBJECT.encode() not in stored and BODY.encode() not in stored

    reader = two.app("bob@b.test")
    async with reader.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(reader, 1))
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: isinstance(reader.screen, MessageScreen) and reader.screen.message is not None,
        )
        screen = reader.screen
        assert isinstance(screen, MessageScreen) and screen.message is not None
        assert (screen.message.subject, screen.message.body) == (SUBJECT, BODY)
        headers = str(screen.query_one("#message-headers").render())
        assert "Sealed:  end to end ✓, signed by alice@a.test ✓" in headers
        assert "signed by a.test ✓" in headers  # the sending server's hop signature
        assert BODY in str(screen.query_one("#message-body").render())


async def test_encrypted_send_is_refused_without_a_recipient_certificate(two: Two) -> None:
    two.key("alice@a.test")
    two.key("bob@b.test")  # carol@b.test has none
    before = two.stored()
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test, carol@b.test", SUBJECT, BODY)
        screen.query_one("#compose-encrypt", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(
            pilot, lambda: any("cannot encrypt to carol@b.test" in n for n in notes(app))
        )
        assert app.screen is screen and not screen.sending  # the draft stays, can be fixed
        assert any("nothing was sent" in n for n in notes(app))
    assert two.stored() == before
    assert two.user("bob@b.test").list_headers().headers == []  # the servers still answer


async def test_encrypted_send_is_refused_without_a_key_on_this_device(two: Two) -> None:
    two.key("bob@b.test")  # alice has no key here
    before = two.stored()
    app = two.app("alice@a.test")
    async with app.run_test(size=(80, 24)) as pilot:
        await wait_for(pilot, lambda: in_inbox(app, 0))
        screen = await compose(app, pilot, "bob@b.test", SUBJECT, BODY)
        screen.query_one("#compose-encrypt", Checkbox).value = True
        await pilot.pause()
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: any("no key for alice@a.test" in n for n in notes(app)))
        assert app.screen is screen
    assert two.stored() == before
    assert two.user("alice@a.test").list_headers().headers == []


async def test_compose_sends_directly_to_the_recipients_server(two: Two) -> None:
    got: list[Incoming] = []
    stream = InstantMessenger(two.user("bob@b.test")).listen()
    reader = threading.Thread(target=lambda: got.extend(stream), daemon=True)
    reader.start()
    try:
        app = two.app("alice@a.test")
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_for(pilot, lambda: in_inbox(app, 0))
            screen = await compose(app, pilot, "bob@b.test", "", "straight to you")
            screen.query_one("#compose-direct", Checkbox).value = True  # implies instant
            await pilot.pause()
            assert screen.instant and screen.direct
            await pilot.press("ctrl+s")
            await wait_for(pilot, lambda: isinstance(app.screen, InboxScreen))
            assert any("Sent directly: bob@b.test: pushed" in n for n in notes(app))
        wait_until(lambda: any(i.body == "straight to you" for i in got), "bob's live copy")
        item = next(i for i in got if i.body == "straight to you")
        assert item.sender == "alice@a.test"
        # not relayed by alice's server: nothing in her sent folder
        assert two.user("alice@a.test").list_headers("sent").headers == []
    finally:
        stream.close()
        reader.join(10)
