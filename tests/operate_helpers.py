"""Shared by the operate tests: a.test holding mail for b.test, which is down (started once
for its address, then stopped), and the real `wsemail` binary as someone of a.test."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from test_federation import start_domain

from conftest import PASSWORD, Running, wsemail_binary


def down_b(tmp: Path, ca: Path) -> str:
    """b.test's URL, with nothing listening there any more."""
    b = start_domain(tmp, ca, "b.test")
    url = b.url
    b.stop()
    return url


def holding_a(tmp: Path, ca: Path, **settings: Any) -> Running:
    """a.test routing b.test to a stopped server; retries an hour apart."""
    return start_domain(
        tmp,
        ca,
        "a.test",
        routes={"b.test": [down_b(tmp, ca)]},
        **{"retry_base": 3600.0, "retry_max": 7200.0, "relay_poll": 0.1, **settings},
    )


def run(
    running: Running, ca: Path, *args: str, user: str = "admin@a.test", **extra: str
) -> subprocess.CompletedProcess[str]:
    """`wsemail ARGS` as `user` of `running` (TLS and signed answers checked with `ca`)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSEMAIL_")}
    env.update(
        WSEMAIL_SERVER=running.url,
        WSEMAIL_USER=user,
        WSEMAIL_PASSWORD=PASSWORD,
        WSEMAIL_CACERT=str(ca / "root.pem"),
        WSEMAIL_TRUST_ROOTS=str(ca / "root.pem"),
        WSEMAIL_TLS_NAME=running.config.domain,
        WSEMAIL_CLIENT_CONFIG=str(ca.parent / "client.toml"),
        PYTHON_KEYRING_BACKEND="keyring.backends.fail.Keyring",
        **extra,
    )
    return subprocess.run(
        [wsemail_binary(), *args], capture_output=True, text=True, env=env, timeout=60
    )


def one_line_failure(result: subprocess.CompletedProcess[str], code: int) -> str:
    """A refusal: exit `code`, one line on stderr, no traceback; returns that line."""
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]
