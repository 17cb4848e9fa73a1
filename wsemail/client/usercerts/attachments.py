"""In charge of encrypted on-demand attachments (Send Encrypted with files).

The sender's client encrypts each file with a fresh AES-256-GCM key (`filecrypt`) while
streaming it to its own server, which stores the ciphertext under a neutral name
("encrypted-1.bin") and binds it to the message's recipients like any on-demand attachment.
The real name, media type and size and the content key travel only inside the sealed
message (`SealedFile`). The recipient's client pairs each sealed description with the
reference its sending server signed (same GUID, same ciphertext size and SHA-256), fetches
the ciphertext with the ordinary federated fetch, and decrypts it chunk by chunk.

The SHA-256 in the reference is the ciphertext's: the servers compute and sign it as for
any attachment, the fetch checks it (and resumes a broken download) without a key, and the
sender's signed, sealed copy of the same digest stops the sending server from substituting
other ciphertext. Plaintext integrity comes from the per-chunk tags and the final-chunk
flag; a plaintext digest in a reference that servers see would let them confirm a guessed
file.
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from wsemail.client.attachments import Attachments, Listing, Progress
from wsemail.client.usercerts.directory import Directory
from wsemail.client.usercerts.filecrypt import (
    SealedFile,
    decrypt_file,
    encrypt_stream,
    encrypted_size,
    new_key,
)
from wsemail.client.usercerts.keystore import UserKey
from wsemail.client.usercerts.sealed import Opened, open_sealed
from wsemail.protocol.errors import SignatureInvalid, UsageError
from wsemail.protocol.message import AttachmentRef

UPLOAD_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class EncryptedAttachment:
    """One encrypted attachment of a received message: the server-signed reference to the
    ciphertext and the sealed description that opens it."""

    ref: AttachmentRef
    file: SealedFile

    @property
    def name(self) -> str:
        return self.file.name

    @property
    def size(self) -> int:
        return self.file.size

    @property
    def media_type(self) -> str:
        return self.file.media_type

    def as_dict(self) -> dict[str, object]:
        return {
            **self.file.as_dict(),
            "server": self.ref.server,
            "guid": self.ref.guid,
            "encrypted": True,
        }


def upload_encrypted(
    box: Attachments, path: Path, *, index: int = 1, progress: Progress | None = None
) -> SealedFile:
    """Encrypt `path` under a fresh key while streaming it to the own server; `progress`
    hears (bytes of the file done, its size)."""
    try:
        if not path.is_file():
            raise UsageError(f"cannot attach {path}: not a file")
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    key = new_key()

    def pieces() -> Iterator[bytes]:
        try:
            with open(path, "rb") as handle:
                yield from encrypt_stream(handle, key)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc}") from exc

    cipher_size = encrypted_size(size)

    def plain_progress(done: int, _total: int) -> None:  # in bytes of the file, not cipher
        if progress is not None:
            progress(min(size, done * size // cipher_size), size)

    uploaded = box.upload_stream(
        pieces(), cipher_size, f"encrypted-{index}.bin", UPLOAD_MEDIA_TYPE, progress=plain_progress
    )
    return SealedFile(
        guid=uploaded.guid,
        name=path.name,
        media_type=mimetypes.guess_type(path.name)[0] or UPLOAD_MEDIA_TYPE,
        size=size,
        cipher_size=cipher_size,
        cipher_sha256=uploaded.sha256,
        key=key,
    )


def pair(refs: Sequence[AttachmentRef], opened: Opened) -> list[EncryptedAttachment]:
    """Each sealed attachment with the reference to its ciphertext. References the sealed
    content does not name (none are sent with encrypted mail) are left out."""
    by_guid = {ref.guid: ref for ref in refs}
    paired = []
    for sealed in opened.attachments:
        ref = by_guid.get(sealed.guid)
        if ref is None:
            raise SignatureInvalid(f"{sealed.name}: the message holds no reference to it")
        if ref.size != sealed.cipher_size or ref.sha256.lower() != sealed.cipher_sha256:
            raise SignatureInvalid(f"{sealed.name}: the server's reference is not the sealed one")
        paired.append(EncryptedAttachment(ref, sealed))
    return paired


def open_listing(
    listing: Listing, own: UserKey | None, directory: Directory | None
) -> list[EncryptedAttachment]:
    """The encrypted attachments of a listed sealed message, opened with the own key."""
    if own is None:
        raise UsageError("no key on this device to open this message's attachments")
    return pair(listing.refs, open_sealed(listing.message, own, directory))


def fetch_encrypted(
    box: Attachments, item: EncryptedAttachment, dest: Path, *, progress: Progress | None = None
) -> Path:
    """Fetch the ciphertext beside `dest` (checked against the signed SHA-256; a broken
    download resumes), then decrypt it into `dest`. On any refusal `dest` is not written
    and no ciphertext or plaintext is left behind."""
    cipher = dest.with_name(dest.name + ".encrypted")
    box.fetch(item.ref, cipher, progress=progress)
    try:
        return decrypt_file(cipher, dest, item.file.key, name=item.name, size=item.size)
    finally:
        cipher.unlink(missing_ok=True)
