"""Durations as docker and Compose write them (Go's ``time.ParseDuration``): ``30s``,
``1m30s``, ``500ms``, ``1.5h``. Nothing imported: ``nyx run`` parses its flags with it."""

from __future__ import annotations

__all__ = ["parse_duration"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}
_UNITS["h"] = 3600.0
_DIGITS = "0123456789"


def parse_duration(text: str) -> float:
    """Seconds in ``text``: numbers each followed by a unit (``ns us ms s m h``); ``0`` alone
    needs none.

    :raises ValueError: naming the text and what is wrong with it.
    """
    s = text.strip()
    if s == "0":
        return 0.0
    if not s:
        raise ValueError("duration '': empty (write e.g. 30s, 1m30s, 500ms)")
    total, i = 0.0, 0
    while i < len(s):
        j = i
        while j < len(s) and (s[j] in _DIGITS or s[j] == "."):
            j += 1
        number = s[i:j]
        if not any(c in _DIGITS for c in number) or number.count(".") > 1:
            raise ValueError(f"duration {text!r}: expected a number at {s[i:]!r}")
        k = j
        while k < len(s) and s[k] not in _DIGITS and s[k] != ".":
            k += 1
        unit = s[j:k]
        if not unit:
            raise ValueError(f"duration {text!r}: {number} needs a unit (e.g. {number}s)")
        if unit not in _UNITS:
            raise ValueError(f"duration {text!r}: unknown unit {unit!r} (ns, us, ms, s, m or h)")
        total += float(number) * _UNITS[unit]
        i = k
    return total
