"""Points and clones as `BlockDevice`s, so the NBD server can export either.

A point is immutable, so its device is always read-only; a clone's device writes into the
clone's overlay. Both report holes from the block maps (a block that is ZERO in the point
and untouched in the clone), which lets ``qemu-img``/``nbdcopy`` skip them.
"""

from __future__ import annotations

from cairn.store.clones import CloneNotFound, CloneVolume, get_clone
from cairn.store.reader import PointReader
from cairn.store.repository import Repository


class PointDevice:
    read_only = True

    def __init__(self, reader: PointReader) -> None:
        self.reader = reader

    @property
    def size(self) -> int:
        return self.reader.size

    def read(self, offset: int, length: int) -> bytes:
        return self.reader.pread(offset, length)

    def read_pieces(self, offset: int, length: int, wait: bool, ahead: bool = False
                    ) -> list[bytes | memoryview] | None:
        """See `cairn.virt.device.PiecewiseDevice`."""
        return self.reader.pieces(offset, length, wait, ahead)

    def write(self, offset: int, data: bytes) -> None:
        raise PermissionError("a recovery point is read-only: export a clone to write")

    def write_zeroes(self, offset: int, length: int) -> None:
        self.write(offset, b"")

    def trim(self, offset: int, length: int) -> None:
        self.write(offset, b"")

    def flush(self) -> None:
        return None

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        return self.reader.extents(offset, length)

    def close(self) -> None:
        self.reader.close()


class CloneDevice:
    def __init__(self, volume: CloneVolume, read_only: bool = False) -> None:
        self.volume = volume
        self.read_only = read_only

    @property
    def size(self) -> int:
        return self.volume.size

    def read(self, offset: int, length: int) -> bytes:
        return self.volume.pread(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.volume.pwrite(offset, data)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.volume.pwrite(offset, bytes(length))

    def trim(self, offset: int, length: int) -> None:
        self.volume.pwrite(offset, bytes(length))

    def flush(self) -> None:
        self.volume.flush()

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        return self.volume.base.extents(offset, length, self.volume.is_hole)

    def close(self) -> None:
        """Flush what clients wrote and did not flush, as a disk does at a clean shutdown:
        an export stopped on purpose keeps every write it acknowledged."""
        if not self.read_only:
            self.volume.flush()
        self.volume.close()


Device = PointDevice | CloneDevice


def open_device(repo: Repository, ref: str, read_only: bool = False) -> tuple[Device, str]:
    """The device for a clone name or a point reference, and a short description of it."""
    try:
        clone = get_clone(repo, ref)
    except CloneNotFound:
        point = repo.resolve(ref)
        return PointDevice(PointReader(repo, point)), f"point {point.id} ({point.volume})"
    return CloneDevice(CloneVolume(repo, clone), read_only), f"clone {clone.name}"
