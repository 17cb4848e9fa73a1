"""The shared small measures and checks: one byte-size formatter, one percentile, one
address validator (messages and forms agree)."""

from __future__ import annotations

import statistics

import pytest

from wsemail.core.forms.contract import Field, _scalar
from wsemail.core.units import byte_size, percentile
from wsemail.protocol.errors import RequestInvalid
from wsemail.protocol.message import is_address, normalize_address


def test_byte_sizes_read_the_same_everywhere() -> None:
    sizes = (0, 999, 1500, 20_000, 3_300_000, 5 << 30)
    assert [byte_size(n) for n in sizes] == [
        "0 B",
        "999 B",
        "1.5 KB",
        "19.5 KB",
        "3.1 MB",
        "5.0 GB",
    ]
    assert [byte_size(n, compact=True) for n in sizes] == [
        "0B",
        "999B",
        "1.5K",
        "20K",
        "3.1M",
        "5.0G",
    ]


def test_percentiles_are_statistics_quantiles() -> None:
    values = [float(v) for v in (7, 1, 3, 9, 5, 2, 8, 4, 6, 10)]
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    assert [percentile(values, p) for p in (50, 90, 99)] == [cuts[49], cuts[89], cuts[98]]
    assert percentile(values, 50) == 5.5 and percentile(values, 99) <= max(values)
    assert percentile([], 50) == 0.0 and percentile([4.0], 99) == 4.0


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("alice@a.test", True),
        ("a.b+c@sub.a.test", True),
        ("alice@-a.test", False),  # the forms' own regex used to take these
        ("alice@a.test.", False),
        ("alice@a..", False),
        ("alice", False),
        ("a b@a.test", False),
    ],
)
def test_one_address_validator_for_messages_and_forms(text: str, valid: bool) -> None:
    assert is_address(text) is valid
    problems: list[str] = []
    value = _scalar(Field("to", "address"), text, "to", problems)
    assert (value == text, problems == []) == (valid, valid)
    if valid:
        assert normalize_address(text) == text
    else:
        with pytest.raises(RequestInvalid):
            normalize_address(text)
