"""What long jobs (replicate, verify) report their progress to: bytes done, and the bytes
they will do as soon as they know them, so a bar can show a total and an ETA."""

from __future__ import annotations

from typing import Protocol


class Meter(Protocol):
    def __call__(self, done: int) -> None:
        """``done`` more bytes are finished."""

    def expect(self, more: int) -> None:
        """The job learnt of ``more`` bytes it will do (totals grow, e.g. point by point)."""
