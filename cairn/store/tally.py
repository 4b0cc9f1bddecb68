"""What a backup will commit, gathered in small batches and kept in the catalog.

A first backup of a disk of a few TB starts tens of millions of runs and writes as many
chunks: held in memory until the commit, that cost about 11 MiB per GiB of disk. Here at
most STAGE_ROWS of each wait in memory; the rest waits in the catalog (`Catalog.stage`),
and `Catalog.commit_point` folds it in with the point, in the same transaction. Staged rows
belong to the session: a backup killed halfway leaves them to go with its session.
"""

from __future__ import annotations

from collections.abc import Iterable

from cairn.store.catalog import Catalog

STAGE_ROWS = 2048


class Tally:
    """The runs and written chunks of one session, handed to the catalog by the batch.

    A chunk's run and its write usually land in the same batch, so they go as one row;
    rows go in key order, which SQLite's B-tree takes several times faster than random.
    """

    def __init__(self, catalog: Catalog, session: int) -> None:
        self.catalog = catalog
        self.session = session
        self.rows: dict[bytes, list[int]] = {}
        """per chunk: [runs, size, stored bytes] not staged yet"""
        self.bytes_stored = 0

    def _row(self, digest: bytes) -> list[int]:
        row = self.rows.get(digest)
        if row is None:
            row = self.rows[digest] = [0, 0, 0]
        return row

    def add_runs(self, digests: Iterable[bytes]) -> None:
        """One new run for each of ``digests`` (repeats count again)."""
        for digest in digests:
            self._row(digest)[0] += 1
        if len(self.rows) >= STAGE_ROWS:
            self.flush()

    def add_written(self, digest: bytes, size: int, stored: int) -> None:
        """A chunk of ``size`` bytes this session wrote, taking ``stored`` bytes."""
        row = self._row(digest)
        row[1], row[2] = size, stored
        self.bytes_stored += stored
        if len(self.rows) >= STAGE_ROWS:
            self.flush()

    def drop_runs(self) -> None:
        """Forget every run counted so far, staged or not (a count to start again)."""
        self.flush()
        self.catalog.unstage_runs(self.session)

    def flush(self) -> None:
        """Stage what is held, before the commit and whenever a batch is full."""
        if self.rows:
            self.catalog.stage(self.session, sorted(
                (digest, *row) for digest, row in self.rows.items()))
            self.rows = {}
