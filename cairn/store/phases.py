"""How a long store operation (a cloud prune, a conversion, a repack) reports its phases
and how far each has gone, to whoever watches: `cairn.ops.progress.Progress` seen from the
store, which does not import the operations layer. Given a total and the phase's name, it
gives a context told each count done; None means no one watches."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

Advance = Callable[[int], None]
Progress = Callable[[int, str], AbstractContextManager[Advance]]


def _ignore(_n: int) -> None:
    """No one watches."""


def phase(progress: Progress | None, total: int, what: str) -> AbstractContextManager[Advance]:
    """The context of one phase of ``total`` steps (0: not known), or one told nothing."""
    return progress(total, what) if progress is not None else nullcontext(_ignore)
