"""Machine points as a whole: list, resolve, restore every disk, delete, prune.

A machine point is kept or removed whole: `delete` removes its volume points and then the
group, and `prune` applies a retention policy to the machine's points (each point's fate is
decided once, for all its disks). Its volume points remain ordinary points, so clone, export
and virtualize take a member's id (``cairn points --machine M`` lists them); given the machine
point, export, virtualize, `vm start` and screenshot verification take every disk in order
(`disks_of`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cairn.errors import DestinationError, UnknownPoint, UsageError
from cairn.store import marks
from cairn.store.catalog import RecoveryPoint
from cairn.store.machine_points import MachinePoint, MachinePoints
from cairn.store.repository import Repository

if TYPE_CHECKING:
    from cairn.store.clones import Clone
    from cairn.store.retention import Policy

# `resolve` is on the path of every restore, delete and points listing: what only restoring,
# cloning, deleting or pruning a machine point needs is imported by those functions, so a
# cold `cairn restore` of a volume point does not read retention, clones and qemu-img's code.

Advance = Callable[[int], None]


@dataclass(frozen=True)
class _Dated:
    """What `select` looks at in a point: its id and its time."""

    id: str
    created: float
    seq: int = 0


@dataclass(frozen=True)
class PrunePlan:
    kept: dict[str, list[str]]
    """machine point id -> the rules, or the keep reasons of its disks' points, that keep it"""
    doomed: list[MachinePoint]
    held_until: float | None = None
    """when the doomed machine points are reclaimed (restorable with `undelete` until
    then); None on a dry run or when nothing was doomed"""


def list_machine_points(repo: Repository, machine: str | None = None) -> list[MachinePoint]:
    """Machine points, leaving out those deleted and held for the deletion window (and any
    group whose disks' points are all gone)."""
    held = {p.id for p, _m in marks.held_points(repo)}
    return [mp for mp in MachinePoints(repo.catalog).list(machine)
            if mp.members and not any(m.point.id in held for m in mp.members)]


def resolve(repo: Repository, ref: str) -> MachinePoint | None:
    """The machine point ``ref`` names (id, prefix, ``MACHINE@latest``: the newest not
    deleted), or None."""
    if ref.endswith("@latest"):
        live = list_machine_points(repo, ref[: -len("@latest")])
        return max(live, key=lambda mp: mp.created) if live else None
    return MachinePoints(repo.catalog).resolve(ref)


def machine_points_of(repo: Repository, machine: str) -> list[MachinePoint]:
    """`list_machine_points` of ``machine``, which must have some."""
    points = list_machine_points(repo, machine)
    if not points:
        raise UsageError(f"no machine points of {machine!r}: back it up with "
                         f"`cairn backup --qemu SOCKET --machine {machine}`")
    return points


def machine_volumes(repo: Repository, machine: str) -> list[str]:
    """The volumes of ``machine``'s disks (those its machine points hold), in disk order."""
    return list(dict.fromkeys(m.point.volume for mp in machine_points_of(repo, machine)
                              for m in mp.members))


def points_of(repo: Repository, refs: Sequence[str]) -> list[RecoveryPoint]:
    """The points ``refs`` name, a machine point as every disk's point: what `lock`,
    `unlock` and `undelete` act on, so a machine point stays whole."""
    points = []
    for ref in refs:
        machine_point = resolve(repo, ref)
        points += ([m.point for m in machine_point.members] if machine_point is not None
                   else [repo.resolve(ref)])
    return points


def get(repo: Repository, ref: str) -> MachinePoint:
    found = resolve(repo, ref)
    if found is None:
        raise UnknownPoint(ref)
    return found


@dataclass(frozen=True)
class Disks:
    """The disks a reference runs as: a machine point's in the machine's order (``names``
    are its disk names), or one volume point (``names`` empty, ``machine_point`` None)."""

    points: tuple[RecoveryPoint, ...]
    names: tuple[str, ...] = ()
    machine_point: MachinePoint | None = None

    @property
    def what(self) -> str:
        """How messages name it: ``machine point ID (M: vda, vdb)`` or ``point ID (VOL)``."""
        if self.machine_point is None:
            return f"point {self.points[0].id} ({self.points[0].volume})"
        return (f"machine point {self.machine_point.id} ({self.machine_point.machine}: "
                f"{', '.join(self.names)})")


def disks_of(repo: Repository, ref: str) -> Disks:
    """What ``ref`` names as disks to serve or boot: every disk of a machine point, in
    order, or the one point (machine points first, as `restore` resolves them)."""
    machine_point = resolve(repo, ref)
    if machine_point is None:
        return Disks((repo.resolve(ref),))
    return _whole(machine_point)


def _whole(machine_point: MachinePoint) -> Disks:
    if not machine_point.members:
        raise UsageError(f"machine point {machine_point.id} has no disks left: choose "
                         "another (`cairn points --machine "
                         f"{machine_point.machine}`)")
    return Disks(tuple(m.point for m in machine_point.members),
                 tuple(m.disk for m in machine_point.members), machine_point)


def boot_disks(repo: Repository, ref: str) -> Disks:
    """As `disks_of`, and a volume point that is the boot (first) disk of a machine point
    brings the machine's other disks along: a machine boots as it would after a restore,
    with every disk it mounts."""
    found = disks_of(repo, ref)
    if found.machine_point is None:
        group = MachinePoints(repo.catalog).containing(found.points[0].id)
        if group is not None and group.members[0].point.id == found.points[0].id:
            return _whole(group)
    return found


def restore_machine_point(repo: Repository, mp: MachinePoint, folder: Path, fmt: str = "raw",
                          advance: Advance | None = None) -> list[Path]:
    """Write each disk of ``mp`` to ``folder/<disk>.<fmt>``; returns the files in disk order."""
    from cairn.restore.convert import restore_as
    from cairn.store.reader import PointReader

    if folder.exists() and not folder.is_dir():
        raise DestinationError(f"{folder} is a file: a machine point restores into a folder, "
                               "one image per disk")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for member in mp.members:
        dest = folder / f"{member.disk}.{'img' if fmt == 'raw' else fmt}"
        restore_as(PointReader(repo, member.point), dest, fmt, advance)
        written.append(dest)
    return written


def clone_machine_point(repo: Repository, mp: MachinePoint, name: str | None = None
                        ) -> list[Clone]:
    """A writable clone of every disk, named ``<name>.<disk>``; all or none are made."""
    from cairn.store.clones import create_clone, remove_clone

    base = name or f"{mp.machine}-{mp.id[:6]}"
    made: list[Clone] = []
    try:
        for member in mp.members:
            made.append(create_clone(repo, member.point, f"{base}.{member.disk}"))
    except BaseException:
        for clone in made:
            remove_clone(repo, clone.name)
        raise
    return made


def delete_machine_points(repo: Repository, mps: Sequence[MachinePoint]) -> int:
    """Delete every volume point of ``mps``, then the groups (and in a cloud repository
    their records); returns chunks freed."""
    from cairn.store.cloud_machines import unpublish
    from cairn.store.delete import delete_points

    freed = delete_points(repo, [m.point for mp in mps for m in mp.members])
    store = MachinePoints(repo.catalog)
    for mp in mps:
        store.forget(mp.id)
    unpublish(repo, [(mp.id, mp.machine) for mp in mps])
    return freed


def plan_prune(repo: Repository, machine: str, policy: Policy) -> PrunePlan:
    from cairn.ops.retention import keep_reasons
    from cairn.store.retention import select

    points = list_machine_points(repo, machine)
    if not points:
        raise UnknownPoint(f"{machine}@latest")
    kept = select([_Dated(mp.id, mp.created) for mp in points], policy)
    held = keep_reasons(repo, [m.point for mp in points for m in mp.members])
    for mp in points:
        for reason in dict.fromkeys(r for m in mp.members for r in held.get(m.point.id, [])):
            kept.setdefault(mp.id, []).append(reason)
    return PrunePlan(kept, [mp for mp in points if mp.id not in kept])


def prune_machine(repo: Repository, machine: str, policy: Policy,
                  dry_run: bool = False) -> PrunePlan:
    """Hold the machine points ``policy`` does not keep, whole, for the deletion window (as
    `ops.retention.prune` holds volume points), then reclaim those whose window passed."""
    from cairn.ops.retention import purge

    plan = plan_prune(repo, machine, policy)
    if dry_run or not plan.doomed:
        return plan
    until = marks.hold(repo, [m.point for mp in plan.doomed for m in mp.members])
    purge(repo)
    return PrunePlan(plan.kept, plan.doomed, until)
