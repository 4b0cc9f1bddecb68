"""Small seeded random writes into an image, reported as the changed ranges a CBT driver gives.

Why: long point histories (50, 200 points) need many small, realistic changes, each with the
exact byte ranges written, so `cairn backup --changed-ranges` can be fed without comparing
whole images. The same seed gives the same writes, so runs are comparable.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

WRITE = 4096


class Churn:
    """Writes `writes` random 4 KiB pages per step into `image`, at 4 KiB-aligned offsets."""

    def __init__(self, image: Path, writes: int = 32, seed: int = 1) -> None:
        self.image = image
        self.writes = writes
        self.random = random.Random(seed)
        self.pages = image.stat().st_size // WRITE

    def step(self, ranges_file: Path) -> list[list[int]]:
        """Apply one step of writes, durably, and record their ranges in `ranges_file`."""
        offsets = sorted({self.random.randrange(self.pages) * WRITE for _ in range(self.writes)})
        fd = os.open(self.image, os.O_WRONLY)
        try:
            for offset in offsets:
                os.pwrite(fd, self.random.randbytes(WRITE), offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        ranges = [[offset, WRITE] for offset in offsets]
        ranges_file.write_text(json.dumps(ranges))
        return ranges
