"""Issue 24: attachment names become file names cut by UTF-8 bytes (255, less the room a
download's own suffixes need), never by characters: `wsemail fetch` of an attachment named
with 255 four-byte characters (as another server may send it) writes the file; BeginUpload
refuses a name longer than 255 bytes with nothing stored."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_attachments import Fed, fed, file_sha, make_file, newest  # noqa: F401  (fed: a fixture)

from wsemail.client.attachments import safe_file_name
from wsemail.protocol.errors import RequestInvalid
from wsemail.server.smtp.mime import safe_name

from conftest import PASSWORD, wsemail_binary

WIDE = "\U0001d49c" * 255  # 255 characters, 1,020 bytes


def test_names_are_cut_by_bytes_keeping_a_short_extension() -> None:
    cut = safe_file_name(WIDE + ".pdf")
    assert len(cut.encode()) <= 240 and cut.endswith(".pdf") and cut.startswith("\U0001d49c")
    assert len(safe_file_name(WIDE).encode()) <= 240
    assert safe_file_name("é" * 100) == "é" * 100  # 200 bytes: kept whole
    assert len(safe_name(WIDE).encode()) <= 255  # the SMTP gateway's MIME file names


def test_fetch_writes_an_attachment_named_with_255_four_byte_characters(
    fed: Fed,  # noqa: F811
    tmp_path: Path,
) -> None:
    source = tmp_path / "plain.bin"
    expected = make_file(source, 10_000)
    alice = fed.box(fed.a, "alice@a.test")
    uploaded = alice.upload(source)
    # as a server that cuts by characters would name it
    fed.a.controller.server.store.transact_sync(
        lambda tx: tx.conn.execute(
            "UPDATE attachment_blobs SET name=? WHERE guid=?", (WIDE, uploaded.guid)
        )
    )
    alice.client.send(["bob@b.test"], "wide", "see attached", attachments=[uploaded.guid])
    message = newest(fed.b.client("bob@b.test"))
    out = tmp_path / "got"
    out.mkdir()
    env = {
        "WSEMAIL_SERVER": fed.b.url,
        "WSEMAIL_USER": "bob@b.test",
        "WSEMAIL_PASSWORD": PASSWORD,
        "WSEMAIL_CACERT": str(fed.ca / "root.pem"),
        "WSEMAIL_TRUST_ROOTS": str(fed.ca / "root.pem"),
        "WSEMAIL_TLS_NAME": "b.test",
        "WSEMAIL_CLIENT_CONFIG": str(tmp_path / "client.toml"),
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [wsemail_binary(), "fetch", message, "-o", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    [written] = list(out.iterdir())
    assert len(written.name.encode()) <= 255 and written.name.startswith("\U0001d49c")
    assert file_sha(written) == expected


def test_begin_upload_refuses_a_name_over_255_bytes(fed: Fed, tmp_path: Path) -> None:  # noqa: F811
    source = tmp_path / "plain.txt"
    source.write_bytes(b"hello")
    alice = fed.box(fed.a, "alice@a.test")
    before = fed.a.count("SELECT count(*) FROM attachment_blobs")
    with pytest.raises(RequestInvalid, match="plain file name"):
        alice.upload(source, name="\U0001d49c" * 64)  # 64 characters, 256 bytes
    assert fed.a.count("SELECT count(*) FROM attachment_blobs") == before
    assert alice.upload(source, name="\U0001d49c" * 63).size == 5  # 252 bytes; still serving
