"""Restore into another image format: raw first (sparse), then ``qemu-img convert``.

qemu-img is the reference implementation of qcow2, vmdk and vhdx; writing those formats by
hand would be a second, less-tested copy of it. The raw intermediate is sparse, so it costs
the point's data, not its size, and is removed whatever happens.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from cairn.errors import DestinationError, UsageError
from cairn.restore.writer import restore_image
from cairn.store.reader import PointReader

FORMATS = ("raw", "qcow2", "vmdk", "vhdx")


def restore_as(reader: PointReader, dest: Path, fmt: str,
               progress: Callable[[int], None] | None = None,
               ignore_damage: bool = False) -> list[tuple[int, int]]:
    """Returns the lost block runs (see `restore_image`)."""
    if fmt not in FORMATS:
        raise UsageError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if fmt == "raw":
        return restore_image(reader, dest, progress, ignore_damage)
    import shutil  # here: a raw restore, the usual one, never pays for these
    import subprocess

    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise UsageError(f"--format {fmt} needs qemu-img: install it (apt-get install qemu-utils)")
    raw = dest.with_name(f".{dest.name}.cairn-raw")
    try:
        lost = restore_image(reader, raw, progress, ignore_damage)
        result = subprocess.run([qemu_img, "convert", "-q", "-f", "raw", "-O", fmt,
                                 str(raw), str(dest)], capture_output=True, text=True)
        if result.returncode != 0:
            raise DestinationError(f"qemu-img could not write {dest} as {fmt}: "
                                   f"{result.stderr.strip()}")
    finally:
        raw.unlink(missing_ok=True)
    return lost
