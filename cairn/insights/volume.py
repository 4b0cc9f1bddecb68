"""The one thing insights needs from a recovery point: positional reads over a fixed size.

A point is read through its block map, an image file through `os.pread`; both fit
`VolumeReader`, so partition parsing and file-system reading never know which one they have.
The file-system libraries (libyal, The Sleuth Kit) want a file-like object with a cursor, so
`VolumeFile` gives them one on top of any reader. `SliceReader` narrows a reader to a
partition, which is how every file system inside a disk is opened.
"""

from __future__ import annotations

import io
import os
from typing import Protocol

from cairn.errors import SourceError


class VolumeReader(Protocol):
    """Read-only random access to a volume of `size` bytes.

    `pread` returns exactly `length` bytes when the range lies inside ``[0, size)`` and fewer
    only at the end of the volume; it never moves any shared cursor, so several readers
    (and threads) can share one volume.
    """

    @property
    def size(self) -> int: ...

    def pread(self, offset: int, length: int) -> bytes: ...


class FileReader:
    """A `VolumeReader` over an image file or block device on the host."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        try:
            self._fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            raise SourceError(f"cannot open {os.fspath(path)}: {e.strerror}") from e
        self._size = os.lseek(self._fd, 0, os.SEEK_END)

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        parts = []
        while length:
            data = os.pread(self._fd, length, offset)
            if not data:
                break
            parts.append(data)
            offset += len(data)
            length -= len(data)
        return b"".join(parts)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> FileReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SliceReader:
    """The bytes ``[start, start+length)`` of another reader, seen as a volume of its own."""

    def __init__(self, base: VolumeReader, start: int, length: int) -> None:
        self.base = base
        self.start = start
        self._size = max(0, min(length, base.size - start))

    @property
    def size(self) -> int:
        return self._size

    def pread(self, offset: int, length: int) -> bytes:
        length = max(0, min(length, self._size - offset))
        if offset < 0 or length == 0:
            return b""
        return self.base.pread(self.start + offset, length)


class VolumeFile(io.RawIOBase):
    """A seekable read-only binary file over a `VolumeReader`, for libraries that want one.

    libyal calls `get_size()` if present, so it is provided beside the usual `seek(0, 2)`.
    """

    def __init__(self, reader: VolumeReader) -> None:
        super().__init__()
        self._reader = reader
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def get_size(self) -> int:
        return self._reader.size

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._reader.size + offset
        else:
            raise ValueError(f"invalid whence {whence}")
        if pos < 0:
            raise OSError(f"negative seek position {pos}")
        self._pos = pos
        return pos

    def read(self, size: int | None = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self._reader.size - self._pos)
        data = self._reader.pread(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
