"""Machine points: every disk of one machine at one instant, kept and named as one.

A machine point groups the volume points one backup of a multi-disk machine made (one per
disk, in the machine's disk order) under one id and one time, with how consistent the
instant was (``application``: the guest froze its file systems; ``crash``: as after a power
cut). The volume points stay ordinary points (restore, clone, export each); the group is
what retention keeps or removes whole.

This module owns its two tables; it creates them on first use, so repositories made before
machine points existed gain them without a migration::

    machine_points(id, machine, created, consistency, note)
    machine_point_volumes(machine_point_id, position, disk, point_id)

A member row goes with its volume point (``ON DELETE CASCADE``), so deleting a volume point
by hand never leaves a dangling reference; `delete_machine_points` deletes the whole group.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cairn.errors import UsageError
from cairn.store.catalog import Catalog, RecoveryPoint

SCHEMA = """
CREATE TABLE IF NOT EXISTS machine_points(
    id TEXT PRIMARY KEY,
    machine TEXT NOT NULL,
    created REAL NOT NULL,
    consistency TEXT NOT NULL,
    note TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS machine_points_by_machine ON machine_points(machine, created);
CREATE TABLE IF NOT EXISTS machine_point_volumes(
    machine_point_id TEXT NOT NULL REFERENCES machine_points(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    disk TEXT NOT NULL,
    point_id TEXT NOT NULL REFERENCES points(id) ON DELETE CASCADE,
    PRIMARY KEY(machine_point_id, position));
CREATE INDEX IF NOT EXISTS machine_point_volumes_by_point ON machine_point_volumes(point_id);
"""
_MACHINE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class Member:
    disk: str
    point: RecoveryPoint


@dataclass(frozen=True)
class MachinePoint:
    id: str
    machine: str
    created: float
    consistency: str
    note: str
    members: tuple[Member, ...]

    @property
    def size(self) -> int:
        return sum(m.point.size for m in self.members)


def check_machine_name(name: str) -> str:
    if not _MACHINE_NAME.match(name):
        raise UsageError(f"invalid machine name {name!r}: use letters, digits, '.', '_' and "
                         "'-' (up to 64, starting with a letter or digit), e.g. web01")
    return name


class MachinePoints:
    """The machine points of one catalog."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        catalog.ensure_schema(SCHEMA)

    def record(self, point_id: str, machine: str, created: float, consistency: str,
               note: str, members: list[tuple[str, RecoveryPoint]]) -> MachinePoint:
        """Commit a machine point over volume points that are already committed."""
        with self.catalog.transaction() as db:
            db.execute("INSERT INTO machine_points(id, machine, created, consistency, note) "
                       "VALUES(?, ?, ?, ?, ?)", (point_id, machine, created, consistency, note))
            db.executemany("INSERT INTO machine_point_volumes(machine_point_id, position, disk, "
                           "point_id) VALUES(?, ?, ?, ?)",
                           ((point_id, i, disk, p.id) for i, (disk, p) in enumerate(members)))
        found = self.get(point_id)
        assert found is not None
        return found

    def _load(self, row: tuple[str, str, float, str, str]) -> MachinePoint:
        members = []
        for disk, pid in self.catalog.db.execute(
                "SELECT disk, point_id FROM machine_point_volumes WHERE machine_point_id=? "
                "ORDER BY position", (row[0],)):
            point = self.catalog.point(pid)
            if point is not None:
                members.append(Member(disk, point))
        return MachinePoint(*row, members=tuple(members))

    def get(self, point_id: str) -> MachinePoint | None:
        row = self.catalog.db.execute("SELECT id, machine, created, consistency, note FROM "
                                      "machine_points WHERE id=?", (point_id,)).fetchone()
        return self._load(row) if row else None

    def containing(self, point_id: str) -> MachinePoint | None:
        """The machine point a volume point belongs to, if any."""
        row = self.catalog.db.execute(
            "SELECT machine_point_id FROM machine_point_volumes WHERE point_id=?",
            (point_id,)).fetchone()
        return self.get(row[0]) if row else None

    def list(self, machine: str | None = None) -> list[MachinePoint]:
        query = "SELECT id, machine, created, consistency, note FROM machine_points"
        rows = (self.catalog.db.execute(query + " WHERE machine=? ORDER BY created", (machine,))
                if machine else self.catalog.db.execute(query + " ORDER BY created, machine"))
        return [self._load(r) for r in rows.fetchall()]

    def machines(self) -> list[str]:
        return [r[0] for r in self.catalog.db.execute(
            "SELECT DISTINCT machine FROM machine_points ORDER BY machine")]

    def latest(self, machine: str) -> MachinePoint | None:
        points = self.list(machine)
        return points[-1] if points else None

    def resolve(self, ref: str) -> MachinePoint | None:
        """A machine point from its id, a unique id prefix (4+), or ``MACHINE@latest``;
        None when ``ref`` names no machine point (it may name a volume point)."""
        if ref.endswith("@latest"):
            return self.latest(ref[: -len("@latest")])
        if len(ref) < 4:
            return None
        ids = [r[0] for r in self.catalog.db.execute(
            "SELECT id FROM machine_points WHERE id >= ? AND id < ? ORDER BY id",
            (ref, ref + "\uffff"))]
        if ref in ids:
            ids = [ref]
        if len(ids) > 1:
            raise UsageError(f"machine point prefix {ref!r} is ambiguous ({', '.join(ids[:4])}): "
                             "give more characters")
        return self.get(ids[0]) if ids else None

    def forget_empty(self) -> list[tuple[str, str]]:
        """Drop the groups whose volume points are all gone (reclaimed after a hold);
        returns them as ``(id, machine)``."""
        with self.catalog.transaction() as db:
            empty = [(r[0], r[1]) for r in db.execute(
                "SELECT id, machine FROM machine_points WHERE id NOT IN "
                "(SELECT machine_point_id FROM machine_point_volumes)")]
            db.executemany("DELETE FROM machine_points WHERE id=?", ((i,) for i, _m in empty))
        return empty

    def forget(self, point_id: str) -> None:
        """Drop the group row once its volume points are gone."""
        with self.catalog.transaction() as db:
            db.execute("DELETE FROM machine_points WHERE id=?", (point_id,))
