"""Names that sort by their writer's time, so a node lists only what is new since last time.

A repository shared by many appliances gains objects all the time (pack indexes, point
records); listing a whole prefix at every sync costs one request per thousand objects ever
written, which grows without end. An object named by `new_key` starts with the writer's
clock in microseconds, so `since` asks the server only for names after a cursor
(ListObjectsV2 ``StartAfter``): a sync with nothing new is one request whatever the size of
the repository.

Clocks differ and a PUT takes time, so a name may land *behind* a cursor another node has
already passed. The cursor is therefore set back by ``WINDOW`` at each listing (names inside
the window are listed again, and callers treat them idempotently), and a node whose own
clock is behind the server's by more than a window stamps its names with the server's time
instead (`Clock`). A name that still slips past (a writer stalled longer than the window
between taking its key and its PUT) is found by the next full listing: nothing that must
never miss an object (a prune deciding what is dead) relies on `since`; it lists in full.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Protocol

WINDOW = 15 * 60.0
"""How far behind a cursor a name may land and still be seen (clock skew + PUT time)."""

KEY = re.compile(r"^[0-9a-f]{14}[0-9a-f]{18}$")


class Listable(Protocol):
    def stamps(self, prefix: str, after: str | None = None) -> Iterator[tuple[str, float]]: ...


class Clock:
    """This node's time for new keys: its own clock, or the server's when that is ahead
    (learnt from any object's LastModified the node wrote or read). Taking the later of
    the two keeps a node with a slow clock from writing names behind everyone's cursor."""

    def __init__(self) -> None:
        self.offset = 0.0

    def learn(self, server_time: float, local_time: float | None = None) -> None:
        """The server said it was ``server_time`` at about ``local_time`` (now)."""
        ahead = server_time - (time.time() if local_time is None else local_time)
        self.offset = max(self.offset, ahead)

    def now(self) -> float:
        return time.time() + self.offset


def new_key(when: float) -> str:
    """32 hex digits: microseconds since the epoch, then 72 random bits (the random part
    also spreads objects whose prefix is cut from the key's end)."""
    return f"{int(when * 1_000_000):014x}{os.urandom(9).hex()}"


def key_time(key: str) -> float:
    """The writer's time a key carries (seconds since the epoch)."""
    if not KEY.match(key):
        raise ValueError(f"{key!r} is not a feed key")
    return int(key[:14], 16) / 1_000_000


def name_time(name: str) -> float:
    """The writer's time of an object named ``<prefix>/<key>[.<anything>]``."""
    return key_time(name.rpartition("/")[2].partition(".")[0])


def cursor_name(prefix: str, since: float) -> str:
    """The name to list after: every key written at ``since - WINDOW`` or later sorts
    after it."""
    start = max(0.0, since - WINDOW)
    return f"{prefix.strip('/')}/{int(start * 1_000_000):014x}"


def since(bucket: Listable, prefix: str, cursor: float | None
          ) -> Iterator[tuple[str, float]]:
    """Every ``(name, server time)`` under ``prefix`` that may be new since ``cursor`` (a
    writer time a previous listing returned, see `newest`), or every one when ``cursor``
    is None. Names inside the window come again: the caller skips what it knows."""
    after = None if cursor is None else cursor_name(prefix, cursor)
    return bucket.stamps(prefix, after)


def after(bucket: Listable, prefix: str, last: str) -> Iterator[tuple[str, float]]:
    """Every ``(name, server time)`` under ``prefix`` sorting after ``last`` (a name a
    listing returned): what landed since in key order, without the window (the caller
    lists the window now and then to take what landed behind)."""
    return bucket.stamps(prefix, last)


def newest(names: list[str], cursor: float | None) -> float | None:
    """The cursor for the next `since`: the latest writer time among ``names`` (their last
    path part a key), or ``cursor`` when none is later."""
    times = [name_time(name) for name in names]
    best = max(times, default=None)
    if cursor is None:
        return best
    return cursor if best is None else max(best, cursor)
