"""Reading many objects on a few threads without reading far ahead of the consumer.

Imported only by the commands that read in bulk (restore, verify): the thread pool costs
a short command such as `cairn delete` a noticeable share of its start-up.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def bounded_map(fn: Callable[[T], R], items: Iterable[T], workers: int) -> Iterator[R]:
    """``map(fn, items)`` on ``workers`` threads, in order, with at most ``2 * workers``
    results waiting: unlike `ThreadPoolExecutor.map` it never reads far ahead of the
    consumer, so memory stays flat whatever the number of items."""
    with ThreadPoolExecutor(workers) as pool:
        window: deque[Future[R]] = deque()
        for item in items:
            window.append(pool.submit(fn, item))
            if len(window) >= 2 * workers:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()


def get_each(get: Callable[[str], bytes], names: list[str], each: Callable[[str, bytes], T],
             workers: int) -> Iterator[T]:
    """`Backend.get_many` for storage read one object per request; a single object (a
    block of a point read through `PointReader`) is read on the calling thread."""
    if len(names) == 1:
        return (each(name, get(name)) for name in names)
    return bounded_map(lambda name: each(name, get(name)), names, workers)
