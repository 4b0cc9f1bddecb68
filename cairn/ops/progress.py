"""How a long operation reports progress without knowing who watches.

An operation that moves bytes takes a `Progress`: called with the total and a description,
it gives a context whose value is told each byte count done. The CLI passes a progress bar
(`cli._common.progress`); the API and tests pass `quiet`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

Advance = Callable[[int], None]
Progress = Callable[[int, str], AbstractContextManager[Advance]]


@contextmanager
def quiet(total: int, description: str) -> Iterator[Advance]:
    """No progress shown."""
    del total, description
    yield lambda _n: None
