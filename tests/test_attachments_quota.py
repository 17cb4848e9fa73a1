"""Issue 24: announced attachment uploads are held to the per-user quota ([quota]
per_user_bytes, stored + announced) and to the free space of the attachment disk
([quota] reserve_bytes kept free) at BeginUpload, against a real server on loopback; each
refusal is a clear fault, nothing is stored, and the server still serves."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from stores import on_store

from wsemail.client.mail import Client
from wsemail.protocol.errors import InsufficientStorage, QuotaExceeded, RemoteFault
from wsemail.protocol.soap import q
from wsemail.server.config import DEFAULT_PLUGINS, load_config
from wsemail.server.pipeline import PluginSpec

from conftest import Running, sqlite_steps, start_server

BIG = [
    *(s for s in DEFAULT_PLUGINS if s.ref != "attachments"),
    PluginSpec("attachments", 50, {"max_bytes": 1 << 50}),
]


def begin(client: Client, size: int, name: str = "big.bin") -> str:
    request = etree.Element(q("BeginUpload"))
    etree.SubElement(request, q("Name")).text = name
    etree.SubElement(request, q("Size")).text = str(size)
    ticket = client.extension("attachments", request)
    assert ticket is not None
    return ticket.findtext(q("Guid")) or ""


def blobs(running: Running) -> int:
    return running.count("SELECT count(*) FROM attachment_blobs")


def refused(running: Running, client: Client, size: int, fault: type[RemoteFault]) -> str:
    before = blobs(running)
    with pytest.raises(fault) as caught:
        begin(client, size)
    assert blobs(running) == before  # nothing stored
    assert not list((running.config.data_dir / "attachments" / "tmp").iterdir())
    client.list_headers()  # still serving
    return str(caught.value)


@pytest.fixture
def small_quota(tmp_path: Path, store_url: str) -> Iterator[Running]:
    running = start_server(
        tmp_path / "srv",
        quota_per_user_bytes=1_000_000,
        quota_reserve_bytes=0,
        **on_store(store_url),
    )
    yield running
    running.stop()


@pytest.mark.both_stores
def test_announced_uploads_beyond_the_per_user_quota_are_refused(small_quota: Running) -> None:
    alice, bob = small_quota.client("alice@localhost"), small_quota.client("bob@localhost")
    begin(alice, 600_000)
    says = refused(small_quota, alice, 600_000, QuotaExceeded)
    assert "600000 of 1000000 bytes used or announced" in says
    begin(bob, 600_000)  # the quota is per user
    begin(alice, 400_000)  # exactly up to it
    refused(small_quota, alice, 1, QuotaExceeded)


def test_twenty_announced_uploads_of_8_gib_are_not_all_accepted(tmp_path: Path) -> None:
    running = start_server(tmp_path / "srv")  # the defaults: 10 GiB per user, 1 GiB reserve
    try:
        alice = running.client("alice@localhost")
        accepted, faults = 0, set()
        for _ in range(20):
            try:
                begin(alice, 8 << 30)
                accepted += 1
            except (QuotaExceeded, InsufficientStorage) as exc:
                faults.add(type(exc))
        assert accepted <= 1 and faults
        assert blobs(running) == accepted
    finally:
        running.stop()


def test_an_announced_size_that_does_not_fit_on_disk_is_refused(tmp_path: Path) -> None:
    running = start_server(
        tmp_path / "srv", plugins=BIG, quota_per_user_bytes=1 << 60, quota_reserve_bytes=1 << 60
    )
    try:
        alice = running.client("alice@localhost")
        says = refused(running, alice, 1, InsufficientStorage)  # the reserve is never given
        assert "not enough free space" in says
    finally:
        running.stop()
    running = start_server(
        tmp_path / "srv2", plugins=BIG, quota_per_user_bytes=1 << 60, quota_reserve_bytes=0
    )
    try:
        alice, bob = running.client("alice@localhost"), running.client("bob@localhost")
        free = shutil.disk_usage(running.config.data_dir).free
        begin(alice, free * 5 // 8)  # fits
        refused(running, bob, free * 5 // 8, InsufficientStorage)  # after alice's, it does not
    finally:
        running.stop()


def test_quota_options_are_read_from_server_toml(tmp_path: Path) -> None:
    toml = tmp_path / "server.toml"
    toml.write_text("[quota]\nper_user_bytes = 5000\nreserve_bytes = 7\n")
    config = load_config(toml, tmp_path)
    assert (config.quota_per_user_bytes, config.quota_reserve_bytes) == (5000, 7)


def test_an_owners_upload_total_reads_only_their_uploads(tmp_path: Path) -> None:
    """The quota of every delivered copy and upload sums the owner's uploads: through an
    index by owner, not by reading every upload of every user (3,000 others' here: ~36,000
    SQLite steps a look-up before the index, a few dozen now)."""
    from wsemail.server.attachments import records
    from wsemail.server.operate import records as operate
    from wsemail.server.store import SqliteStore, Tx

    store = SqliteStore(tmp_path / "s.db")
    store.ensure_schema("attachments", records.MIGRATIONS)
    store.ensure_schema(operate.COMPONENT, operate.MIGRATIONS)

    def fill(tx: Tx) -> None:
        tx.conn.executemany(
            "INSERT INTO attachment_blobs(guid, owner, name, media_type, size, state, "
            "ticket_expires, created) VALUES (?, ?, 'a', 'b', 10, 'bound', 0, 0)",
            [(f"g{n}", f"user{n}@localhost") for n in range(3000)],
        )

    def steps_of(tx: Tx) -> tuple[int, int, int, int]:
        (mine, counted, room), steps = sqlite_steps(
            tx.conn,
            lambda: (
                records.owner_bytes(tx, "user7@localhost"),
                operate.usage(tx, "user8@localhost", 0).used,
                operate.room_left(tx, "user9@localhost", 100),  # a delivery's quota check
            ),
        )
        return mine, counted, room, steps

    try:
        store.transact_sync(fill)
        mine, counted, room, steps = store.transact_sync(steps_of)
        assert (mine, counted, room) == (10, 10, 90)
        assert steps < 1000, steps
    finally:
        store.close()
