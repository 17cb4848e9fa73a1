"""The full-disk mail fault scenario (issue 16): the server's data dir on a real, small tmpfs
(as tests/test_storage_faults.py does; mounting needs root, else the scenario is skipped).
Clients send while a filler file takes the disk down to a little slack; the mail fills the
rest, and the server must refuse new mail with StorageFull (507) from then on; every other
round it is killed (SIGKILL) and started again on the full disk; then the filler is
removed and the server must take mail again (it looks every 5 s). Afterwards: every
acknowledged message once in each mailbox, no refused one anywhere (`faults_mail.tally`).
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

from faults_mail import A, Bed, Count, Senders, tally

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


def full_disk(root: Path, rounds: int, rng: random.Random, *, threads: int = 4) -> Count:
    started = time.monotonic()
    count = Count(
        "mail-full",
        rounds,
        show=("acknowledged", "refused", "lost", "duplicated", "stored_after_refusal"),
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
                if number % 2 == 1:  # killed and started again on the full disk
                    count.notes["SIGKILL while full"] += 1
                    bed.hit(A, signal.SIGKILL)
                    bed.start(A)
                    load.wait_for("refused", 3)
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
