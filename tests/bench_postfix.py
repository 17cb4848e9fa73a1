"""Benchmark, not a test (pytest does not collect it): Postfix's accepted messages/s next to
`wsemail bench`'s accepted sends/s, measured in the same run, alternating.

    .venv/bin/python tests/bench_postfix.py [--keep-connections] [MESSAGES] [SECONDS] [ROUNDS]

Postfix (Debian's package; installed here with apt-get if it is missing, as root) runs as a
private instance in a temporary directory (`postfix -c DIR`, its own queue and data
directory, an SMTP listener on a free loopback port, no DNS) and delivers to the Maildir of
one local user, `wsbench`, with its defaults: the queue file and the Maildir file are fsynced
before the SMTP reply and the delivery. `smtp-source -s 16 -m MESSAGES -l 1024` sends to it;
accepted msg/s is MESSAGES over smtp-source's run, delivered msg/s MESSAGES over the time
until all of them are files in Maildir/new. Then `wsemail bench --clients 16 --seconds
SECONDS` (the real binary beside this Python); its "accepted sends" line is parsed. ROUNDS
rounds of Postfix then wsemail (defaults: 20000 messages, 20 s, 3 rounds: runs of a few
seconds gave Postfix lower figures); prints one line per run, the medians and the ratio of
the medians wsemail / Postfix. Postfix is stopped and its directories removed at the end,
also on errors. smtp-source opens a connection per message (as the issue's figure is
worded); `--keep-connections` (smtp-source -d) sends them all over its 16 sessions, as
`wsemail bench`'s clients keep theirs.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wsemail.bench.nodes import free_port

POSTFIX = Path("/usr/sbin/postfix")
SMTP_SOURCE = Path("/usr/sbin/smtp-source")
USER = "wsbench"
DOMAIN = "bench.test"
SESSIONS = 16
SIZE = 1024

MAIN_CF = """\
compatibility_level = 3.6
queue_directory = {root}/queue
data_directory = {root}/data
maillog_file = {root}/maillog
maillog_file_prefixes = {root}
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.{domain}
mydomain = {domain}
myorigin = $mydomain
mydestination = {domain}
mynetworks = 127.0.0.0/8
relayhost =
alias_maps =
alias_database =
local_recipient_maps = unix:passwd.byname
home_mailbox = Maildir/
disable_dns_lookups = yes
smtp_host_lookup = native
smtpd_banner = $myhostname ESMTP
biff = no
"""

MASTER_CF = """\
127.0.0.1:{port} inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


def ensure_postfix() -> None:
    """Debian's postfix (with smtp-source), installed without configuring the system's."""
    if POSTFIX.exists() and SMTP_SOURCE.exists():
        return
    print("postfix or smtp-source missing: installing Debian's postfix package (apt-get)")
    selection = "postfix postfix/main_mailer_type select No configuration\n"
    subprocess.run(["debconf-set-selections"], input=selection, text=True, check=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "postfix"]
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=True)
        subprocess.run(install, env=env, stdout=subprocess.DEVNULL, check=True)


def ensure_user(home: Path) -> None:
    """The one local recipient, its home (and so its Maildir) in this run's directory."""
    try:
        pwd.getpwnam(USER)
        subprocess.run(["usermod", "-d", str(home), USER], check=True)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "-M", "-d", str(home), "-s", "/usr/sbin/nologin", USER],
            check=True,
        )
    entry = pwd.getpwnam(USER)
    home.mkdir()
    os.chown(home, entry.pw_uid, entry.pw_gid)


class Postfix:
    """A private Postfix instance under `root`: config, queue, data, log and the user's home."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.conf = root / "conf"
        self.maildir_new = root / "home" / "Maildir" / "new"
        self.conf.mkdir()
        (root / "queue").mkdir()  # owned by root; `postfix start` makes its subdirectories
        (root / "data").mkdir()
        entry = pwd.getpwnam("postfix")
        os.chown(root / "data", entry.pw_uid, entry.pw_gid)
        (self.conf / "main.cf").write_text(MAIN_CF.format(root=root, domain=DOMAIN))
        (self.conf / "master.cf").write_text(MASTER_CF.format(port=self.port))
        ensure_user(root / "home")

    def _postfix(self, *args: str) -> None:
        done = subprocess.run(
            [str(POSTFIX), "-c", str(self.conf), *args], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"postfix {' '.join(args)} failed: {done.stderr.strip()}")

    def start(self) -> None:
        self._postfix("start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                    if sock.recv(512).startswith(b"220 "):
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit(f"postfix did not listen on 127.0.0.1:{self.port}\n{self.log_tail()}")

    def stop(self) -> None:
        subprocess.run([str(POSTFIX), "-c", str(self.conf), "stop"], capture_output=True)

    def log_tail(self) -> str:
        log = self.root / "maillog"
        return "\n".join(log.read_text().splitlines()[-15:]) if log.exists() else "(no log)"

    def delivered(self) -> int:
        try:
            return sum(1 for _ in os.scandir(self.maildir_new))
        except FileNotFoundError:
            return 0

    def run(self, messages: int, keep: bool) -> tuple[float, float]:
        """One smtp-source run: (accepted msg/s, delivered msg/s)."""
        if self.maildir_new.exists():
            for entry in os.scandir(self.maildir_new):
                os.unlink(entry.path)
        command = [
            str(SMTP_SOURCE), *(["-d"] if keep else []),
            "-s", str(SESSIONS), "-m", str(messages), "-l", str(SIZE),
            "-f", f"sender@{DOMAIN}", "-t", f"{USER}@{DOMAIN}",
            f"127.0.0.1:{self.port}",
        ]  # fmt: skip
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        accepted_s = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"smtp-source failed: {done.stderr.strip()}\n{self.log_tail()}")
        deadline = started + 300
        while self.delivered() < messages:
            if time.perf_counter() > deadline:
                raise SystemExit(
                    f"only {self.delivered()} of {messages} in the Maildir\n{self.log_tail()}"
                )
            time.sleep(0.005)
        delivered_s = time.perf_counter() - started
        return messages / accepted_s, messages / delivered_s


def wsemail_bench(seconds: float) -> float:
    """The real `wsemail bench`: its accepted sends/s."""
    binary = Path(sys.executable).parent / "wsemail"
    command = [str(binary), "bench", "--clients", str(SESSIONS), "--seconds", str(seconds)]
    done = subprocess.run(command, capture_output=True, text=True)
    found = re.search(r"accepted sends\s+\d+ \(([\d.]+)/s\)", done.stdout)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"wsemail bench failed:\n{done.stdout}{done.stderr}")
    return float(found.group(1))


def main() -> None:
    args = sys.argv[1:]
    keep = "--keep-connections" in args
    args = [a for a in args if a != "--keep-connections"]
    messages = int(args[0]) if args else 20000
    seconds = float(args[1]) if len(args) > 1 else 20.0
    rounds = int(args[2]) if len(args) > 2 else 3
    if os.geteuid() != 0:
        raise SystemExit("run as root: Postfix's private instance and its local user need it")
    ensure_postfix()
    root = Path(tempfile.mkdtemp(prefix="wsemail-bench-postfix-"))
    root.chmod(0o755)  # the local delivery agent runs as wsbench and enters its home here
    postfix: Postfix | None = None
    accepted: list[float] = []
    delivered: list[float] = []
    sends: list[float] = []
    try:
        postfix = Postfix(root)
        postfix.start()
        for n in range(1, rounds + 1):
            got, out = postfix.run(messages, keep)
            accepted.append(got)
            delivered.append(out)
            print(
                f"round {n} Postfix: smtp-source{' -d' if keep else ''} -s {SESSIONS} "
                f"-m {messages} -l {SIZE}: "
                f"accepted {got:.1f} msg/s, all in the Maildir {out:.1f} msg/s",
                flush=True,
            )
            sends.append(wsemail_bench(seconds))
            print(
                f"round {n} wsemail bench --clients {SESSIONS} --seconds {seconds:g}: "
                f"accepted {sends[-1]:.1f} sends/s",
                flush=True,
            )
    finally:
        if postfix is not None:
            postfix.stop()
        shutil.rmtree(root, ignore_errors=True)
    postfix_median = statistics.median(accepted)
    wsemail_median = statistics.median(sends)
    delivered_median = statistics.median(delivered)
    print(
        f"medians: Postfix accepted {postfix_median:.1f} msg/s (delivered "
        f"{delivered_median:.1f} msg/s), wsemail accepted {wsemail_median:.1f} sends/s; "
        f"wsemail / Postfix accepted {wsemail_median / postfix_median:.2f}x "
        f"(/ delivered {wsemail_median / delivered_median:.2f}x)"
    )


if __name__ == "__main__":
    main()
