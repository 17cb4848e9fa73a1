"""`scripts/faults`: the fault scenarios of issue 16 on loopback, one line each.

    scripts/faults [SCENARIO ...] [--quick] [--rounds N] [--seed S] [--keep DIR] [-v]

SCENARIO (a name, or a prefix for every scenario it starts: `mail` = the mail ones):
  im          IM push listener processes killed (SIGKILL) or stopped (SIGSTOP)  (faults_im)
  mail-kill9  the server killed (SIGKILL, some rounds SIGTERM) under load       (faults_mail)
  mail-queue  the receiving domain down then back; the sender killed mid-relay  (faults_mail)
  mail-full   the data dir's disk full, then freed (needs root for a tmpfs)     (faults_disk)
  mail-full-receiver  the receiving domain's disk full, then freed (root)       (faults_disk)
  nodes-kill9 one domain on two nodes over PostgreSQL, killed in turn          (faults_nodes)

Exits 1 when a scenario lost or duplicated anything, stored a message it refused, left one
unanswered, or failed to run; else 0.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import faults_disk  # noqa: E402
import faults_im  # noqa: E402
import faults_mail  # noqa: E402
import faults_nodes  # noqa: E402
from faults_mail import Count  # noqa: E402

Scenario = Callable[[Path, int, random.Random, bool], Count]


def im(root: Path, rounds: int, rng: random.Random, quick: bool) -> Count:
    """The IM scenario of faults_im, counted as one line."""
    started = time.monotonic()
    total = faults_im.Tally()
    count = Count("im", rounds, show=("acknowledged", "in_mailbox", "lost", "duplicated"))
    for number in range(1, rounds + 1):
        found, hits = faults_im.run_round(root / f"r{number}", 30 if quick else 60, rng)
        total.add(found)
        count.notes.update({"listener SIGKILL": hits["kill"], "listener SIGSTOP": hits["stop"]})
    count.acknowledged, count.lost, count.duplicated = (
        total.acknowledged,
        total.lost,
        total.duplicated,
    )
    count.in_mailbox = total.mailbox
    count.seconds = time.monotonic() - started
    return count


# name: (run, rounds, rounds in quick mode)
SCENARIOS: dict[str, tuple[Scenario, int, int]] = {
    "im": (im, 3, 1),
    "mail-kill9": (lambda r, n, g, q: faults_mail.kill9(r, n, g, threads=3 if q else 6), 10, 3),
    "mail-queue": (
        lambda r, n, g, q: faults_mail.receiver_down(r, n, g, threads=3 if q else 4),
        8,
        2,
    ),
    "mail-full": (lambda r, n, g, q: faults_disk.full_disk(r, n, g, threads=4), 4, 2),
    "mail-full-receiver": (lambda r, n, g, q: faults_disk.receiver_full(r, n, g), 4, 2),
    "nodes-kill9": (
        lambda r, n, g, q: faults_nodes.nodes_kill9(r, n, g, threads=3 if q else 6),
        10,
        3,
    ),
}


def chosen(names: list[str]) -> list[str]:
    if not names:
        return list(SCENARIOS)
    picked: list[str] = []
    for name in names:
        matches = [name] if name in SCENARIOS else [s for s in SCENARIOS if s.startswith(name)]
        if not matches:
            raise ValueError(f"no scenario {name!r} (there are: {', '.join(SCENARIOS)})")
        picked += [s for s in matches if s not in picked]
    return picked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/faults",
        description=(__doc__ or "").split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").split("\n")[4:]),
    )
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO")
    parser.add_argument("--quick", action="store_true", help="few rounds, a minute or two in all")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of every scenario")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="keep data and logs here")
    parser.add_argument("-v", "--verbose", action="store_true")
    options = parser.parse_args(argv)
    try:
        names = chosen(options.scenarios)
    except ValueError as exc:
        print(f"scripts/faults: {exc}", file=sys.stderr)
        return 2
    if options.keep is not None and options.keep.exists() and any(options.keep.iterdir()):
        parser.error(f"--keep {options.keep} must be empty or absent")
    seed = options.seed if options.seed is not None else random.randrange(1 << 30)
    if options.verbose:
        print(f"seed {seed}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory(prefix="wsemail-faults-") as tmp:
        base = options.keep or Path(tmp)
        for name in names:
            run, rounds, quick_rounds = SCENARIOS[name]
            rounds = options.rounds or (quick_rounds if options.quick else rounds)
            rng = random.Random(f"{seed}-{name}")
            try:
                count = run(base / name, rounds, rng, options.quick)
            except Exception as exc:  # say which scenario broke and go on with the next
                failed = True
                print(f"{name}: FAILED {type(exc).__name__}: {exc}", flush=True)
                if options.verbose:
                    traceback.print_exc()
                continue
            print(count.line(), flush=True)
            if options.verbose:
                print(f"  {count}", flush=True)
            if not count.ok:
                failed = True
                print(f"{name}: seed {seed}; --keep DIR keeps data and server logs", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
