"""Condemned packs that S3 Object Lock still keeps: left whole until their date, then
deleted, every version, by a later prune.

A point published immutably locks the packs holding its chunks (COMPLIANCE retention,
`immutable`). When such a point is gone (its lock passed, or another point's copy of a chunk
was the one kept) the prune may condemn a pack whose own lock has not passed yet. A DELETE
of it then only puts a delete marker over the locked version: nothing is freed, the pack
drops out of every listing, and no later prune would ever look for it again. So, on a bucket
made with Object Lock, a prune about to delete a condemned pack reads the retention of the
pack and of its index first; while either is locked it deletes nothing of it (pack, index
and notice stay, the chunks stay readable) and records the date in an empty object
``held/packs/<until, 11-digit epoch seconds>-<pack id>``: the next prunes learn what waits,
and until when, from one listing, with no request per pack. Once the date passed, a prune
reads the retention afresh (a record is only a hint: a forged or stale one delays a
deletion or costs a read, it never lets a locked pack go) and deletes the pack and its
index, every version, then the notice and the record.

A record whose pack is no longer condemned (a point reused it: the prune lifted the
condemnation) or no longer there is deleted by the next prune. Records sit under ``held/``
beside the legacy objects' notices (`cloud_held`), which ignores names of this shape.

Packs hidden before this existed. Prunes older than these records deleted a locked pack like
any other: its locked version stayed under a delete marker, its notice went, and nothing
named it any more. `hidden_packs` finds them (and any pack someone else hid) with one
listing of the versions under ``packs/`` per prune, on an Object Lock bucket only (no cursor
can do less: a DELETE leaves no trace anywhere else, and the listing costs what the plain
``packs/`` listing costs). The prune then treats such a pack as a pack with no notice
(`cloud_prune`): if no published point needs it, it gets a notice like any dead pack (a
writer that learnt its index past the marker sends its chunks again from then on), and a
grace later it is recorded here while locked, then deleted, every version; if a point needs
a chunk whose only copy is in it (a writer took it while it was hidden, or someone hid a
live pack), the prune removes the delete marker instead (the pack is back, readable as
before). The date that must pass is the latest lock of any version (`Retention.held_until`),
never only the current one's (which a marker hides).

Deciding needs the hidden pack's chunks, and a node may never have read its index: readers
read past a marker only while the version under it is locked, so a node that first refreshed
after the lock passed (a new node, a fresh cache) or that forgot the pack (its own older
prune "deleted" it) has no rows for it. Condemned blind, such a pack could hold the only copy
of a chunk a published point needs (a writer that read the index while it was locked), and
would be deleted. So `read_hidden` reads the index of each hidden pack the node lacks: its
newest version that is not a marker, by version id (`Retention.newest`), whether current or
hidden, locked or not, opened with the repository's key and recorded like any index read, so
the prune decides from its chunks exactly as for a known pack (brought back when it holds a
live chunk's only copy, condemned otherwise). An index with no version left, or that does not
open (another key, altered, names another pack), proves nothing about what the pack holds:
the pack is kept (never condemned, never deleted, even when an older prune had condemned it
blind), and the prune report names it (`packs_kept_unreadable`) at every prune until someone
looks. Only packs already hidden are read this way; a pack in plain sight is as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cairn.errors import Corruption
from cairn.store.cloud_feed import KEY
from cairn.store.cloud_packs import INDEX_LIMIT, index_object, pack_object
from cairn.store.parallel import bounded_map

if TYPE_CHECKING:
    from cairn.store.backends.s3_lock import Retention
    from cairn.store.cloud import Cloud
    from cairn.store.cloud_packs import CloudPacks

HELD_PACKS = "held/packs"
_RECORD = re.compile(r"^held/packs/(\d{11})-([0-9a-f]{32})$")


def _records(cloud: Cloud) -> dict[str, tuple[float, str]]:
    """Pack id -> (the latest date recorded for it, that record's name)."""
    found: dict[str, tuple[float, str]] = {}
    for name, _stamp in cloud.backend.stamps(HELD_PACKS):
        match = _RECORD.match(name)
        if match and float(match.group(1)) >= found.get(match.group(2), (0.0, ""))[0]:
            found[match.group(2)] = (float(match.group(1)), name)
    return found


def hidden_packs(retention: Retention) -> set[str]:
    """The packs whose newest entry is a delete marker over a version still there (one
    versions listing of ``packs/``); a name that is not a pack cairn writes is ignored."""
    latest: dict[str, bool] = {}
    kept: set[str] = set()
    for entry in retention.entries("packs"):
        pack = entry.name.rpartition("/")[2]
        if not KEY.match(pack) or entry.name != pack_object(pack):
            continue
        if entry.latest:
            latest[pack] = entry.marker
        if not entry.marker:
            kept.add(pack)
    return {pack for pack, marker in latest.items() if marker and pack in kept}


def read_hidden(retention: Retention | None, packs: CloudPacks, hidden: set[str]
                ) -> dict[str, str]:
    """Read and record the index of each of the ``hidden`` packs that ``packs`` does not
    know (see the module doc); returns those whose index could not be read or opened, each
    with why: they must be kept."""
    unknown = sorted(p for p in hidden if packs.pack_info(p) is None)
    if retention is None or not unknown:
        return {}

    def read(pack: str) -> bytes | str:
        try:
            return retention.newest(index_object(pack), INDEX_LIMIT)
        except KeyError:
            return f"no version of {index_object(pack)} is left"
        except Corruption as exc:
            return str(exc)

    unreadable: dict[str, str] = {}
    for pack, raw in zip(unknown, bounded_map(read, unknown, 8), strict=True):
        if isinstance(raw, bytes):
            try:
                packs.learn(pack, raw)
                continue
            except Corruption as exc:
                raw = str(exc)
        unreadable[pack] = raw
    return unreadable


@dataclass
class PackLocks:
    """One prune's view of the condemned packs Object Lock keeps (see the module doc)."""

    cloud: Cloud
    retention: Retention | None
    now: float
    dry_run: bool
    records: dict[str, tuple[float, str]] = field(default_factory=dict)
    waiting: dict[str, float] = field(default_factory=dict)
    """pack -> the date it waits for, as this prune found it"""

    @classmethod
    def take(cls, cloud: Cloud, now: float, dry_run: bool) -> PackLocks:
        """On a bucket without Object Lock, a view that keeps nothing (no request)."""
        from cairn.store.cloud_held import retention_of

        retention = retention_of(cloud)
        records = _records(cloud) if retention is not None else {}
        return cls(cloud, retention, now, dry_run, records)

    def keeps(self, pack: str) -> bool:
        """Whether Object Lock still keeps ``pack`` (or its index): then it is recorded
        (not on a dry run) and nothing of it may be deleted now."""
        if self.retention is None:
            return False
        recorded = self.records.get(pack, (0.0, ""))[0]
        if recorded <= self.now:
            recorded = max(self.retention.held_until(pack_object(pack)) or 0.0,
                           self.retention.held_until(index_object(pack)) or 0.0)
        if recorded <= self.now:
            return False
        self.waiting[pack] = recorded
        if self.records.get(pack, (0.0, ""))[0] < recorded:
            self._record(pack, recorded)
        return True

    def _record(self, pack: str, until: float) -> None:
        if self.dry_run:
            return
        old = self.records.get(pack)
        name = f"{HELD_PACKS}/{int(until):011d}-{pack}"
        self.cloud.backend.put(name, b"")
        if old is not None and old[1] != name:
            self.cloud.backend.delete(old[1])
        self.records[pack] = (until, name)

    def close(self, condemned: Iterable[str]) -> None:
        """Delete the records of packs no longer condemned or waiting (deleted now, or
        their condemnation lifted)."""
        still = set(condemned) | set(self.waiting)
        stale = [name for pack, (_u, name) in self.records.items() if pack not in still]
        if stale and not self.dry_run:
            self.cloud.backend.delete_many(stale)

    @property
    def until(self) -> float | None:
        return max(self.waiting.values(), default=None)
