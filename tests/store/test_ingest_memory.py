"""A first backup holds no state per block: its memory must not grow with the disk.

Appliances back up disks of several TB on machines with a few GB of RAM; the ingest once
kept a dict entry or two per block (about 11 MiB per GiB of disk). Here a first backup of
8,192 distinct small blocks runs under tracemalloc, and what the store's code holds
between reads (the reads themselves left out) stays under a fixed budget that a dict
entry per block would overrun (the ingest before this test held 4.7 MB here).
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import cairn
from cairn.sources.image import ImageSource
from cairn.store.ingest import Ingest
from cairn.store.reader import PointReader
from cairn.store.repository import Repository

PACKAGE = str(Path(cairn.__file__).resolve().parent)
BLOCK = 4096
BLOCKS = 8192
BUDGET = 3 * 1024 * 1024  # about 380 bytes a block: less than a dict entry and its key


def _blocks() -> Iterator[bytes]:
    """``BLOCKS`` blocks that differ in their first 8 bytes; cheap to make and to pack."""
    pattern = bytes(range(256)) * (BLOCK // 256)
    for n in range(BLOCKS):
        yield n.to_bytes(8, "big") + pattern[8:]


def _in_store(filename: str) -> bool:
    """Allocated by cairn's own code, not by the source's reads."""
    return filename.startswith(f"{PACKAGE}/") and not filename.startswith(f"{PACKAGE}/sources/")


def test_a_first_backup_holds_a_fixed_budget_whatever_the_number_of_blocks(
        tmp_path: Path) -> None:
    img = tmp_path / "img"
    img.write_bytes(b"".join(_blocks()))
    read, held = [0], [0]

    def after_each_read(done: int) -> None:
        """After the last read: the ingest then holds all it will about every block."""
        read[0] += done
        if read[0] == BLOCKS * BLOCK:  # one snapshot: each takes about a second
            held[0] = sum(s.size for s in tracemalloc.take_snapshot().statistics("filename")
                          if _in_store(s.traceback[0].filename))

    with Repository.init(tmp_path / "repo", block_size=BLOCK) as repo:
        tracemalloc.start()
        try:
            with ImageSource(img) as src:
                point = Ingest(repo, "v", src, progress=after_each_read).run()
        finally:
            tracemalloc.stop()
        assert [h for _, h in PointReader(repo, point).block_hashes()] == [
            repo.chunks.hash(block) for block in _blocks()]
    assert 0 < held[0] < BUDGET, f"held {held[0]} bytes for {BLOCKS} blocks"
