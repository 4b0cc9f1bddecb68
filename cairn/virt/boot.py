"""A point's disk for a VM to boot: a throwaway or kept clone, exported over NBD.

Both `ops.virtualize` and `ops.screenshot_verify` boot a *clone*, never the point: the guest
may write (logs, journal replay) and those writes land in the clone's overlay, while the
point stays bit for bit what was backed up. The NBD export runs in this process on a free
loopback port and QEMU reads the disk from it, so booting needs no copy of the image. A
machine boots with all its disks: one clone and one export each, in the machine's order.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from cairn.store.catalog import RecoveryPoint
from cairn.store.clones import Clone, CloneVolume, create_clone, remove_clone
from cairn.store.pins import pin_point
from cairn.store.repository import Repository
from cairn.virt.devices import CloneDevice
from cairn.virt.nbd import NbdServer
from cairn.virt.qemu import DiskBus

# IDE, which every guest drives, has room for four disks; a bigger machine boots on SATA.
IDE_DISKS = 4


@dataclass(frozen=True)
class Exported:
    clone: Clone
    url: str


@contextlib.contextmanager
def exported_clone(repo: Repository, point: RecoveryPoint, name: str | None = None,
                   keep: bool = False) -> Iterator[Exported]:
    """A clone of ``point`` served over NBD on loopback for as long as the block runs."""
    clone = create_clone(repo, point, name)
    try:
        with CloneVolume(repo, clone) as volume:
            with pin_point(repo, point, f"a boot of clone {clone.name}"), \
                    NbdServer(CloneDevice(volume), "127.0.0.1", 0, serialize=False) as server:
                yield Exported(clone, f"nbd://127.0.0.1:{server.port}")
            volume.flush()
    finally:
        if not keep:
            remove_clone(repo, clone.name)


@contextlib.contextmanager
def exported_clones(repo: Repository, points: Sequence[RecoveryPoint],
                    names: Sequence[str | None] = (), keep: bool = False
                    ) -> Iterator[list[Exported]]:
    """`exported_clone` of each of ``points`` (a machine's disks, in order), named by
    ``names`` (one per point; none given, or None: made up); all are served until the block
    ends."""
    labels = list(names) or [None] * len(points)
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(exported_clone(repo, point, name, keep))
               for point, name in zip(points, labels, strict=True)]


def disk_bus(disks: int) -> DiskBus:
    """The bus a VM of ``disks`` disks boots them on when nothing else says which."""
    return "ide" if disks <= IDE_DISKS else "sata"
