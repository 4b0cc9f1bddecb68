"""The block device an NBD export serves: a point (read-only) or a clone (writable).

The NBD server only talks to this protocol, so it can be tested against a plain file or a
bytearray and serve points and clones without knowing the store. Offsets and lengths are in
bytes and always inside ``[0, size)``: the server checks ranges before calling.
"""

from __future__ import annotations

from typing import Protocol


class BlockDevice(Protocol):
    @property
    def size(self) -> int: ...

    @property
    def read_only(self) -> bool: ...

    def read(self, offset: int, length: int) -> bytes: ...

    def write(self, offset: int, data: bytes) -> None: ...

    def write_zeroes(self, offset: int, length: int) -> None: ...

    def trim(self, offset: int, length: int) -> None: ...

    def flush(self) -> None: ...

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        """Cover ``[offset, offset+length)`` with runs ``(run_length, is_zero_hole)``.

        Runs are in order and sum to at most ``length`` (a short answer is allowed, as the
        NBD block-status reply allows); a hole reads as zeros and is not stored.
        """
        ...
