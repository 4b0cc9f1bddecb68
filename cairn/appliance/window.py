"""Daily time windows (``"22:00-06:00"``, local time, may wrap midnight).

The appliance does its heavy background work inside one: an offsite copy starts only in
its policy's window, the nightly data verification only in ``[scheduler]
data_verify_window``. Times are the appliance's local time, read through
`time.localtime`, so a window follows the clock people set on the box (and daylight
saving) rather than UTC.
"""

from __future__ import annotations

import re
import time

from cairn.errors import UsageError

_WINDOW = re.compile(r"^(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})$")
DAY = 86400


def parse_window(text: str) -> tuple[int, int]:
    """``"22:00-06:00"`` -> minutes after midnight (start, end); the window may wrap."""
    m = _WINDOW.match(text.strip())
    if m:
        h1, m1, h2, m2 = (int(g) for g in m.groups())
        if h1 < 24 and h2 < 24 and m1 < 60 and m2 < 60 and (h1, m1) != (h2, m2):
            return h1 * 60 + m1, h2 * 60 + m2
    raise UsageError(f"window {text!r} is not HH:MM-HH:MM with two different times, e.g. "
                     "22:00-06:00")


def _minute(now: float) -> tuple[int, time.struct_time]:
    t = time.localtime(now)
    return t.tm_hour * 60 + t.tm_min, t


def _midnight(t: time.struct_time, days: int = 0) -> float:
    """Local midnight of ``t``'s day plus ``days`` (mktime normalises a day out of range)."""
    return time.mktime((t.tm_year, t.tm_mon, t.tm_mday + days, 0, 0, 0, 0, 0, -1))


def in_window(window: str | None, now: float) -> bool:
    if not window:
        return True
    start, end = parse_window(window)
    minute, _ = _minute(now)
    return start <= minute < end if start < end else minute >= start or minute < end


def window_end(window: str | None, now: float) -> float | None:
    """When the window open at ``now`` closes (None: no window, never)."""
    if not window:
        return None
    start, end = parse_window(window)
    minute, t = _minute(now)
    return _midnight(t, 1 if start > end and minute >= start else 0) + end * 60


def window_start(window: str, now: float) -> float:
    """When the window open at ``now`` opened: a wrapping window open after midnight
    opened the evening before. ``now`` must be inside the window."""
    start, end = parse_window(window)
    minute, t = _minute(now)
    return _midnight(t, -1 if start > end and minute < end else 0) + start * 60
