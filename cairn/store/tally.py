"""What a backup will commit, gathered in small batches and kept in the catalog.

A first backup of a disk of a few TB starts tens of millions of runs and writes as many
chunks: held in memory until the commit, that cost about 11 MiB per GiB of disk. Here at
most STAGE_ROWS of each wait in memory; the rest waits in the catalog (`Catalog.stage`),
and `Catalog.commit_point` folds it in with the point, in the same transaction. Staged rows
belong to the session: a backup killed halfway leaves them to go with its session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from cairn.store.catalog import Catalog

STAGE_ROWS = 2048


class Tally:
    """The runs and written chunks of one session, handed to the catalog by the batch."""

    def __init__(self, catalog: Catalog, session: int) -> None:
        self.catalog = catalog
        self.session = session
        self.runs: Counter[bytes] = Counter()
        self.written: list[tuple[bytes, int, int]] = []
        self.bytes_stored = 0

    def add_runs(self, digests: Iterable[bytes]) -> None:
        """One new run for each of ``digests`` (repeats count again)."""
        self.runs.update(digests)
        if len(self.runs) >= STAGE_ROWS:
            self.flush()

    def add_written(self, digest: bytes, size: int, stored: int) -> None:
        """A chunk of ``size`` bytes this session wrote, taking ``stored`` bytes."""
        self.written.append((digest, size, stored))
        self.bytes_stored += stored
        if len(self.written) >= STAGE_ROWS:
            self.flush()

    def drop_runs(self) -> None:
        """Forget every run counted so far, staged or not (a count to start again)."""
        self.flush()
        self.catalog.unstage_runs(self.session)

    def flush(self) -> None:
        """Stage what is held, before the commit and whenever a batch is full."""
        if self.runs or self.written:
            self.catalog.stage(self.session, self.runs, self.written)
            self.runs, self.written = Counter(), []
