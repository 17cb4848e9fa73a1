"""`wsemail bench` through the real binary: on SQLite, and on a throwaway PostgreSQL with
two workers; every accepted send is counted in the database (figures are not asserted)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import wsemail_binary


@pytest.mark.parametrize(
    "store", [[], ["--store", "pg", "--workers", "2", "--recipients", "3"]], ids=["sqlite", "pg"]
)
def test_bench_prints_figures_and_finds_every_accepted_send(
    tmp_path: Path, store: list[str]
) -> None:
    result = subprocess.run(
        [wsemail_binary(), "bench", "--clients", "2", "--seconds", "0.5", *store,
         "--mailbox", "40", "--data-dir", str(tmp_path / "d")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert "refused 0" in lines["accepted"]
    assert "server" in lines and "durable" in lines
    assert "40 messages in the inboxes before" in result.stdout
    accepted = int(lines["accepted"].split()[2])
    inbox, sent = int(lines["durable"].split()[1]), int(lines["durable"].split()[4])
    assert inbox == sent >= 40 + accepted > 40  # seeded, warm-up and measured sends, once each
    if store:
        assert "PostgreSQL, 2 worker(s)" in result.stdout and "database" in lines


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--workers", "2"], "--workers needs --store"),
        (["--seconds", "-1"], "--seconds"),
        (["--clients", "0"], "--clients"),
        (["--mailbox", "-1"], "--mailbox"),
    ],
)
def test_bench_refuses_bad_options_in_one_line(args: list[str], said: str) -> None:
    result = subprocess.run(
        [wsemail_binary(), "bench", *args], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and said in result.stderr
    assert "Traceback" not in result.stderr
