"""In charge of encrypting files for end-to-end attachments: a chunked AES-256-GCM format
that is written and read as a stream (constant memory for any file size), and the
description of one encrypted file (`SealedFile`) that travels inside the sealed content.

    header   "wsemail-file-v1\\0" (16 bytes) ‖ chunk size (4 bytes, big-endian)
    chunk i  AES-256-GCM(key, nonce = i as 11 bytes ‖ final flag, plaintext_i, aad = header)

Every chunk holds `chunk size` bytes of plaintext except the final one (0 … chunk size
bytes; an empty file is one empty final chunk). The counter in the nonce refuses reordered
or swapped chunks, the final flag refuses a file cut at a chunk boundary or extended after
its end, and the tag refuses any changed byte. The key is fresh for every file, so counter
nonces never repeat under one key. Every failure is one `SignatureInvalid` naming the file,
and no plaintext is left behind.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from wsemail.protocol.errors import SignatureInvalid, UsageError

MAGIC = b"wsemail-file-v1\x00"
HEADER = struct.Struct(">16sI")
CHUNK = 1 << 20
TAG = 16
MAX_CHUNK = 16 << 20


@dataclass(frozen=True)
class SealedFile:
    """What a recipient needs to fetch and open one encrypted attachment: the server's
    GUID, the real name, media type and size, the ciphertext's size and SHA-256, and the
    content key (only ever inside the encrypted message)."""

    guid: str
    name: str
    media_type: str
    size: int
    cipher_size: int
    cipher_sha256: str
    key: bytes = field(repr=False)

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "size": self.size, "media_type": self.media_type}


def new_key() -> bytes:
    return AESGCM.generate_key(bit_length=256)


def encrypted_size(size: int, chunk: int = CHUNK) -> int:
    """The ciphertext length of a `size`-byte file."""
    chunks = max(1, -(-size // chunk))
    return HEADER.size + size + TAG * chunks


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def encrypt_stream(source: BinaryIO, key: bytes, chunk: int = CHUNK) -> Iterator[bytes]:
    """The encrypted file, piece by piece (the header first, then one piece per chunk)."""
    header = HEADER.pack(MAGIC, chunk)
    aead = AESGCM(key)
    yield header
    index = 0
    current = source.read(chunk)
    while True:
        following = source.read(chunk) if len(current) == chunk else b""
        final = not following
        yield aead.encrypt(_nonce(index, final), current, header)
        if final:
            return
        current, index = following, index + 1


def _read_exact(source: BinaryIO, count: int) -> bytes:
    data = source.read(count)
    while len(data) < count:
        more = source.read(count - len(data))
        if not more:
            break
        data += more
    return data


def decrypt_stream(source: BinaryIO, out: BinaryIO, key: bytes, name: str) -> int:
    """Decrypt `source` into `out`; returns the plaintext size. The caller discards `out`
    when this raises."""
    header = _read_exact(source, HEADER.size)
    if len(header) != HEADER.size:
        raise SignatureInvalid(f"{name}: the encrypted file is cut short")
    magic, chunk = HEADER.unpack(header)
    if magic != MAGIC or not 0 < chunk <= MAX_CHUNK:
        raise SignatureInvalid(f"{name}: not a wsemail encrypted file")
    aead = AESGCM(key)
    size = TAG + chunk
    index, total = 0, 0
    current = _read_exact(source, size)
    while True:
        following = _read_exact(source, size) if len(current) == size else b""
        final = not following
        try:
            plain = aead.decrypt(_nonce(index, final), current, header)
        except InvalidTag as exc:
            raise SignatureInvalid(
                f"{name}: chunk {index} of the encrypted file was altered, moved or cut off"
            ) from exc
        out.write(plain)
        total += len(plain)
        if final:
            return total
        current, index = following, index + 1


def decrypt_file(source: Path, dest: Path, key: bytes, *, name: str, size: int) -> Path:
    """Decrypt `source` to `dest` through a temporary file beside it; `dest` appears only
    if every chunk authenticated and the plaintext has the sealed `size`."""
    tmp = dest.with_name(dest.name + ".decrypting")
    try:
        with open(source, "rb") as handle, open(tmp, "wb") as out:
            got = decrypt_stream(handle, out, key, name)
        if got != size:
            raise SignatureInvalid(f"{name}: {got} bytes decrypted, the sender sealed {size}")
        os.replace(tmp, dest)
    except OSError as exc:
        raise UsageError(f"cannot write {dest}: {exc}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return dest
