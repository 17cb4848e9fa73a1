"""`wsemail watch` and new mail on the push stream (issue 18), through the real binary and
real servers on loopback: one line per delivery with no request of the watcher's own, the
stream resumed after a server restart with nothing printed twice, the hook with the message
in its environment (a failing hook is one line, the watch goes on), a clean end on Ctrl-C
and when the reader of its output goes away; a mail-only session is not online and takes no
instant messages; malformed stream options are refused with nothing consumed."""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import threading
from pathlib import Path

import httpx
import pytest
from lxml import etree

from wsemail.client.im import InstantMessenger
from wsemail.client.session import Account, ClientConfig, load_accounts, save_accounts
from wsemail.protocol.soap import q, text_of

from conftest import Cli, Running, fault_subcode, start_server, wait_for, wsemail_binary

BOB = "bob@localhost"


class Watching:
    """A running `wsemail watch` (or a shell pipeline holding one): stdout lines come in a
    queue, stderr lines in a list, both read by threads."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
            # Ctrl-C as in a terminal, even when this suite runs as a background job of a
            # shell without job control (which starts it, and so its children, ignoring it)
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.errors: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        out, err = self.proc.stdout, self.proc.stderr
        self.readers = [
            threading.Thread(target=lambda: [self.lines.put(s) for s in out], daemon=True),
            threading.Thread(target=lambda: [self.errors.append(s) for s in err], daemon=True),
        ]
        for reader in self.readers:
            reader.start()

    def said(self, text: str) -> bool:
        return any(text in line for line in self.errors)

    def ready(self) -> None:
        wait_for(lambda: self.said("watching new mail") or self.proc.poll() is not None, "watch")
        assert self.proc.poll() is None, "".join(self.errors)

    def line(self) -> str:
        try:
            return self.lines.get(timeout=30).rstrip("\n")
        except queue.Empty:
            raise AssertionError(f"no line from watch; stderr: {''.join(self.errors)}") from None

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=30)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)
        for reader in self.readers:
            reader.join(10)
        for pipe in (self.proc.stdout, self.proc.stderr):
            if pipe is not None:
                pipe.close()


def watch(cli: Cli, *args: str, user: str = BOB) -> Watching:
    return Watching([wsemail_binary(), "watch", *args], cli.env(user))


def requests_by(running: Running, user: str) -> int:
    """Authenticated requests `user` made (each leaves its nonce)."""
    return running.count(f"SELECT count(*) FROM nonces WHERE principal='{user}'")  # noqa: S608


@pytest.mark.both_stores
def test_watch_prints_one_line_per_new_message_from_the_push_stream(cli: Cli) -> None:
    running = cli.server
    watching = watch(cli)
    try:
        watching.ready()
        before = requests_by(running, BOB)
        alice = running.client()
        alice.send([BOB], "lunch\tat noon", "see you")
        line = watching.line()
        assert requests_by(running, BOB) == before  # pushed: the watcher asked nothing
        stored = running.client(BOB).list_headers().headers[0]
        assert line.split("\t") == [
            stored.id,
            stored.date,
            "inbox",
            "alice@localhost",
            "lunch at noon",  # a tab in the subject is a space: one field each
        ]
        # the watcher's own sent copy and others' mail are not new mail for it
        running.client(BOB).send(["carol@localhost"], "from bob", "x")
        alice.send(["carol@localhost"], "for carol", "x")
        alice.send([BOB], "second", "x")
        assert watching.line().split("\t")[-1] == "second"
        assert watching.interrupt() == 0  # Ctrl-C is the usual end
        assert "Traceback" not in "".join(watching.errors)
    finally:
        watching.close()


def test_watch_survives_a_server_restart_and_prints_nothing_twice(tmp_path: Path) -> None:
    data = tmp_path / "server"
    running = start_server(data)
    port = httpx.URL(running.url).port
    assert port is not None
    cli = Cli(running, tmp_path)
    watching = watch(cli, "--json")
    try:
        watching.ready()
        running.client().send([BOB], "before", "x")
        first = json.loads(watching.line())
        assert (first["subject"], first["from"], first["folder"]) == (
            "before",
            "alice@localhost",
            "inbox",
        )
        running.stop()
        running = start_server(data, port=port)
        cli.server = running
        # sent at once: it comes live or when the watcher resumes, once either way
        running.client().send([BOB], "during", "x")
        wait_for(lambda: watching.said("reconnected"), "the watcher to reconnect", timeout=60)
        running.client().send([BOB], "after", "x")
        rest = [json.loads(watching.line()), json.loads(watching.line())]
        assert [m["subject"] for m in rest] == ["during", "after"]  # nothing twice, in order
        ids = {m["id"] for m in [first, *rest]}
        assert ids == {h.id for h in running.client(BOB).list_headers().headers}
        assert first["cursor"] < rest[0]["cursor"] < rest[1]["cursor"]
        assert watching.proc.poll() is None
        assert watching.interrupt() == 0
        assert watching.lines.empty()
        assert "Traceback" not in "".join(watching.errors)
    finally:
        watching.close()
        running.stop()


def test_watch_piped_into_head_ends_with_exit_0_when_head_is_done(cli: Cli) -> None:
    script = f"set -o pipefail; '{wsemail_binary()}' watch | head -1"
    pipeline = Watching(["/bin/bash", "-c", script], cli.env(BOB))
    try:
        pipeline.ready()
        cli.server.client().send([BOB], "just one", "x")
        assert pipeline.proc.wait(timeout=30) == 0  # watch's own exit (pipefail)
        assert pipeline.line().endswith("\tjust one")
        errors = "".join(pipeline.errors)
        assert "Traceback" not in errors and "Exception ignored" not in errors
    finally:
        pipeline.close()


@pytest.mark.both_stores
def test_watch_exec_runs_the_hook_with_the_message_in_its_environment(
    cli: Cli, tmp_path: Path
) -> None:
    out = tmp_path / "hook.out"
    hook = (
        'if [ "$WSEMAIL_SUBJECT" = bad ]; then echo nope >&2; exit 3; fi; '
        'printf "%s|%s|%s|%s|%s|%s\\n" "$WSEMAIL_ID" "$WSEMAIL_FROM" "$WSEMAIL_SUBJECT" '
        '"$WSEMAIL_FOLDER" "$WSEMAIL_USER" "${WSEMAIL_PASSWORD-none}" >> ' + str(out)
    )
    watching = watch(cli, "--exec", hook)
    try:
        watching.ready()
        alice = cli.server.client()
        alice.send([BOB], "bad", "x")
        alice.send([BOB], "$(touch pwned); `id`", "x")  # fields are data, never commands
        assert watching.line().endswith("\tbad")
        second = watching.line().split("\t")[0]
        wait_for(lambda: out.exists() and out.read_text().count("\n") == 1, "the hook")
        assert out.read_text().strip().split("|") == [
            second,
            "alice@localhost",
            "$(touch pwned); `id`",
            "inbox",
            BOB,
            "none",  # the password stays out of the hook's environment
        ]
        assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()
        # the hook's own output is on stderr, its failure one line; the watch went on
        assert watching.said("nope") and watching.said("wsemail: new-mail hook exited 3")
        assert watching.proc.poll() is None
    finally:
        watching.close()


def test_watch_refuses_an_empty_exec_in_one_line(cli: Cli) -> None:
    result = cli("watch", "--exec", " ", user=BOB, check=False)
    assert result.returncode == 2
    assert result.stderr.strip() == "wsemail: --exec needs a command"


def test_watch_with_a_wrong_password_is_one_line_and_exit_2(cli: Cli) -> None:
    result = cli("watch", user=BOB, password="not the password", check=False)
    assert result.returncode == 2
    assert result.stderr.startswith("wsemail: ") and result.stderr.count("\n") == 1
    assert result.stdout == ""
    assert cli.server.client(BOB).list_headers().headers == []  # the server still answers


@pytest.mark.both_stores
def test_a_stream_resumed_after_a_cursor_gets_what_arrived_meanwhile_once(
    server: Running,
) -> None:
    bob = InstantMessenger(server.client(BOB))
    with bob.listen(mail="now", instant=False) as stream:
        start = stream.mail_cursor
    assert start is not None
    alice = server.client()
    for subject in ("one", "two", "three"):
        alice.send([BOB], subject, "x")

    def mails(since: int) -> list[tuple[int, str]]:
        got: list[tuple[int, str]] = []
        with bob.listen(mail=since, instant=False) as stream:
            for item in stream:
                got.append((item.data["cursor"], item.data["subject"]))
                if got[-1][1] == "three":
                    return got
        raise AssertionError(got)

    everything = mails(start)
    assert [s for _, s in everything] == ["one", "two", "three"]
    assert [s for _, s in mails(everything[0][0])] == ["two", "three"]
    # a message deleted meanwhile is not told about; a cursor from a server whose events
    # started over (larger than any) starts at its newest
    server.client(BOB).delete(server.client(BOB).list_headers().headers[-1].id)
    assert [s for _, s in mails(start)] == ["two", "three"]
    with bob.listen(mail=10**9, instant=False) as stream:
        assert stream.mail_cursor == everything[-1][0]


@pytest.mark.both_stores
def test_a_mail_only_session_is_not_online_and_takes_no_instant_messages(cli: Cli) -> None:
    running = cli.server
    watching = watch(cli)
    try:
        watching.ready()
        alice = InstantMessenger(running.client())
        assert alice.who([BOB])[0].status == "offline"
        alice.send(BOB, "are you there?")
        fields = watching.line().split("\t")  # kept in the mailbox: new mail
        assert fields[3:] == ["alice@localhost", "Instant message"]
        assert fields[0] in InstantMessenger(running.client(BOB)).missed()
    finally:
        watching.close()


@pytest.mark.parametrize(
    "options",
    ["&mail=-1", "&mail=soon", "&mail=1&mail=2", "&im=2", "&im=0", f"&mail={2**63}"],
)
def test_malformed_stream_options_are_refused_and_the_ticket_kept(
    server: Running, options: str
) -> None:
    bob = server.client(BOB)
    answer = bob.extension("im", etree.Element(q("OpenStream")))
    assert answer is not None
    ticket, path = text_of(answer, "Ticket"), text_of(answer, "Path")
    base = httpx.URL(server.url).copy_with(path=path)
    refused = httpx.get(str(base.copy_with(query=f"ticket={ticket}{options}".encode())))
    assert refused.status_code == 400
    assert fault_subcode(refused) == "wsemail:InvalidRequest"
    assert b"Traceback" not in refused.content
    # nothing was consumed: the same ticket opens a stream now
    with httpx.stream("GET", str(base.copy_with(query=f"ticket={ticket}".encode()))) as ok:
        assert ok.status_code == 200
    assert bob.list_headers().headers == []


def test_new_mail_command_survives_saving_client_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "client.toml"
    monkeypatch.setenv("WSEMAIL_CLIENT_CONFIG", str(path))
    if True:
        path.write_text(
            'default = "w"\nnew_mail_command = "top \\"$WSEMAIL_FROM\\""\n'
            '[accounts.w]\nserver = "http://w.test/wsemail"\nuser = "u@w.test"\n'
            'new_mail_command = "own"\n'
            '[accounts.x]\nserver = "http://x.test/wsemail"\nuser = "u@x.test"\n'
        )
        config = load_accounts()
        config = config.with_account(Account("y", "http://y.test/wsemail", "u@y.test"))
        save_accounts(config)
        again = load_accounts()
        assert again.hook_for("http://w.test/wsemail", "u@w.test") == "own"
        assert again.hook_for("http://x.test/wsemail", "u@x.test") == 'top "$WSEMAIL_FROM"'
        assert again.hook_for("http://nowhere/wsemail", "n@n.test") == 'top "$WSEMAIL_FROM"'
        assert isinstance(again, ClientConfig) and set(again.accounts) == {"w", "x", "y"}
