"""Usage mistakes on the command line: a short message and exit 1, never a traceback."""

from __future__ import annotations

import pytest

from conftest import Cli


@pytest.mark.parametrize(
    "args",
    [
        ["list", "--no-such-option"],
        ["send", "--to"],
        ["no-such-command"],
        ["list", "--limit", "many"],
        ["list", "--account", "nobody-here"],
    ],
)
def test_usage_errors_are_one_message_not_a_traceback(cli: Cli, args: list[str]) -> None:
    result = cli(*args, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "Error" in result.stderr or result.stderr.startswith("wsemail: ")
