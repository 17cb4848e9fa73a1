"""The paper's test bed (`wsemail bench testbed`) in a short run, so it cannot rot: two real
server processes over TLS, every operation kind, the relay, both byte tables. No timing
assertions: speed targets live in the benchmark itself."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from wsemail.bench.testbed import OPS, Options, parse_mix, run_testbed
from wsemail.protocol.errors import UsageError

from conftest import wsemail_binary


def test_a_short_test_bed_run_exercises_every_operation_and_both_tables(tmp_path: Path) -> None:
    result = run_testbed(
        Options(clients=3, requests=80, seed=7, data_dir=tmp_path / "bed"), quiet=True
    )
    assert result["failed"] == 0, result["failures"]
    per_op = result["per_op"]
    assert set(per_op) == set(OPS)
    assert all(per_op[op]["count"] > 0 for op in OPS)
    assert sum(per_op[op]["count"] for op in OPS) == result["requests"] == 3 * 80
    assert sum(s["share_percent"] for s in per_op.values()) == pytest.approx(100, abs=0.5)
    for op in OPS:
        stats = per_op[op]
        assert stats["bytes_client_to_server"] > 0 and stats["bytes_server_to_client"] > 0
        lat = stats["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert result["bytes"]["client_to_server"] == sum(
        per_op[op]["bytes_client_to_server"] for op in OPS
    )
    assert {"mean", "p50", "p99", "max"} <= set(result["latency_ms"])
    assert result["requests_per_s"] > 0 and result["messages_per_minute"] > 0
    # every send went to one external user: all of them were relayed, signed and verified
    local = result["servers"]["local.test"]
    assert result["queue_left"] == 0
    assert local["messages_relayed"] == per_op["send"]["count"]
    assert local["sent_bytes"] > 0 and local["confirmation_bytes"] > 0
    # the external server's feed reached the local server through its own relay
    assert result["external_feed"]["sent"] >= 3 and result["external_feed"]["failed"] == 0
    external = result["servers"]["external.test"]
    assert external["messages_relayed"] == result["external_feed"]["sent"]


def test_the_command_prints_json_with_the_papers_figures(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            wsemail_binary(),
            "bench",
            "testbed",
            "--clients",
            "2",
            "--requests",
            "40",
            "--mix",
            "send=1,list=1,retrieve=1,delete=1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    figures = json.loads(done.stdout)
    assert figures["failed"] == 0 and figures["requests"] == 80
    assert {"latency_ms", "requests_per_s", "messages_per_minute", "per_op", "bytes"} <= set(
        figures
    )


def test_bad_options_are_one_line_errors() -> None:
    with pytest.raises(UsageError, match="--mix"):
        parse_mix("1,2")
    with pytest.raises(UsageError, match="--mix"):
        parse_mix("mail=1")
    assert parse_mix("50,50,0,0") == {"send": 0.5, "list": 0.5, "retrieve": 0.0, "delete": 0.0}
    with pytest.raises(UsageError, match="--clients"):
        run_testbed(Options(clients=0))
    done = subprocess.run(
        [wsemail_binary(), "bench", "testbed", "--mix", "nonsense"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_short_run_with_signed_answers(tmp_path: Path) -> None:
    result = run_testbed(
        Options(clients=2, requests=30, seed=3, data_dir=tmp_path / "bed", signed_answers=True),
        quiet=True,
    )
    assert result["failed"] == 0, result["failures"]
    assert result["signed_answers"] is True and result["requests"] == 60
