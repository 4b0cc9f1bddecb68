"""Block devices for NBD tests: sparse in memory, a real file, and one that fails on purpose."""

from __future__ import annotations

import ctypes
import errno
import os

_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_libc = ctypes.CDLL(None, use_errno=True)


class MemoryDevice:
    """Sparse: only 4 KiB blocks ever written hold memory; trimmed whole blocks become holes."""

    BLOCK = 4096

    def __init__(self, size: int, read_only: bool = False, data: bytes = b"") -> None:
        self._size = size
        self._read_only = read_only
        self.blocks: dict[int, bytearray] = {}
        self.flushes = 0
        if data:
            self.write(0, data)

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    def read(self, offset: int, length: int) -> bytes:
        out = bytearray(length)
        pos = offset
        while pos < offset + length:
            index, skip = divmod(pos, self.BLOCK)
            take = min(self.BLOCK - skip, offset + length - pos)
            block = self.blocks.get(index)
            if block is not None:
                out[pos - offset : pos - offset + take] = block[skip : skip + take]
            pos += take
        return bytes(out)

    def write(self, offset: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            index, skip = divmod(offset + pos, self.BLOCK)
            take = min(self.BLOCK - skip, len(data) - pos)
            block = self.blocks.setdefault(index, bytearray(self.BLOCK))
            block[skip : skip + take] = data[pos : pos + take]
            pos += take

    def write_zeroes(self, offset: int, length: int) -> None:
        self.trim(offset, length)

    def trim(self, offset: int, length: int) -> None:
        pos = offset
        while pos < offset + length:
            index, skip = divmod(pos, self.BLOCK)
            take = min(self.BLOCK - skip, offset + length - pos)
            if take == self.BLOCK:
                self.blocks.pop(index, None)
            elif index in self.blocks:
                self.blocks[index][skip : skip + take] = bytes(take)
            pos += take

    def flush(self) -> None:
        self.flushes += 1

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        end = offset + length
        first, last = offset // self.BLOCK, (end - 1) // self.BLOCK
        allocated = sorted(i for i in self.blocks if first <= i <= last)
        runs: list[tuple[int, bool]] = []
        pos = offset
        for index in allocated:
            start = max(index * self.BLOCK, offset)
            stop = min((index + 1) * self.BLOCK, end)
            if start > pos:
                runs.append((start - pos, True))
            runs.append((stop - start, False))
            pos = stop
        if pos < end:
            runs.append((end - pos, True))
        return runs


class FileDevice:
    """A raw image file; holes are punched for trim/write-zeroes and found with SEEK_HOLE."""

    def __init__(self, path: str, read_only: bool = False) -> None:
        self.fd = os.open(path, os.O_RDONLY if read_only else os.O_RDWR)
        self._size = os.fstat(self.fd).st_size
        self._read_only = read_only

    @property
    def size(self) -> int:
        return self._size

    @property
    def read_only(self) -> bool:
        return self._read_only

    def close(self) -> None:
        os.close(self.fd)

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self.fd, data, offset)

    def write_zeroes(self, offset: int, length: int) -> None:
        self.trim(offset, length)

    def trim(self, offset: int, length: int) -> None:
        mode = _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE
        if _libc.fallocate(self.fd, mode, ctypes.c_long(offset), ctypes.c_long(length)) != 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))

    def flush(self) -> None:
        os.fsync(self.fd)

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        end = offset + length
        runs: list[tuple[int, bool]] = []
        pos = offset
        while pos < end:
            try:
                data = os.lseek(self.fd, pos, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno != errno.ENXIO:
                    raise
                data = end
            if data > pos:
                runs.append((min(data, end) - pos, True))
                pos = min(data, end)
                continue
            hole = os.lseek(self.fd, pos, os.SEEK_HOLE)
            runs.append((min(hole, end) - pos, False))
            pos = min(hole, end)
        return runs


class FailingDevice(MemoryDevice):
    """Fails every call that touches ``[bad_offset, bad_offset + bad_length)``."""

    def __init__(self, size: int, bad_offset: int, bad_length: int, data: bytes = b"") -> None:
        self.bad = (0, 0)
        super().__init__(size, data=data)
        self.bad = (bad_offset, bad_offset + bad_length)

    def _check(self, offset: int, length: int) -> None:
        if offset < self.bad[1] and offset + length > self.bad[0]:
            raise OSError(errno.EIO, "injected media error")

    def read(self, offset: int, length: int) -> bytes:
        self._check(offset, length)
        return super().read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._check(offset, len(data))
        super().write(offset, data)

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        self._check(offset, length)
        return super().extents(offset, length)
