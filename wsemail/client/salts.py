"""In charge of beginning a session's key derivation before the server has told the salt.

A client's session key is scrypt(password, salt) (`wsemail.protocol.auth`, some 50 ms of
CPU) and the salt is the server's: one after the other, a new session connects, asks for the
salt (GetSalt), and only then derives the key for its first request. A salt is no secret —
the server tells it to anyone who asks — so `SaltMemory` keeps the salt each account had in
its last session, and `KeyAhead` derives the key from it in a thread of its own (scrypt lets
go of the GIL) while the client connects and asks. The salt is still fetched before the
first authenticated request, and a key begun from a remembered salt is used only when the
server gave that same salt; a new password brings a new salt, and the key is then derived
afresh (and the new salt remembered once the server has accepted it).

The terminal client passes `SaltMemory.default()` to its `Client` (`wsemail.tui.signin`).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import secrets
import threading
from pathlib import Path

from wsemail.protocol.auth import derive_key

KEEP = 16  # accounts remembered (server and address), the latest first


class KeyAhead:
    """scrypt(password, salt), begun at once in a daemon thread."""

    def __init__(self, password: str, salt: bytes) -> None:
        self.salt = salt
        self._key: bytes | None = None
        self._done = threading.Event()
        threading.Thread(
            target=self._derive, args=(password,), name="wsemail-key-ahead", daemon=True
        ).start()

    def _derive(self, password: str) -> None:
        try:
            self._key = derive_key(password, self.salt)
        finally:
            self._done.set()

    def key_for(self, salt: bytes) -> bytes | None:
        """The key, once derived, when `salt` is the salt it was begun with; else None."""
        if salt != self.salt:
            return None
        self._done.wait()
        return self._key


class SaltMemory:
    """The salt of each account's last session, in one small JSON file. It is a cache: a
    file that cannot be read is as good as none, one that cannot be written costs only the
    head start; the file lists servers and addresses, so only its owner may read it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @classmethod
    def default(cls) -> SaltMemory:
        """salts.json in this user's cache folder (platformdirs: ~/.cache/wsemail on Linux)."""
        import platformdirs

        return cls(Path(platformdirs.user_cache_dir("wsemail", appauthor=False)) / "salts.json")

    def _entries(self) -> list[dict[str, object]]:
        try:
            entries = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return []
        if not isinstance(entries, list):
            return []
        return [e for e in entries if isinstance(e, dict)]

    def get(self, server: str, user: str) -> bytes | None:
        """The salt remembered for (server, user), if any."""
        for entry in self._entries():
            if entry.get("server") == server and entry.get("user") == user:
                try:
                    salt = base64.b64decode(str(entry.get("salt", "")), validate=True)
                except binascii.Error:
                    return None
                return salt or None
        return None

    def put(self, server: str, user: str, salt: bytes) -> None:
        """Remember `salt` for (server, user), first of the list (replaced atomically; a
        failure to write is ignored)."""
        entry = {"server": server, "user": user, "salt": base64.b64encode(salt).decode("ascii")}
        others = [e for e in self._entries() if (e.get("server"), e.get("user")) != (server, user)]
        text = json.dumps([entry, *others[: KEEP - 1]], indent=1) + "\n"
        tmp = self.path.with_name(f".{secrets.token_hex(8)}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
