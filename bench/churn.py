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
    """Writes `writes` random 4 KiB pages per step into `image`, at 4 KiB-aligned offsets.

    ``data_only`` keeps the writes where the (sparse) image already holds data, as a
    long-running machine rewrites its files: then every point holds as much data as the
    first, and restores of old and new points compare history, not size. Otherwise a write
    may land in a hole and each one allocates a whole 64 KiB block of the image.
    """

    def __init__(self, image: Path, writes: int = 32, seed: int = 1,
                 data_only: bool = False) -> None:
        self.image = image
        self.writes = writes
        self.random = random.Random(seed)
        size = image.stat().st_size
        self.pages = _data_pages(image) if data_only else range(size // WRITE)

    def step(self, ranges_file: Path) -> list[list[int]]:
        """Apply one step of writes, durably, and record their ranges in `ranges_file`."""
        offsets = sorted({self.random.choice(self.pages) * WRITE for _ in range(self.writes)})
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


def _data_pages(image: Path) -> list[int]:
    """The 4 KiB pages of ``image`` that are not in a hole of the file."""
    pages: list[int] = []
    fd = os.open(image, os.O_RDONLY)
    try:
        end, offset = os.fstat(fd).st_size, 0
        while offset < end:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            offset = os.lseek(fd, start, os.SEEK_HOLE)
            pages.extend(range(start // WRITE, offset // WRITE))
    finally:
        os.close(fd)
    return pages
