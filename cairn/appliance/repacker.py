"""The repack loop: every ``repack_seconds`` the appliance repacks its repository by itself.

Backups append only what changed, so each volume's newest point drifts apart over many
backups; a pass (`cairn.store.repack`, the same code as `cairn repack`) gathers it again
once it reads in enough short reads to be worth it, and otherwise costs a few index
queries per volume. It runs in its own thread beside backups and restores (the store
allows it), never two at once; a pass that finds another repack running (`cairn repack`
by hand) leaves the work to it.
"""

from __future__ import annotations

from pathlib import Path

from cairn import logs
from cairn.appliance import metrics
from cairn.appliance.config import ApplianceConfig
from cairn.appliance.ticker import Ticker
from cairn.errors import Locked
from cairn.ops.repack import repack_repository
from cairn.store.repack import RepackResult


class Repacker(Ticker):
    name = "repacker"

    def __init__(self, repo: Path, config: ApplianceConfig) -> None:
        super().__init__(config.repack_seconds)
        self.repo = repo

    def tick(self, now: float) -> None:
        self.run()

    def run(self) -> RepackResult | None:
        """One pass; None when another repack was running."""
        try:
            result = repack_repository(self.repo)
        except Locked:
            logs.event("repack.deferred", reason="another repack is running")
            return None
        if result.moved_chunks:
            metrics.add("cairn_repack_bytes_total", result.moved_bytes + result.compacted_bytes)
            logs.event("repack.done", points=[p.point for p in result.points if p.moved_chunks],
                       chunks=result.moved_chunks, bytes=result.moved_bytes,
                       compacted_packs=result.compacted_packs,
                       compacted_bytes=result.compacted_bytes, seconds=round(result.seconds, 1))
        return result
