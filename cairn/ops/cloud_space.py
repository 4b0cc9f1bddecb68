"""Space in a cloud repository: its prune over packs and the conversion of a legacy one.

One implementation for `cairn cloud prune|convert`, and for what deleting points in a cloud
repository (`cairn delete`, `cairn prune`, the offsite retention) does after: it runs a
prune unless another is already at work (whose run, or the next, frees the space then); a
prune that fails there fails no delete (the points are gone either way).
The two steps and why they are safe beside writers: `cloud_prune`.
"""

from __future__ import annotations

from cairn import logs
from cairn.errors import CairnError
from cairn.ops.progress import Progress
from cairn.store.cloud_convert import ConvertReport, convert
from cairn.store.cloud_prune import PruneReport, prune
from cairn.store.profiles import is_cloud
from cairn.store.repository import Repository
from cairn.units import human_bytes


def prune_cloud(repo: Repository, dry_run: bool = False) -> PruneReport:
    """Condemn dead packs, repack sparse ones, delete what was condemned a grace ago."""
    return prune(repo, dry_run)


def convert_cloud(repo: Repository, progress: Progress | None = None) -> ConvertReport:
    """Move a legacy repository's one-object-per-chunk objects into packs (resumable)."""
    return convert(repo, progress)


def prune_line(pruned: PruneReport) -> str:
    """A prune's report in one line (the CLI's, the API's task result, the console's)."""
    verb = "would" if pruned.dry_run else "did"
    return (f"{pruned.points} point(s), {pruned.packs} pack(s): {verb} condemn "
            f"{len(pruned.condemned)} (repacking {len(pruned.repacked)}), delete "
            f"{len(pruned.deleted)} condemned a grace period ago, freeing "
            f"{human_bytes(pruned.bytes_freed)}; lifted {len(pruned.lifted)}")


def convert_line(done: ConvertReport) -> str:
    """A conversion's report in one line."""
    damaged = (f"; left {len(done.damaged)} damaged object(s) in place: "
               f"{', '.join(done.damaged[:3])}" if done.damaged else "")
    return (f"packed {done.chunks_packed} chunk(s) ({human_bytes(done.bytes_packed)}) into "
            f"{len(done.packs_written)} pack(s), deleted {done.objects_deleted} legacy "
            f"object(s){damaged}")


def after_delete(repo: Repository) -> PruneReport | None:
    """A prune after points left a cloud repository, without waiting for another prune
    (None when ``repo`` is local, when another prune holds the lock, or when the prune
    failed: the points are deleted all the same, and `cairn cloud prune` says why)."""
    if not is_cloud(repo.location):
        return None
    try:
        return prune(repo, wait=0.0)
    except CairnError as exc:
        logs.event("cloud.prune_deferred", where=repo.location, why=str(exc))
        return None
