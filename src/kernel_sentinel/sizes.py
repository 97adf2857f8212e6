"""Byte sizes as people write them (``512M``, ``8G``, ``80%``) and as people read them."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*|%)\s*$")


class SizeError(ValueError):
    """A size that cannot be read; its message is one line meant for the user."""


def parse_size(text: str | int, *, of: int | None = None) -> int:
    """Return the number of bytes ``text`` means; the one parser behind every SIZE option.

    Units are binary (``1K`` = 1024), as in ``docker --memory`` and Kubernetes' ``Mi``/``Gi``.
    A percentage needs ``of``, the total it is a share of (usually the memory budget).
    """
    if isinstance(text, int):
        if text <= 0:
            raise SizeError(f"size must be positive, got {text}")
        return text
    match = _SIZE.match(str(text))
    if not match:
        raise SizeError(f"cannot read size {text!r}: write it like 512M, 8G or 80%")
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if of is None:
            raise SizeError(f"{text!r} is a percentage, but there is no total to take it of")
        if not 0 < number <= 100:
            raise SizeError(f"percentage must be in (0, 100], got {text!r}")
        return int(of * number / 100)
    if unit not in _UNITS:
        raise SizeError(f"unknown unit {match.group(2)!r} in {text!r}: use K, M, G or T")
    value = int(number * _UNITS[unit])
    if value <= 0:
        raise SizeError(f"size must be positive, got {text!r}")
    return value


def format_bytes(n: int | float | None) -> str:
    """Return ``n`` bytes as a short human string (``1.5 GiB``); ``?`` when unknown."""
    if n is None:
        return "?"
    sign = "-" if n < 0 else ""
    n = abs(float(n))
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            if unit == "B":
                return f"{sign}{int(n)} B"
            return f"{sign}{n:.1f} {unit}" if n < 100 else f"{sign}{n:.0f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")
