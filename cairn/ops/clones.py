"""Clones: writable copies of points, made in constant time (`store/clones.py`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cairn.ops.machine_points import clone_machine_point
from cairn.ops.machine_points import resolve as resolve_machine_point
from cairn.store.clone_writers import check_free
from cairn.store.clones import Clone, create_clone, get_clone, list_clones, remove_clone
from cairn.store.repository import Repository


def clone_json(clone: Clone) -> dict[str, Any]:
    return {"name": clone.name, "point": clone.point_id, "created": clone.created}


def clone(repo: Repository, ref: str, name: str | None = None) -> list[Clone]:
    """A new clone of the point ``ref`` names (its name made up when not given); a machine
    point clones every disk, as ``NAME.DISK``, all or none."""
    machine_point = resolve_machine_point(repo, ref)
    if machine_point is not None:
        return clone_machine_point(repo, machine_point, name)
    return [create_clone(repo, repo.resolve(ref), name)]


def clones(repo: Repository) -> list[Clone]:
    return list_clones(repo)


def remove(repo: Repository, names: Sequence[str]) -> list[str]:
    """Remove the clones named (each with what only it held); returns the names removed.
    Nothing is removed if one of them is written now (a VM's disk, a writable export's)."""
    for name in names:
        check_free(repo, get_clone(repo, name).name)
    for name in names:
        remove_clone(repo, name)
    return list(names)
