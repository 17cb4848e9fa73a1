"""In charge of new mail on the client (issue 18): following it through the own server's
push stream, and the user's new-mail hook. Used by `wsemail watch` and the TUI.

    with Client(url, "bob@b.test", password) as client:
        for mail in MailWatch(client):            # blocks; close() from another thread
            print(mail.header.id, mail.header.subject)

`MailWatch` holds a stream that takes no instant messages (the user does not show as
online) and reconnects for ever, with backoff up to `max_delay` seconds, when the server
restarts or the network goes: it resumes after the last message handed out, so what arrived
meanwhile comes then and nothing comes twice.

The hook (`new_mail_command` in client.toml, `wsemail watch --exec`) is run by the shell
with the message in its environment — WSEMAIL_ID, WSEMAIL_FROM, WSEMAIL_SUBJECT,
WSEMAIL_FOLDER, WSEMAIL_DATE — never in its command line, so a subject cannot inject a
command. WSEMAIL_SERVER and WSEMAIL_USER name the account (a `wsemail retrieve
"$WSEMAIL_ID"` in the hook reads that message); WSEMAIL_PASSWORD is taken out.
"""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import IO, Any

from wsemail.client.im import Incoming, InstantMessenger, Stream
from wsemail.client.mail import Client
from wsemail.protocol.errors import ServerError, UsageError, WsemailError
from wsemail.protocol.message import MessageHeader

HOOK_TIMEOUT = 60.0  # seconds a hook may run before it is stopped


@dataclass(frozen=True)
class NewMail:
    """One message that arrived: its header and the stream's cursor after it."""

    cursor: int
    header: MessageHeader

    @classmethod
    def from_event(cls, item: Incoming) -> NewMail:
        data = item.data

        def text(key: str) -> str:
            value = data.get(key, "")
            return value if isinstance(value, str) else str(value)

        def texts(key: str) -> list[str]:
            value = data.get(key, [])
            return [str(v) for v in value] if isinstance(value, list) else []

        size = data.get("size", 0)
        header = MessageHeader(
            id=text("id"),
            message_id=text("message_id"),
            folder=text("folder"),
            sender=text("from"),
            to=texts("to"),
            cc=texts("cc"),
            subject=text("subject"),
            date=text("date"),
            size=size if isinstance(size, int) else 0,
            seen=data.get("seen") is True,
            instant=data.get("instant") is True,
            delete_if_undeliverable=data.get("delete_if_undeliverable") is True,
            flagged=data.get("flagged") is True,
            answered=data.get("answered") is True,
        )
        cursor = data.get("cursor", 0)
        return cls(cursor if isinstance(cursor, int) else 0, header)

    def as_dict(self) -> dict[str, object]:
        return {**self.header.as_dict(), "cursor": self.cursor}


class MailWatch:
    """New mail as it arrives (iterate; `close()` from any thread or a signal handler to
    stop). `on_state` is told "watching" each time a stream is open and "reconnecting" when
    one broke off. Raises ServerError if the server does not push new mail."""

    def __init__(
        self,
        client: Client,
        *,
        max_delay: float = 30.0,
        on_state: Callable[[str], object] = lambda state: None,
    ) -> None:
        self.im = InstantMessenger(client)
        self.max_delay = max_delay
        self.on_state = on_state
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._stream: Stream | None = None

    def _opened(self, stream: Stream | None) -> None:
        with self._lock:
            self._stream = stream
        if stream is None:
            return
        if self._stop.is_set():
            stream.close()
            return
        if stream.mail_cursor is None:
            stream.close()
            raise ServerError("this server does not push new mail (it is older than this client)")
        self.on_state("watching")

    def __iter__(self) -> Iterator[NewMail]:
        events = self.im.follow(
            self._stop,
            self._opened,
            mail=True,
            instant=False,
            tries=None,
            max_delay=self.max_delay,
        )
        try:
            for item in events:
                if item.kind == "mail":
                    yield NewMail.from_event(item)
        finally:
            events.close()

    def close(self) -> None:
        self._stop.set()
        with self._lock:
            stream = self._stream
        if stream is not None:
            stream.close()


# the hook -----------------------------------------------------------------------------------
def hook_environment(header: MessageHeader, server: str, user: str) -> dict[str, str]:
    """This process's environment without the password, plus the message's fields."""
    env = {k: v for k, v in os.environ.items() if k != "WSEMAIL_PASSWORD"}
    fields = {
        "WSEMAIL_ID": header.id,
        "WSEMAIL_FROM": header.sender,
        "WSEMAIL_SUBJECT": header.subject,
        "WSEMAIL_FOLDER": header.folder,
        "WSEMAIL_DATE": header.date,
        "WSEMAIL_SERVER": server,
        "WSEMAIL_USER": user,
    }
    env.update({k: v.replace("\0", "") for k, v in fields.items()})
    return env


def run_hook(
    command: str,
    header: MessageHeader,
    client: Client,
    *,
    output: IO[Any] | int | None = subprocess.PIPE,
    timeout: float = HOOK_TIMEOUT,
) -> None:
    """Run the user's hook for one new message (blocking: call it from a worker). Its
    output goes to `output` (default: kept, and its last line told if it fails); a hook
    that cannot start, exits non-zero or runs past `timeout` is a UsageError saying so."""
    try:
        done = subprocess.run(  # noqa: S602 -- the user's own command from their own config
            command,
            shell=True,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.PIPE if output is subprocess.PIPE else output,
            env=hook_environment(header, client.server, client.username),
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise UsageError(f"new-mail hook stopped after {timeout:g} s: {command}") from exc
    except OSError as exc:
        raise UsageError(f"new-mail hook could not start: {exc}") from exc
    if done.returncode != 0:
        said = ""
        if isinstance(done.stderr, bytes):
            lines = done.stderr.decode("utf-8", "replace").strip().splitlines()
            said = f": {lines[-1][:200]}" if lines else ""
        raise UsageError(f"new-mail hook exited {done.returncode}{said}")


class HookRunner:
    """Runs the hook for each new message, one after another in a thread of its own, so
    that whoever sees new mail never waits for it. `command` is asked each time (the TUI
    reads client.toml then: a changed hook counts at once; "" runs nothing); `failed` is
    told each failure, from that thread."""

    def __init__(
        self,
        command: Callable[[], str],
        client: Client,
        failed: Callable[[WsemailError], object],
        *,
        output: IO[Any] | int | None = subprocess.PIPE,
    ) -> None:
        self.command = command
        self.client = client
        self.failed = failed
        self.output = output
        self._lock = threading.Lock()
        self._waiting: list[MessageHeader] = []
        self._running = False

    def submit(self, header: MessageHeader) -> None:
        with self._lock:
            self._waiting.append(header)
            if self._running:
                return
            self._running = True
        threading.Thread(target=self._run, name="wsemail-new-mail-hook", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._waiting:
                    self._running = False
                    return
                header = self._waiting.pop(0)
            try:
                command = self.command()
                if command:
                    run_hook(command, header, self.client, output=self.output)
            except WsemailError as exc:  # a failed hook, an unreadable client.toml
                self.failed(exc)
