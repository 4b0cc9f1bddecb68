"""Restoring a whole point: to a sparse raw file, a block device, or qcow2/vmdk/vhdx; a
machine point restores every disk into a folder, one image per disk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cairn.errors import DestinationError
from cairn.ops.machine_points import resolve as resolve_machine_point
from cairn.ops.machine_points import restore_machine_point
from cairn.ops.progress import Progress, quiet
from cairn.restore.convert import FORMATS, restore_as
from cairn.restore.writer import describe_lost
from cairn.store.reader import PointReader
from cairn.store.repository import Repository

__all__ = ["FORMATS", "RestoreResult", "refuse_overwrite", "restore"]


@dataclass(frozen=True)
class RestoreResult:
    id: str
    """the point's id, or the machine point's"""
    machine: str | None
    """the machine, when a machine point was restored"""
    size: int
    files: list[Path]
    format: str
    lost: str = ""
    """with ``ignore_damage``: the blocks of a damaged point written as zeros, in words"""


def refuse_overwrite(dest: Path) -> None:
    """Refuse to write over an existing file, or into a folder already holding files (a
    machine point's images), unless the user said so: a restore is often run at 3 a.m. over
    the wrong path. A block device is always the point of the exercise."""
    if dest.is_file() or dest.is_symlink():
        raise DestinationError(f"{dest} exists: restore does not overwrite files; remove it, "
                               "choose another path, or pass --force")
    if dest.is_dir() and any(dest.iterdir()):
        raise DestinationError(f"{dest} is a folder that is not empty: give an empty or new "
                               "folder, or pass --force to write its images there")


def restore(repo: Repository, ref: str, dest: Path, fmt: str = "raw",
            progress: Progress = quiet, ignore_damage: bool = False) -> RestoreResult:
    """Write what ``ref`` names to ``dest`` in ``fmt`` (a folder for a machine point).

    A damaged point fails naming its damage, unless ``ignore_damage``: then unreadable
    blocks are written as zeros and listed in ``lost``."""
    machine_point = resolve_machine_point(repo, ref)
    if machine_point is not None:
        with progress(machine_point.size, f"restore {machine_point.id}") as advance:
            files = restore_machine_point(repo, machine_point, dest, fmt, advance)
        return RestoreResult(machine_point.id, machine_point.machine, machine_point.size,
                             files, fmt)
    point = repo.resolve(ref)
    with progress(point.size, f"restore {point.id}") as advance:
        lost = restore_as(PointReader(repo, point), dest, fmt, advance, ignore_damage)
    return RestoreResult(point.id, None, point.size, [dest], fmt,
                         describe_lost(lost, repo.block_size) if lost else "")
