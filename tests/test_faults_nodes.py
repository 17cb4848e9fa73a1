"""A short run of the scale-out fault scenario (`scripts/faults nodes-kill9`): two nodes of
one domain over one real PostgreSQL database, killed in turn under load."""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import faults_nodes  # noqa: E402


def test_nodes_killed_in_turn_lose_and_duplicate_no_acknowledged_mail(tmp_path: Path) -> None:
    count = faults_nodes.nodes_kill9(tmp_path, 3, random.Random(20), threads=3)
    assert count.lost == 0 and count.duplicated == 0, count.line()
    assert count.ok, count.line()  # nothing refused stored, nothing left unanswered
    assert count.acknowledged > 0 and count.acknowledged == count.delivered, count.line()
    assert sum(n for k, n in count.notes.items() if k.endswith("SIGKILL")) == 3
    assert count.notes["failovers"] > 0, count.line()  # clients did move to the other node
