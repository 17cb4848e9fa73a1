"""Encrypted on-demand attachments between two real TLS domains on loopback: alice@a.test
sends bob@b.test an encrypted, signed message with a file; both servers hold ciphertext
only; bob fetches and decrypts it; a third user cannot; altered, cut or reordered ciphertext
is refused with nothing left behind."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from lxml import etree
from stores import another_store, on_postgres
from test_usercerts import BODY, SUBJECT, Fed, db_bytes, two_domains

from wsemail.client.attachments import Attachments
from wsemail.client.usercerts import (
    Directory,
    EncryptedAttachment,
    UserKey,
    fetch_encrypted,
    open_listing,
    open_sealed,
    send_encrypted,
)
from wsemail.client.usercerts.filecrypt import CHUNK, HEADER, TAG, decrypt_file, encrypted_size
from wsemail.protocol.errors import Forbidden, SignatureInvalid, UsageError, WsemailError

from conftest import Running, wait_for

FILE_NAME = "merger-plan-okapi.pdf"
MARKER = b"CONFIDENTIAL-okapi-merger-terms "


@pytest.fixture
def fed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str, request: pytest.FixtureRequest
) -> Iterator[Fed]:
    stores = (store_url, another_store(store_url, request))
    with two_domains(tmp_path, monkeypatch, stores) as federation:
        yield federation


def secret_file(path: Path, size: int = 2 * CHUNK + 12345) -> bytes:
    """A file that spans three chunks and repeats a greppable marker."""
    data = (MARKER * (size // len(MARKER) + 1))[:size]
    data = data[: size // 2] + os.urandom(1000) + data[size // 2 + 1000 :]
    path.write_bytes(data)
    return data


def box(fed: Fed, address: str) -> Attachments:
    client = fed.client(address)
    client.trust_roots = [fed.ca / "root.pem"]
    return Attachments(client)


def newest(box: Attachments) -> str:
    wait_for(lambda: box.client.list_headers().headers, f"mail for {box.client.username}")
    return box.client.list_headers().headers[0].id


def server_bytes(running: Running) -> bytes:
    """Everything a server keeps: its SQLite files and its attachment storage."""
    stored = [p for p in (running.config.data_dir / "attachments").rglob("*") if p.is_file()]
    return db_bytes(running) + b"".join(p.read_bytes() for p in stored)


def blob_path(running: Running, guid: str) -> Path:
    return running.config.data_dir / "attachments" / "blobs" / guid


def blob_bytes(running: Running, guid: str) -> bytes:
    """The stored bytes of an attachment: its file (SQLite), its chunk rows (PostgreSQL)."""
    if not on_postgres(running):
        return blob_path(running, guid).read_bytes()
    rows = running.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute(
            "SELECT data FROM attachment_chunks WHERE guid=? ORDER BY n", (guid,)
        ).fetchall()
    )
    return b"".join(bytes(r[0]) for r in rows)


def send_file(fed: Fed, alice: UserKey, source: Path, directory: Directory) -> None:
    send_encrypted(
        fed.client("alice@a.test"),
        alice,
        directory,
        ["bob@b.test"],
        SUBJECT,
        BODY,
        attachments=[source],
    )


def received(fed: Fed, directory: Directory, bob: UserKey) -> EncryptedAttachment:
    reader = box(fed, "bob@b.test")
    listing = reader.list(newest(reader))
    assert listing.provenance.status == "verified"
    [item] = open_listing(listing, bob, directory)
    return item


def test_an_encrypted_attachment_crosses_domains_as_ciphertext_only(
    fed: Fed, tmp_path: Path
) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    carol_key = fed.key("carol@b.test")
    source = tmp_path / FILE_NAME
    plain = secret_file(source)
    wire: list[bytes] = []
    server_b = fed.b.controller.server
    dispatch = server_b.dispatch

    async def recording(data: bytes, peer: str) -> etree._Element:
        wire.append(data)
        return await dispatch(data, peer)

    server_b.dispatch = recording  # type: ignore[method-assign]
    with fed.directory() as directory:
        send_file(fed, alice_key, source, directory)
        item = received(fed, directory, bob_key)
        assert (item.name, item.size, item.media_type) == (FILE_NAME, len(plain), "application/pdf")
        assert item.ref.server == "a.test" and item.ref.name == "encrypted-1.bin"
        assert item.ref.size == encrypted_size(len(plain)) == item.file.cipher_size
        bob = box(fed, "bob@b.test")
        out = fetch_encrypted(bob, item, tmp_path / "fetched.pdf")
        assert out.read_bytes() == plain
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [FILE_NAME, "fetched.pdf", "ca", "keys", "a.test", "b.test"]
            + ["a.test-identity", "b.test-identity"]
        )
        # the sender opens her own sent copy's attachment too
        alice = box(fed, "alice@a.test")
        sent = alice.client.list_headers("sent").headers[0].id
        [mine] = open_listing(alice.list(sent), alice_key, directory)
        assert mine.file == item.file
        # a third user: not a recipient, and the stored bytes do not open for her key
        carol = box(fed, "carol@b.test")
        with pytest.raises(Forbidden, match="not a recipient"):
            carol.authorize(item.ref)
        bobs_copy = bob.list(newest(bob)).message
        with pytest.raises(SignatureInvalid, match="not encrypted for any of your"):
            open_sealed(bobs_copy, carol_key, directory)
        stolen = tmp_path / "stolen.bin"
        stolen.write_bytes(blob_path(fed.a, item.ref.guid).read_bytes())
        with pytest.raises(SignatureInvalid, match="altered"):
            decrypt_file(stolen, tmp_path / "guess", os.urandom(32), name="x", size=len(plain))
        assert not (tmp_path / "guess").exists()
        assert open_sealed(bobs_copy, bob_key, directory).attachments == (item.file,)
    key64 = base64.b64encode(item.file.key)
    secrets = [SUBJECT.encode(), BODY.encode(), FILE_NAME.encode(), b"okapi", MARKER, key64]
    secrets += [plain[:64], plain[CHUNK : CHUNK + 64], plain[-64:]]
    assert any(b"Deliver" in d for d in wire)
    for secret in secrets:
        assert secret not in b"".join(wire)
        assert secret not in server_bytes(fed.a)
        assert secret not in server_bytes(fed.b)
    assert hashlib.sha256(blob_path(fed.a, item.ref.guid).read_bytes()).hexdigest() == (
        item.ref.sha256
    )
    assert not list((fed.b.config.data_dir / "attachments" / "blobs").iterdir())


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_altered_cut_or_reordered_ciphertext_is_refused_leaving_nothing(
    fed: Fed, tmp_path: Path
) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    source = tmp_path / FILE_NAME
    plain = secret_file(source)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with fed.directory() as directory:
        send_file(fed, alice_key, source, directory)
        item = received(fed, directory, bob_key)
    bob = box(fed, "bob@b.test")
    blob = blob_path(fed.a, item.ref.guid)
    original = blob.read_bytes()
    # altered on the sending server: the signed SHA-256 of the ciphertext refuses it
    blob.write_bytes(original[:5000] + bytes([original[5000] ^ 1]) + original[5001:])
    with pytest.raises(SignatureInvalid, match="differ from the signed reference"):
        fetch_encrypted(bob, item, downloads / FILE_NAME)
    assert _leftovers(downloads) == []
    # a server reference that is not the sealed one (other ciphertext, re-signed)
    from wsemail.client.usercerts.attachments import pair
    from wsemail.client.usercerts.sealed import Opened

    forged = dataclasses.replace(item.ref, sha256=hashlib.sha256(b"other").hexdigest())
    opened = Opened("", "", True, "alice@a.test", (item.file,))
    with pytest.raises(SignatureInvalid, match="not the sealed one"):
        pair([forged], opened)
    with pytest.raises(SignatureInvalid, match="no reference"):
        pair([], opened)
    # the server still serves the genuine bytes
    blob.write_bytes(original)
    assert fetch_encrypted(bob, item, downloads / FILE_NAME).read_bytes() == plain
    (downloads / FILE_NAME).unlink()
    # the chunk format itself, for ciphertext that passed any digest check
    first = HEADER.size
    size = CHUNK + TAG
    chunks = [original[first + i * size : first + (i + 1) * size] for i in range(3)]
    header = original[:first]
    altered = bytearray(original)
    altered[first + size + 100] ^= 0x40
    variants = {
        "altered chunk": bytes(altered),
        "cut at a chunk boundary": header + chunks[0] + chunks[1],
        "cut inside a chunk": original[:-1000],
        "swapped chunks": header + chunks[1] + chunks[0] + chunks[2],
        "chunk repeated": header + chunks[0] + chunks[0] + chunks[1] + chunks[2],
        "extended": original + chunks[2],
        "header only": header,
    }
    for label, data in variants.items():
        bad = downloads / "cipher.bin"
        bad.write_bytes(data)
        with pytest.raises(SignatureInvalid, match=f"{FILE_NAME}: chunk .* altered") as caught:
            decrypt_file(bad, downloads / FILE_NAME, item.file.key, name=FILE_NAME, size=len(plain))
        assert "moved or cut off" in str(caught.value), label
        bad.unlink()
        assert _leftovers(downloads) == [], label
    wrong_header = downloads / "cipher.bin"
    wrong_header.write_bytes(b"x" * 10)
    with pytest.raises(SignatureInvalid, match="cut short"):
        decrypt_file(wrong_header, downloads / "out", item.file.key, name=FILE_NAME, size=0)
    assert _leftovers(downloads) == ["cipher.bin"]
    assert fed.b.client("bob@b.test").list_headers().headers


def test_a_recipient_without_a_certificate_stops_encrypted_files_before_upload(
    fed: Fed, tmp_path: Path
) -> None:
    alice_key = fed.key("alice@a.test")
    fed.key("bob@b.test")
    source = tmp_path / FILE_NAME
    secret_file(source, 1000)
    before = fed.a.stored()
    with fed.directory() as directory, pytest.raises(UsageError, match="carol@b.test"):
        send_encrypted(
            fed.client("alice@a.test"),
            alice_key,
            directory,
            ["bob@b.test", "carol@b.test"],
            SUBJECT,
            BODY,
            attachments=[source],
        )
    with fed.directory() as directory, pytest.raises(UsageError, match="not a readable file"):
        send_encrypted(
            fed.client("alice@a.test"),
            alice_key,
            directory,
            ["bob@b.test"],
            attachments=[tmp_path / "missing.pdf"],
        )
    odd = tmp_path / "bell\x07.txt"
    odd.write_bytes(b"ding")
    with fed.directory() as directory, pytest.raises(UsageError, match="not a usable file name"):
        send_encrypted(
            fed.client("alice@a.test"), alice_key, directory, ["bob@b.test"], attachments=[odd]
        )
    assert fed.a.stored()[0] == before[0]
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == 0
    assert not list((fed.a.config.data_dir / "attachments" / "blobs").iterdir())
    assert fed.a.count("SELECT count(*) FROM queue") == 0
    fed.client("alice@a.test").list_headers()


def test_cli_send_encrypt_attach_list_fetch_on_a_second_device(fed: Fed, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from wsemail.cli import attachments, keys, mail

    app = typer.Typer()
    mail.register(app)
    keys.register(app)
    attachments.register(app)
    runner = CliRunner()

    def run(user: str, *args: str, ok: bool = True, extra: dict[str, str] | None = None) -> str:
        running = fed.running(user)
        env = {
            "WSEMAIL_SERVER": running.url,
            "WSEMAIL_USER": user,
            "WSEMAIL_PASSWORD": "correct horse battery",
            "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
            "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
            "WSEMAIL_TLS_NAME": running.config.domain,
            "WSEMAIL_EXPORT_PASSPHRASE": "export secret",
            "WSEMAIL_DIRECTORY_ROUTES": ",".join(f"{d}={r.url}" for d, r in fed.servers.items()),
            **(extra or {}),
        }
        result = runner.invoke(app, list(args), env=env)
        assert (result.exit_code == 0) is ok, (result.output, result.exception)
        if not ok:  # `wsemail` prints a WsemailError as one line and exits non-zero
            assert isinstance(result.exception, WsemailError), result.exception
            return str(result.exception)
        return result.output

    source = tmp_path / FILE_NAME
    plain = secret_file(source, 300_000)
    run("alice@a.test", "keys", "create")
    run("bob@b.test", "keys", "create")
    help_text = run("alice@a.test", "send", "--help", extra={"COLUMNS": "300"})
    assert "always left on your server on demand" in help_text
    run(
        "alice@a.test",
        "send",
        "--to",
        "bob@b.test",
        "-s",
        SUBJECT,
        "--body",
        BODY,
        "--encrypt",
        "--attach",
        str(source),
        ok=True,
    )
    bob = fed.client("bob@b.test")
    wait_for(lambda: bob.list_headers().headers, "bob's copy")
    message_id = bob.list_headers().headers[0].id
    listed = run("bob@b.test", "attachments", message_id)
    assert FILE_NAME in listed and "[encrypted" in listed
    [row] = [
        json.loads(line)
        for line in run("bob@b.test", "attachments", message_id, "--json").splitlines()
    ]
    assert (row["name"], row["size"], row["encrypted"]) == (FILE_NAME, len(plain), True)
    got = json.loads(run("bob@b.test", "retrieve", "--json", message_id))
    assert got["e2e"]["attachments"] == [
        {"name": FILE_NAME, "size": len(plain), "media_type": "application/pdf"}
    ]
    # a second device: bob's key exported, imported elsewhere, the file fetched there
    exported = tmp_path / "bob.key"
    run("bob@b.test", "keys", "export", "-o", str(exported))
    laptop = {"WSEMAIL_KEYS_DIR": str(tmp_path / "laptop"), "WSEMAIL_KEY_PASSPHRASE": "lap"}
    failed = run("bob@b.test", "fetch", message_id, "-o", str(tmp_path), ok=False, extra=laptop)
    assert "no key on this device" in failed
    run("bob@b.test", "keys", "import", str(exported), extra=laptop)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    fetched = run("bob@b.test", "fetch", message_id, "-o", str(downloads), extra=laptop)
    assert "decrypted" in fetched
    assert (downloads / FILE_NAME).read_bytes() == plain
    assert _leftovers(downloads) == [FILE_NAME]
    # the sender sees who fetched it and revokes it, by its sealed name
    sent_id = fed.client("alice@a.test").list_headers("sent").headers[0].id
    audit = run("alice@a.test", "attachments", sent_id, "--audit")
    assert FILE_NAME in audit and "bob@b.test" in audit and "download" in audit
    assert FILE_NAME in run("alice@a.test", "attachments", sent_id, "--revoke", FILE_NAME)
    again = run("bob@b.test", "fetch", message_id, "-o", str(downloads / "again"), ok=False)
    assert "revoked" in again
    assert _leftovers(downloads) == [FILE_NAME]
    # no key for carol anywhere: the sender is told before anything is uploaded
    blobs = fed.a.count("SELECT count(*) FROM attachment_blobs")
    refused = run(
        "alice@a.test",
        "send",
        "--to",
        "carol@b.test",
        "--encrypt",
        "--attach",
        str(source),
        "--body",
        BODY,
        ok=False,
    )
    assert "carol@b.test" in refused and "nothing was sent" in refused
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == blobs


@pytest.mark.both_stores
def test_unsigned_encrypted_mail_with_files_opens_across_and_within_a_domain(
    fed: Fed, tmp_path: Path
) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    carol_key = fed.key("carol@a.test")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    source = tmp_path / FILE_NAME
    plain = secret_file(source, CHUNK)  # exactly one full chunk
    with fed.directory() as directory:
        send_encrypted(
            fed.client("alice@a.test"),
            alice_key,
            directory,
            ["bob@b.test"],
            SUBJECT,
            BODY,
            cc=["carol@a.test"],
            sign=False,
            attachments=[source, empty],
        )
        bob = box(fed, "bob@b.test")
        listing = bob.list(newest(bob))
        opened = open_sealed(listing.message, bob_key, directory)
        assert (opened.signed, opened.signer, opened.body) == (False, None, BODY)
        items = open_listing(listing, bob_key, directory)
    assert [(i.name, i.size, i.ref.name) for i in items] == [
        (FILE_NAME, CHUNK, "encrypted-1.bin"),
        ("empty.txt", 0, "encrypted-2.bin"),
    ]
    assert fetch_encrypted(bob, items[0], tmp_path / "one").read_bytes() == plain
    assert fetch_encrypted(bob, items[1], tmp_path / "two").read_bytes() == b""
    # carol reads on the sender's own server: references from its List, same checks
    carol = box(fed, "carol@a.test")
    with fed.directory() as directory:
        listing = carol.list(newest(carol))
        assert listing.provenance.status != "verified"
        mine = open_listing(listing, carol_key, directory)
    assert [i.file for i in mine] == [i.file for i in items]
    assert fetch_encrypted(carol, mine[0], tmp_path / "three").read_bytes() == plain


@pytest.mark.both_stores
def test_a_broken_encrypted_download_resumes(fed: Fed, tmp_path: Path) -> None:
    alice_key, bob_key = fed.key("alice@a.test"), fed.key("bob@b.test")
    source = tmp_path / FILE_NAME
    plain = secret_file(source)
    with fed.directory() as directory:
        send_file(fed, alice_key, source, directory)
        item = received(fed, directory, bob_key)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    # what a download cut off after 1.5 chunks leaves: ciphertext only, never plaintext
    half = blob_bytes(fed.a, item.ref.guid)[: CHUNK + CHUNK // 2]
    (downloads / f"{FILE_NAME}.encrypted.part").write_bytes(half)
    bob = box(fed, "bob@b.test")
    seen: list[int] = []
    out = fetch_encrypted(bob, item, downloads / FILE_NAME, progress=lambda d, t: seen.append(d))
    assert out.read_bytes() == plain
    assert seen[0] > len(half) and seen[-1] == item.ref.size  # only the rest was fetched
    assert _leftovers(downloads) == [FILE_NAME]
