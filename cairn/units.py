"""Sizes as people read them: binary units (KiB, MiB, GiB), the same in every output."""

from __future__ import annotations

import re


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


_SIZE = re.compile(r"^(\d+)\s*([KMGT]?)(?:i?B)?$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``65536``, ``64K``, ``64KiB``, ``1M`` to bytes, in binary units like every size cairn
    prints; `ValueError` names the forms it takes."""
    m = _SIZE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not a size: give bytes, or a number with K, M, G or T "
                         "(binary: 64K = 65536)")
    return int(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " ")
