"""An image file or a block device, read as a volume.

Block devices report size 0 to ``stat``; seeking to the end gives their real size, which
works for regular files too. Reads use ``os.pread``: no shared file offset, so the backup's
worker threads read in parallel from one descriptor.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

from cairn.errors import SourceError


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """``(offset, length)`` ranges of the first ``size`` bytes of ``fd`` that may hold data;
    the rest are holes of a sparse file, which read as zeros and need not be read at all.
    Where holes cannot be found (a block device, a file system without ``SEEK_DATA``), all
    of it. The one hole scanner of the full backup (`ImageSource`) and the agent's scan."""
    out: list[tuple[int, int]] = []
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:  # only a hole remains
                return out
            return [(0, size)]
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        out.append((start, end - start))
        pos = end
    return out


class ImageSource:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise SourceError(f"source {path} does not exist: give the path of an image file "
                              "or a block device") from None
        except PermissionError:
            raise SourceError(f"source {path} is not readable: run as a user who may read it"
                              ) from None
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise SourceError(f"source {path} is neither an image file nor a block device")
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except PermissionError:
            raise SourceError(f"source {path} is not readable: run as a user who may read it"
                              ) from None
        self._size = os.lseek(self._fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return str(self.path)

    def data_extents(self) -> list[tuple[int, int]]:
        """``(start, end)`` byte ranges that may hold data (`data_ranges`)."""
        return [(start, start + length) for start, length in data_ranges(self._fd, self._size)]

    def pread(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        if len(data) != length:
            raise SourceError(f"source {self.path} shrank while being read "
                              f"(short read at offset {offset}): back it up again")
        return data

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_changed_ranges(path: Path, size: int, within: str = "the source"
                        ) -> list[tuple[int, int]]:
    """Read a change tracker's list of ``[offset, length]`` byte ranges (JSON), all of them
    inside ``size`` bytes of ``within`` (what the message calls the disk)."""
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SourceError(f"changed-ranges file {path} does not exist") from None
    except ValueError as exc:
        raise SourceError(f"changed-ranges file {path} is not valid JSON ({exc}): expected "
                          "a list of [offset, length] pairs") from None
    return check_changed_ranges(raw, size, f"changed-ranges file {path}", within)


def check_changed_ranges(raw: object, size: int, what: str, within: str
                         ) -> list[tuple[int, int]]:
    """``raw`` (parsed JSON, named ``what`` in messages) as ``(offset, length)`` pairs."""
    if not isinstance(raw, list):
        raise SourceError(f"{what} must hold a list of [offset, length] pairs")
    ranges: list[tuple[int, int]] = []
    for item in raw:
        if (not isinstance(item, list | tuple) or len(item) != 2
                or not all(isinstance(x, int) and not isinstance(x, bool) for x in item)):
            raise SourceError(f"{what}: {item!r} is not an [offset, length] pair of integers")
        offset, length = item
        if offset < 0 or length < 0 or offset + length > size:
            raise SourceError(f"{what}: range [{offset}, {length}] lies outside {within} "
                              f"(size {size})")
        ranges.append((offset, length))
    return ranges
