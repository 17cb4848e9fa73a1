"""The full-disk mail fault scenario (issue 16): the server's data dir on a real, small tmpfs
(as tests/test_storage_faults.py does; mounting needs root, else the scenario is skipped).
Clients send while a filler file takes the disk down to a little slack; the mail fills the
rest, and the server must refuse new mail with StorageFull (507) from then on; every other
round it is killed (SIGKILL) and started again on the full disk; then the filler is
removed and the server must take mail again (it looks every 5 s). Reads made while the
disk is full must be answered. Afterwards: every acknowledged message once in each
mailbox, no refused one anywhere (`faults_mail.tally`). `receiver_full` does the same to
the receiving domain of two: the sending server's queue must hold the mail meanwhile.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from faults_mail import A, B, Bed, Count, Senders, relayed, tally

from wsemail.protocol.errors import StorageFull

RESERVE = 1 << 20  # [limits] storage_reserve of the scenario's server


@contextlib.contextmanager
def small_disk(mount: Path, megabytes: int) -> Iterator[Path | str]:
    """A tmpfs of `megabytes` at `mount` (unmounted afterwards), or why there is none."""
    mount.mkdir(parents=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        yield f"cannot mount a small tmpfs here (needs root): {done.stderr.strip()}"
        return
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def free(directory: Path) -> int:
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def fill_to(directory: Path, slack: int, name: str) -> Path:
    """A filler file that leaves about `slack` bytes of `directory`'s file system free."""
    filler = directory / name
    chunk = b"\0" * (64 << 10)
    with filler.open("ab", buffering=0) as out:
        with contextlib.suppress(OSError):
            while free(directory) > slack + len(chunk):
                out.write(chunk)
    return filler


def reads(bed: Bed, users: list[str], count: Count, times: int = 10) -> None:
    """While the disk is full, list and read mail: reads go on (in the reserve)."""
    for user in users:
        with bed.client(user) as client:
            for _ in range(times):
                count.reads += 1
                try:
                    headers = client.list_headers(limit=5).headers
                    if headers:
                        client.retrieve(headers[-1].id, peek=True)
                except StorageFull:
                    count.reads_refused += 1


def full_disk(root: Path, rounds: int, rng: random.Random, *, threads: int = 4) -> Count:
    started = time.monotonic()
    count = Count(
        "mail-full",
        rounds,
        show=(
            "acknowledged",
            "refused",
            "lost",
            "duplicated",
            "stored_after_refusal",
            "reads",
            "reads_refused",
        ),
    )
    with small_disk(root / "disk", 48) as disk:
        if isinstance(disk, str):
            count.skipped = disk
            return count
        senders = [f"sender{n}@{A}" for n in range(threads)]
        recipients = [f"reader{n}@{A}" for n in range(3)]
        bed = Bed(
            root,
            {A: senders + recipients},
            sections={"limits": {"storage_reserve": RESERVE}},
            data_dirs={A: disk / A},
        )
        load = Senders(bed, senders, recipients, rng, body=4000, pause=0.01)
        try:
            bed.start(A)
            load.start()
            for number in range(rounds):
                load.wait_for("acknowledged", 20)
                filler = fill_to(disk, int(rng.uniform(0.2, 1.0) * RESERVE), f"filler{number}")
                if not load.wait_for("refused", 5):
                    count.notes["never full"] += 1
                reads(bed, recipients, count)
                if number % 2 == 1:  # killed and started again on the full disk
                    count.notes["SIGKILL while full"] += 1
                    bed.hit(A, signal.SIGKILL)
                    bed.start(A)
                    load.wait_for("refused", 3)
                    reads(bed, recipients, count)
                filler.unlink()
                if not load.wait_for("acknowledged", 5):
                    count.notes["never took mail again"] += 1
            outcomes = load.stop()
            count.notes.update({f"transient {k}": n for k, n in load.errors.items()})
            tally(count, outcomes, bed.copies(recipients, senders))
        finally:
            load.abort()  # after an error: no thread left sending
            bed.stop()
    count.seconds = time.monotonic() - started
    return count


def receiver_full(
    root: Path,
    rounds: int,
    rng: random.Random,
    *,
    threads: int = 3,
    retry_base: float = 0.5,
    retry_max: float = 2.0,
    wait: float = 120.0,
) -> Count:
    """a.test's clients send to b.test's users while b.test's disk (a tmpfs) fills: b.test
    refuses deliveries with StorageFull, a.test's queue holds them, reads at b.test go on;
    every other round b.test is killed and started again on the full disk; then the disk
    is freed and the queue delivers."""
    started = time.monotonic()
    count = Count(
        "mail-full-receiver",
        rounds,
        show=("acknowledged", "delivered", "lost", "duplicated", "reads", "reads_refused"),
    )
    with small_disk(root / "disk", 96) as disk:
        if isinstance(disk, str):
            count.skipped = disk
            return count
        senders = [f"sender{n}@{A}" for n in range(threads)]
        recipients = [f"reader{n}@{B}" for n in range(3)]
        sections = {
            "queue": {"retry_base": retry_base, "retry_max": retry_max, "batch_max": 20},
            "limits": {"storage_reserve": RESERVE},
        }
        bed = Bed(root, {A: senders, B: recipients}, sections=sections, data_dirs={B: disk / B})
        load = Senders(bed, senders, recipients, rng, body=4000, pause=0.02)
        try:
            bed.start(B)
            bed.start(A)
            load.start()
            peak = 0
            for number in range(rounds):
                load.wait_for("acknowledged", 20)
                filler = fill_to(disk, int(rng.uniform(0.2, 1.0) * RESERVE), f"filler{number}")
                if not held(bed, 10 * threads):
                    count.notes["never full"] += 1
                reads(bed, recipients, count)
                if number % 2 == 1:  # killed and started again on the full disk
                    count.notes["receiver SIGKILL while full"] += 1
                    bed.hit(B, signal.SIGKILL)
                    bed.start(B)
                    reads(bed, recipients, count)
                peak = max(peak, bed.queued(A))
                filler.unlink()
            outcomes = load.stop()
            count.notes["queue peak"] = peak
            relayed(bed, count, outcomes, senders, recipients, wait)
        finally:
            load.abort()  # after an error: no thread left sending
            bed.stop()
    count.seconds = time.monotonic() - started
    return count


def held(bed: Bed, rows: int, timeout: float = 60.0) -> bool:
    """Until a.test's queue holds `rows` more rows than now (b.test refuses them)."""
    start = bed.queued(A)
    deadline = time.monotonic() + timeout
    while bed.queued(A) < start + rows:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True
