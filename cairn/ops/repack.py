"""Repack: the newest points' scattered blocks gathered into packs of their own
(`store.repack`), for `cairn repack`, the API's and the console's repack task, and the
appliance's repack loop alike."""

from __future__ import annotations

from pathlib import Path

from cairn.ops.progress import Progress
from cairn.store.repack import RepackResult, repack
from cairn.store.repository import Repository
from cairn.units import human_bytes


def repack_repository(repo: Path | Repository, volumes: list[str] | None = None,
                      dry_run: bool = False, progress: Progress | None = None) -> RepackResult:
    """One repack pass over ``volumes`` (default: all) of ``repo`` (opened here when a
    path); `Locked` when another repack runs. ``progress`` is told its phases, in counts."""
    if isinstance(repo, Repository):
        return repack(repo, volumes, dry_run, progress=progress)
    with Repository.open(repo) as opened:
        return repack(opened, volumes, dry_run, progress=progress)


def repack_line(result: RepackResult, dry_run: bool) -> str:
    """A repack's outcome in one line."""
    if result.skipped:
        return f"nothing to repack: {result.skipped}"
    verb = "would move" if dry_run else "moved"
    return (f"{verb} {result.moved_chunks} chunks ({human_bytes(result.moved_bytes)}); "
            f"compacted {result.compacted_packs} packs left sparse ({result.compacted_chunks} "
            f"chunks, {human_bytes(result.compacted_bytes)}) in {result.seconds:.1f} s")
