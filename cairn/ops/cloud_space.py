"""Space in a cloud repository: its prune over packs and the conversion of a legacy one.

One implementation for `cairn cloud prune|convert`, and for what deleting points in a cloud
repository (`cairn delete`, `cairn prune`, the offsite retention) does after: it runs a
prune unless another is already at work (whose run, or the next, frees the space then); a
prune that fails there fails no delete (the points are gone either way).
The two steps and why they are safe beside writers: `cloud_prune`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from cairn import logs
from cairn.errors import CairnError
from cairn.ops.progress import Progress
from cairn.store.cloud import Cloud
from cairn.store.cloud_convert import ConvertReport, convert
from cairn.store.cloud_held import Waiting, release, waiting
from cairn.store.cloud_prune import PruneReport, packs_of, prune
from cairn.store.phases import phase
from cairn.store.profiles import is_cloud
from cairn.store.repository import Repository
from cairn.units import human_bytes


@dataclass(frozen=True)
class CloudPrune:
    """A prune's report, and the legacy objects Object Lock held that it deleted once
    their date passed (`cloud_held`), with what still waits."""

    pruned: PruneReport
    released: int
    waiting: Waiting

    def json(self) -> dict[str, Any]:
        return {**self.pruned.json(), "legacy_released": self.released,
                "legacy_held": self.waiting.objects, "legacy_held_until": self.waiting.until}


def prune_cloud(repo: Repository, dry_run: bool = False,
                progress: Progress | None = None) -> CloudPrune:
    """Condemn dead packs, repack sparse ones, delete what was condemned a grace ago; then
    delete the legacy objects a conversion left under Object Lock whose date passed.
    ``progress`` is told each phase and its counts (volumes, packs), not bytes."""
    pruned = prune(repo, dry_run, progress=progress)
    cloud = repo.remote
    assert isinstance(cloud, Cloud)  # `prune` refused anything else
    if dry_run:
        return CloudPrune(pruned, 0, waiting(cloud))
    with phase(progress, 0, "held legacy objects whose lock passed, deleted"):
        released, left = release(cloud, packs_of(repo))
    return CloudPrune(pruned, released, left)


def convert_cloud(repo: Repository, progress: Progress | None = None) -> ConvertReport:
    """Move a legacy repository's one-object-per-chunk objects into packs (resumable)."""
    return convert(repo, progress)


def prune_line(done: CloudPrune) -> str:
    """A prune's report in one line (the CLI's, the API's task result, the console's)."""
    pruned = done.pruned
    verb = "would" if pruned.dry_run else "did"
    released = (f"; deleted {done.released} legacy object(s) whose Object Lock passed"
                if done.released else "")
    return (f"{pruned.points} point(s), {pruned.packs} pack(s): {verb} condemn "
            f"{len(pruned.condemned)} (repacking {len(pruned.repacked)}), delete "
            f"{len(pruned.deleted)} condemned a grace period ago, freeing "
            f"{human_bytes(pruned.bytes_freed)}; lifted {len(pruned.lifted)}{released}"
            f"{_locked(pruned.held, pruned.held_until)}{_unreadable(pruned.unreadable)}"
            f"{_held(done.waiting.objects, done.waiting.until)}")


def _locked(count: int, until: float | None) -> str:
    if not count or until is None:
        return ""
    return (f"; {count} condemned pack(s) wait for their Object Lock to pass (until "
            f"{_date(until)}): a later `cairn cloud prune` deletes them then")


def _unreadable(packs: list[str]) -> str:
    if not packs:
        return ""
    return (f"; kept {len(packs)} hidden pack(s) whose index could not be read or opened "
            f"({', '.join(packs[:3])}{' ...' if len(packs) > 3 else ''}): nothing proves "
            "them unused; see the log for why")


def _date(when: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(when))


def _held(count: int, until: float | None) -> str:
    if not count or until is None:
        return ""
    return (f"; {count} packed legacy object(s) wait for their Object Lock to pass (until "
            f"{_date(until)}): a later "
            "`cairn cloud prune` or `convert` deletes them then")


def convert_line(done: ConvertReport) -> str:
    """A conversion's report in one line."""
    damaged = (f"; left {len(done.damaged)} damaged object(s) in place: "
               f"{', '.join(done.damaged[:3])}" if done.damaged else "")
    return (f"packed {done.chunks_packed} chunk(s) ({human_bytes(done.bytes_packed)}) into "
            f"{len(done.packs_written)} pack(s), deleted {done.objects_deleted} legacy "
            f"object(s){damaged}{_held(done.held_objects, done.held_until)}")


def after_delete(repo: Repository) -> PruneReport | None:
    """A prune after points left a cloud repository, without waiting for another prune,
    then the deletion of held legacy objects whose Object Lock passed (None when ``repo``
    is local, when another prune holds the lock, or when the prune failed: the points are
    deleted all the same, and `cairn cloud prune` says why)."""
    if not is_cloud(repo.location):
        return None
    try:
        pruned = prune(repo, wait=0.0)
        cloud = repo.remote
        assert isinstance(cloud, Cloud)
        release(cloud, packs_of(repo))
        return pruned
    except CairnError as exc:
        logs.event("cloud.prune_deferred", where=repo.location, why=str(exc))
        return None
