"""In charge of moving mail between one's mailbox and files, with the standard library's
`mailbox` module: export to an mbox file or a maildir, import from either.

Export writes each message as RFC 5322 text: From, To, Cc, Subject, Date, Message-ID,
In-Reply-To and References (when it has them), the body as UTF-8 text (quoted-printable,
or base64 where an mbox would change it), and `X-Wsemail-Folder`, `X-Wsemail-Provenance`
(what the reader's check said) and one `X-Wsemail-Attachment` per on-demand attachment
(described: the bytes stay on the sender's server). Flags: seen, flagged, answered as mbox
`Status: RO` / `X-Status: F A` and as maildir info flags S, F, R (unseen and unflagged
messages go to `new/`). All folders go to one mbox (each message names its folder), or to
a Maildir++ tree: inbox at the top, every other folder as a `.NAME` sub-maildir.
End-to-end encrypted bodies are exported as they are stored (ciphertext).

Import reads an mbox file or the top of a maildir (not its sub-maildirs), checks the whole
input before anything is sent (not an mbox, no such maildir, a message too large for a
request: one error, nothing stored) and sends the messages with their flags in batches to
`ImportMessages`, which parses them on the server and marks them imported: never signed by
anyone, whatever their headers say.
"""

from __future__ import annotations

import base64
import email.policy
import email.utils
import mailbox
import os
import quopri
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

from lxml import etree

from wsemail.client.mail import Client
from wsemail.protocol.errors import UsageError
from wsemail.protocol.message import Message
from wsemail.protocol.soap import element, parse_int, q, text_of

MAX_MESSAGE_BYTES = 3 << 20  # what one import request carries (base64, under 4 MiB)
BATCH_BYTES = 1 << 20
BATCH_MESSAGES = 200
INBOX = "inbox"
ISO = "%Y-%m-%dT%H:%M:%SZ"


# export ---------------------------------------------------------------------------------
def _body_part(mime: EmailMessage, body: str) -> None:
    """The text exactly as stored: quoted-printable when an mbox keeps it as it is (ends with
    a line end, no line starting "From ", no CR), else base64."""
    data = body.encode("utf-8")
    lines = body.split("\n")
    plain = (not body or body.endswith("\n")) and "\r" not in body
    if plain and not any(line.startswith("From ") for line in lines):
        cte, payload = "quoted-printable", quopri.encodestring(data).decode("ascii")
    else:
        cte, payload = "base64", base64.encodebytes(data).decode("ascii")
    mime["MIME-Version"] = "1.0"
    mime["Content-Type"] = 'text/plain; charset="utf-8"'
    mime["Content-Transfer-Encoding"] = cte
    mime.set_payload(payload)


def to_email(message: Message, folder: str, provenance: str = "") -> EmailMessage:
    """A stored message as an RFC 5322 message (see the module doc)."""
    mime = EmailMessage(policy=email.policy.default)
    if message.sender:
        mime["From"] = message.sender
    if message.to:
        mime["To"] = ", ".join(message.to)
    if message.cc:
        mime["Cc"] = ", ".join(message.cc)
    mime["Subject"] = message.subject
    try:
        when = datetime.strptime(message.date, ISO).replace(tzinfo=UTC)
        mime["Date"] = email.utils.format_datetime(when)
    except ValueError:
        pass
    if message.message_id:
        mime["Message-ID"] = message.message_id
    if message.in_reply_to:  # its conversation (an import threads it again)
        mime["In-Reply-To"] = message.in_reply_to
    if message.references:
        mime["References"] = " ".join(message.references)
    mime["X-Wsemail-Folder"] = folder
    if provenance:
        mime["X-Wsemail-Provenance"] = provenance
    for ref in message.attachments:
        mime["X-Wsemail-Attachment"] = (
            f"{ref.name}; size={ref.size}; type={ref.media_type}; server={ref.server}; "
            f"guid={ref.guid}; sha256={ref.sha256}"
        )
    _body_part(mime, message.body)
    return mime


def _mbox_flags(message: Message) -> str:
    return (
        ("RO" if message.seen else "")
        + ("F" if message.flagged else "")
        + ("A" if message.answered else "")
    )


def _maildir_message(mime: EmailMessage, message: Message) -> mailbox.MaildirMessage:
    found = mailbox.MaildirMessage(mime)
    flags = ("S" if message.seen else "") + ("F" if message.flagged else "")
    flags += "R" if message.answered else ""
    found.set_subdir("cur" if flags else "new")
    found.set_flags(flags)
    try:
        found.set_date(datetime.strptime(message.date, ISO).replace(tzinfo=UTC).timestamp())
    except ValueError:
        pass
    return found


def _fresh(path: Path, kind: str) -> None:
    """An export never writes over what is there."""
    if kind == "mbox" and (path.exists() or path.is_symlink()):
        raise UsageError(f"{path} exists: export to a new file")
    if kind == "maildir" and path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(f"{path} exists and is not an empty directory: export to a new one")


@dataclass(frozen=True)
class Exported:
    messages: int
    folders: list[str]


Verifier = Callable[[Message], tuple[str, Message]]  # message -> (provenance, message shown)


def export(
    client: Client,
    path: Path,
    kind: str,
    folder: str | None = None,
    *,
    verify: Verifier | None = None,
    progress: Callable[[int], None] | None = None,
) -> Exported:
    """Write one folder (or all) to an mbox file or a maildir at `path`, oldest first per
    folder. `verify` gives each message's provenance line (default: the client's check)."""
    if kind not in ("mbox", "maildir"):
        raise UsageError(f"unknown export format {kind!r}")
    _fresh(path, kind)
    if folder is not None:
        client.list_headers(folder, limit=1)  # NotFound before anything is written
    names = [folder] if folder is not None else [f.name for f in client.folders()]
    check = verify or (lambda m: _checked(client, m))
    part = path.with_name(f".{path.name}.part") if kind == "mbox" else None
    made = kind == "maildir" and not path.exists()
    count = 0
    done: list[str] = []
    finished = False
    try:
        if kind == "mbox":
            assert part is not None
            part.unlink(missing_ok=True)
            mbox = mailbox.mbox(part, create=True)
            mbox.lock()
        else:
            root = mailbox.Maildir(path, create=True)
        for name in names:
            headers = list(client.iter_headers(name))
            headers.reverse()
            if kind == "maildir":
                target = root if name.casefold() == INBOX else root.add_folder(name)
            for header in headers:
                message = client.retrieve(header.id, peek=True)
                proof, shown = check(message)
                shown.seen, shown.flagged, shown.answered = (
                    header.seen,
                    header.flagged,
                    header.answered,
                )
                mime = to_email(shown, name, proof)
                if kind == "mbox":
                    item = mailbox.mboxMessage(mime)
                    item.set_flags(_mbox_flags(shown))
                    mbox.add(item)
                else:
                    target.add(_maildir_message(mime, shown))
                count += 1
                if progress is not None:
                    progress(count)
            done.append(name)
        if kind == "mbox":
            mbox.flush()
            mbox.unlock()
            mbox.close()
            assert part is not None
            os.replace(part, path)
        finished = True
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc
    finally:
        if part is not None:
            part.unlink(missing_ok=True)
        if made and not finished:  # no half-written maildir left behind
            shutil.rmtree(path, ignore_errors=True)
    return Exported(count, done)


def _checked(client: Client, message: Message) -> tuple[str, Message]:
    proof, shown = client.verify(message)
    return str(proof), shown if proof.status != "failed" else message


# import ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class Item:
    """One message read from a file: its bytes and flags; `where` names it in errors."""

    raw: bytes
    seen: bool
    flagged: bool
    answered: bool
    where: str


def _mbox_items(path: Path) -> Iterator[Item]:
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if not path.is_file():
        raise UsageError(f"{path} is not an mbox file")
    try:
        with path.open("rb") as handle:
            start = handle.read(5)
        if start and start != b"From ":
            raise UsageError(f"{path} is not an mbox file (it must begin with a 'From ' line)")
        box = mailbox.mbox(path, create=False)
        try:
            for number, key in enumerate(box.keys(), 1):
                flags = box.get_message(key).get_flags()
                yield Item(
                    box.get_bytes(key),
                    "R" in flags,
                    "F" in flags,
                    "A" in flags,
                    f"message {number} of {path}",
                )
        finally:
            box.close()
    except (OSError, mailbox.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def _maildir_items(path: Path) -> Iterator[Item]:
    if not path.exists():
        raise UsageError(f"no such maildir: {path}")
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise UsageError(f"{path} is not a maildir (it needs cur/ and new/)")
    try:
        box = mailbox.Maildir(path, factory=None, create=False)
        found = [(box.get_message(key), key) for key in box.keys()]
        found.sort(key=lambda pair: (pair[0].get_date(), pair[1]))
        for message, key in found:
            flags = message.get_flags()
            yield Item(box.get_bytes(key), "S" in flags, "F" in flags, "R" in flags, str(key))
    except (OSError, mailbox.Error) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc


def read_items(path: Path, kind: str) -> list[Item]:
    """Every message of an mbox file or of the top of a maildir, checked before any is
    sent: UsageError for input that is not one, or a message too large to import."""
    if kind not in ("mbox", "maildir"):
        raise UsageError(f"unknown import format {kind!r}")
    items = list(_mbox_items(path) if kind == "mbox" else _maildir_items(path))
    for item in items:
        if len(item.raw) > MAX_MESSAGE_BYTES:
            raise UsageError(
                f"{item.where} is {len(item.raw)} bytes: more than an import request carries "
                f"({MAX_MESSAGE_BYTES}); nothing imported"
            )
    return items


def sub_maildirs(path: Path) -> list[str]:
    """The Maildir++ sub-maildirs of `path` (an import takes only the top)."""
    return sorted(
        p.name[1:] for p in path.iterdir() if p.name.startswith(".") and (p / "cur").is_dir()
    )


@dataclass(frozen=True)
class Imported:
    folder: str
    imported: int
    duplicates: int


def import_batch(client: Client, folder: str, items: list[Item]) -> Imported:
    """One `ImportMessages` request: all of `items` stored, or none."""
    op = etree.Element(q("ImportMessages"))
    element(op, "Folder", folder)
    for item in items:
        node = element(op, "Message", base64.b64encode(item.raw).decode("ascii"))
        for name, value in (("Seen", item.seen), ("Flagged", item.flagged)):
            node.set(name, "true" if value else "false")
        node.set("Answered", "true" if item.answered else "false")
    answer = client.call(op, idempotent=True)  # a repeat finds the duplicates
    return Imported(
        text_of(answer, "Folder", folder) or folder,
        parse_int(text_of(answer, "Imported", "0"), "Imported", 0, 2**31),
        parse_int(text_of(answer, "Duplicates", "0"), "Duplicates", 0, 2**31),
    )


def batches(items: list[Item]) -> Iterator[list[Item]]:
    batch: list[Item] = []
    size = 0
    for item in items:
        if batch and (size + len(item.raw) > BATCH_BYTES or len(batch) >= BATCH_MESSAGES):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += len(item.raw)
    if batch:
        yield batch


def import_items(
    client: Client,
    folder: str,
    items: list[Item],
    *,
    progress: Callable[[Imported], None] | None = None,
) -> Imported:
    """Send `items` to `folder` in batches; the totals. A refusal stops at its batch (the
    batches before it stay imported; running the import again skips them as duplicates)."""
    imported = duplicates = 0
    name = folder
    for batch in batches(items):
        done = import_batch(client, folder, batch)
        name = done.folder
        imported += done.imported
        duplicates += done.duplicates
        if progress is not None:
            progress(Imported(name, imported, duplicates))
    return Imported(name, imported, duplicates)
