"""The block device an NBD export serves: a point (read-only) or a clone (writable).

The NBD server only talks to this protocol, so it can be tested against a plain file or a
bytearray and serve points and clones without knowing the store. Offsets and lengths are in
bytes and always inside ``[0, size)``: the server checks ranges before calling.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


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


@runtime_checkable
class PiecewiseDevice(Protocol):
    """A device that can also hand out a read as the buffers it already holds (a point's
    decoded blocks), so the server sends them without joining them into one copy, and can
    tell, without waiting, whether a read is held at all (then it is answered at once on
    the connection's thread, with no hand-off to a pool)."""

    def read_pieces(self, offset: int, length: int, wait: bool, ahead: bool = False
                    ) -> list[bytes | memoryview] | None:
        """``read(offset, length)`` as buffers in order; with ``wait`` False, None unless
        the device holds all of it now, or with ``ahead`` holds it or is reading the rest
        ahead already (then it waits for that read, and starts no other)."""
        ...
