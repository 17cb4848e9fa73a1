"""Sequence sets (`1:4,7,10:*`), parsed strictly: numbers 1..4294967295, at most
`MAX_RANGES` ranges; resolved against a folder's numbers without building huge lists."""

from __future__ import annotations

import bisect
import re
from collections.abc import Sequence

from wsemail.server.imap.parser import Refused

MAX_RANGES = 1000
MAX_NUMBER = 4294967295
_PART = re.compile(r"^(\d{1,10}|\*)(?::(\d{1,10}|\*))?$")

Ranges = list[tuple[int, int]]  # inclusive; "*" is 0 until resolved


def parse(text: str) -> Ranges:
    parts = text.split(",")
    if len(parts) > MAX_RANGES:
        raise Refused(f"a sequence set has at most {MAX_RANGES} ranges")
    ranges: Ranges = []
    for part in parts:
        found = _PART.match(part)
        if found is None:
            raise Refused(f"bad sequence set {text[:40]!r}")
        low = _number(found.group(1))
        high = _number(found.group(2)) if found.group(2) is not None else low
        ranges.append((low, high))
    return ranges


def _number(raw: str) -> int:
    if raw == "*":
        return 0
    value = int(raw)
    if not 1 <= value <= MAX_NUMBER:
        raise Refused("sequence numbers and UIDs are 1..4294967295")
    return value


def resolve(ranges: Ranges, largest: int) -> Ranges:
    """Ranges with "*" as `largest`, each ordered low..high."""
    resolved = []
    for low, high in ranges:
        low, high = low or largest, high or largest
        resolved.append((min(low, high), max(low, high)))
    return resolved


def select_seqnums(ranges: Ranges, total: int) -> list[int]:
    """Message sequence numbers (1-based) of a folder of `total` messages in the set."""
    found: set[int] = set()
    for low, high in resolve(ranges, total):
        found.update(range(max(low, 1), min(high, total) + 1))
    return sorted(found)


def select_uids(ranges: Ranges, uids: Sequence[int]) -> list[int]:
    """0-based indexes in `uids` (ascending) of the UIDs in the set; "*" is the largest
    UID (or, in an empty folder, nothing)."""
    if not uids:
        return []
    found: set[int] = set()
    for low, high in resolve(ranges, uids[-1]):
        start = bisect.bisect_left(uids, low)
        stop = bisect.bisect_right(uids, high)
        found.update(range(start, stop))
    return sorted(found)
