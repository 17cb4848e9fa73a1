"""Modified UTF-7 (RFC 3501 §5.1.3), the encoding of IMAP folder names, decoded strictly:
an unterminated or empty shift, bad base64, an odd number of bytes, an unpaired surrogate,
or a printable ASCII character written shifted is an error (`ValueError`)."""

from __future__ import annotations

import base64
import binascii


def encode(name: str) -> str:
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            data = "".join(pending).encode("utf-16-be")
            out.append(
                "&" + base64.b64encode(data).decode("ascii").rstrip("=").replace("/", ",") + "-"
            )
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(text: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if not 0x20 <= ord(char) <= 0x7E:
            raise ValueError("a folder name on the wire is printable ASCII")
        if char != "&":
            out.append(char)
            i += 1
            continue
        end = text.find("-", i + 1)
        if end < 0:
            raise ValueError("unterminated &-shift in a folder name")
        chunk = text[i + 1 : end]
        i = end + 1
        if not chunk:
            out.append("&")
            continue
        if any(c not in _B64 for c in chunk) or len(chunk) % 4 == 1:
            raise ValueError("bad modified base64 in a folder name")
        padded = chunk.replace(",", "/") + "=" * (-len(chunk) % 4)
        try:
            data = base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("bad modified base64 in a folder name") from exc
        if len(data) % 2:
            raise ValueError("odd UTF-16 in a folder name")
        try:
            decoded = data.decode("utf-16-be")
        except UnicodeDecodeError as exc:
            raise ValueError("bad UTF-16 in a folder name") from exc
        if any(0x20 <= ord(c) <= 0x7E for c in decoded):
            raise ValueError("printable ASCII must not be shifted in a folder name")
        if encode(decoded)[1:-1] != chunk:
            raise ValueError("non-canonical modified UTF-7 in a folder name")
        out.append(decoded)
    return "".join(out)


_B64 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
