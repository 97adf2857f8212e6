from __future__ import annotations

import pytest

from kernel_sentinel.sizes import SizeError, format_bytes, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [("512M", 512 << 20), ("8G", 8 << 30), ("1.5g", 3 << 29), ("300MiB", 300 << 20), ("1024", 1024),
     (" 2 GB ", 2 << 30), ("10k", 10240)],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


def test_percentage_of_a_total():
    assert parse_size("80%", of=1000) == 800
    with pytest.raises(SizeError, match="no total"):
        parse_size("80%")


@pytest.mark.parametrize("bad", ["", "lots", "12X", "-5G", "0", "150%", "0%"])
def test_bad_sizes_have_one_line_messages(bad):
    with pytest.raises(SizeError) as info:
        parse_size(bad, of=100)
    assert "\n" not in str(info.value)


def test_format():
    assert format_bytes(None) == "?"
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536 << 20) == "1.5 GiB"
    assert format_bytes(300 << 20) == "300 MiB"
