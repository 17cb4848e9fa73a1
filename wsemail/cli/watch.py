"""`wsemail watch`: one line per new message as it arrives, for shell pipelines (issue 18).

It holds the server's push stream (no polling): a line comes as soon as the message is
stored, each line is flushed at once, and when the server restarts the stream is opened
again (backoff up to 30 s) from the last message printed — nothing twice, nothing lost in
between. It ends with exit 0 on Ctrl-C and when the reading end of its output goes away
(`wsemail watch | head -1`).

    <id> TAB <date> TAB <folder> TAB <from> TAB <subject>      (--json: the header, NDJSON)
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import stat
import sys
import threading
from collections.abc import Callable

import typer

from wsemail.client import session
from wsemail.client.newmail import HookRunner, MailWatch, NewMail

ServerOpt = typer.Option(None, "--server", help="server URL (or WSEMAIL_SERVER)")
UserOpt = typer.Option(None, "--user", help="your address (or WSEMAIL_USER)")
_CONTROL = {c: " " for c in (*range(0x20), 0x7F)}


def line(mail: NewMail) -> str:
    """The tab-separated line of one message (control characters, tabs too, as spaces)."""
    head = mail.header
    fields = (head.id, head.date, head.folder, head.sender, head.subject)
    return "\t".join(f.translate(_CONTROL) for f in fields)


def watch(
    as_json: bool = typer.Option(False, "--json", help="NDJSON: the header of each message"),
    command: str | None = typer.Option(
        None,
        "--exec",
        metavar="CMD",
        help="run CMD by the shell for each new message, with WSEMAIL_ID, WSEMAIL_FROM, "
        "WSEMAIL_SUBJECT, WSEMAIL_FOLDER and WSEMAIL_DATE in its environment (one at a "
        "time, in order; its output goes to stderr)",
    ),
    server: str | None = ServerOpt,
    user: str | None = UserOpt,
) -> None:
    """Print new mail as it arrives, one line each: id, date, folder, from, subject
    (tab-separated). Runs until Ctrl-C; reconnects when the server restarts."""
    if command is not None and not command.strip():
        typer.echo("wsemail: --exec needs a command", err=True)
        raise typer.Exit(2)
    with session.open_client(server, user) as client:
        opened = 0

        def state(what: str) -> None:
            nonlocal opened
            opened += 1
            if opened == 1:  # stderr: the lines on stdout stay the data alone
                typer.echo(f"watching new mail for {client.username} (Ctrl-C ends)", err=True)
            elif opened > 1:
                typer.echo("wsemail: reconnected to the server", err=True)

        mails = MailWatch(client, on_state=state)
        hooks = None
        if command is not None:
            hooks = HookRunner(
                lambda: command,
                client,
                lambda exc: print(f"wsemail: {exc}", file=sys.stderr, flush=True),
                output=sys.stderr,
            )
        gone = threading.Event()

        def reader_left() -> None:
            gone.set()
            mails.close()

        _when_reader_leaves(reader_left)
        try:
            for mail in mails:
                text = json.dumps(mail.as_dict()) if as_json else line(mail)
                sys.stdout.write(text + "\n")
                sys.stdout.flush()
                if hooks is not None:
                    hooks.submit(mail.header)
        except BrokenPipeError:
            gone.set()
        except KeyboardInterrupt:
            pass  # Ctrl-C: the usual way to end it
        finally:
            mails.close()
        if gone.is_set():
            _quiet_stdout()


def _when_reader_leaves(callback: Callable[[], object]) -> None:
    """Call `callback` (from a thread) once the reading end of a pipe on stdout is closed:
    the next line would fail, and with no new mail that could be days away."""
    try:
        fd = sys.stdout.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError, AttributeError):
        return
    if not (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) or not hasattr(select, "poll"):
        return

    def wait() -> None:
        poller = select.poll()
        poller.register(fd, 0)  # POLLERR / POLLHUP are reported whatever is asked
        with contextlib.suppress(OSError):
            while True:
                for _, events in poller.poll():
                    if events & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
                        callback()
                        return

    threading.Thread(target=wait, name="wsemail-watch-stdout", daemon=True).start()


def _quiet_stdout() -> None:
    """Nobody reads stdout any more: point it at /dev/null so that the interpreter's last
    flush has nowhere to fail (no 'Exception ignored … BrokenPipeError')."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def register(root: typer.Typer) -> None:
    root.command("watch")(watch)
