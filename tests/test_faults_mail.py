"""Short runs of the mail fault scenarios (`scripts/faults`, issue 16), so CI covers them:
real `wsemail serve` processes over TLS killed under load, a receiving domain down then
back with the sender killed mid-relay, a full disk. Whatever a client was told was
accepted is in every mailbox once; nothing is lost or duplicated."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import faults_disk  # noqa: E402
import faults_mail  # noqa: E402


def test_a_server_killed_under_load_loses_and_duplicates_no_acknowledged_mail(
    tmp_path: Path,
) -> None:
    count = faults_mail.kill9(tmp_path, 2, random.Random(16), threads=3)
    assert count.lost == 0 and count.duplicated == 0, count.line()
    assert count.ok, count.line()  # nothing refused stored, nothing left unanswered
    assert count.acknowledged > 0 and count.acknowledged == count.delivered, count.line()
    assert count.notes["SIGKILL"] == 1 and count.notes["SIGTERM"] == 1  # rounds 1 and 2


def test_a_receiving_domain_down_then_back_gets_every_queued_message_once(
    tmp_path: Path,
) -> None:
    count = faults_mail.receiver_down(tmp_path, 2, random.Random(16), threads=2)
    assert count.lost == 0 and count.duplicated == 0, count.line()
    assert count.ok, count.line()  # nothing refused stored, nothing left unanswered
    assert count.acknowledged > 0 and count.acknowledged == count.delivered, count.line()
    assert count.notes["bounces"] == 0, count.line()
    assert count.notes["receiver SIGKILL"] == 2 and count.notes["sender SIGKILL"] == 1
    assert count.notes["queue peak"] > 0  # mail was queued while the receiver was down


def test_a_full_disk_refuses_mail_as_refused_and_keeps_what_it_acknowledged(
    tmp_path: Path,
) -> None:
    count = faults_disk.full_disk(tmp_path, 2, random.Random(16), threads=2)
    if count.skipped:
        pytest.skip(count.skipped)
    assert count.lost == 0 and count.duplicated == 0, count.line()
    assert count.ok, count.line()  # nothing refused stored, nothing left unanswered
    assert count.stored_after_refusal == 0, count.line()
    assert count.refused > 0 and count.acknowledged > 0, count.line()
    assert "never full" not in count.notes and "never took mail again" not in count.notes
    assert count.notes["SIGKILL while full"] == 1
