"""One disk of a running VM, read through QEMU's NBD export of its point-in-time view.

A backup reads with several threads at once (`cairn.store.ingest`); each thread gets its own
NBD connection, so reads run in parallel in QEMU without a lock here. The first connection
also asks the export where data is (``base:allocation``) and, for an incremental backup,
which extents the dirty bitmap marks (``qemu:dirty-bitmap:NAME``).
"""

from __future__ import annotations

import threading
from pathlib import Path

from cairn.sources.nbd_client import DIRTY, NbdConnection
from cairn.virt.nbd_protocol import BASE_ALLOCATION, STATE_ZERO

BITMAP_CONTEXT = "qemu:dirty-bitmap:"


class NbdSource:
    """A `cairn.store.ingest.Source` over an NBD export; `close` ends every connection."""

    def __init__(self, socket_path: Path, export: str, bitmap: str | None = None) -> None:
        self.socket_path = socket_path
        self.export = export
        self.bitmap = bitmap
        contexts = (BASE_ALLOCATION,) + ((BITMAP_CONTEXT + bitmap,) if bitmap else ())
        self._local = threading.local()
        self._all: list[NbdConnection] = []
        self._lock = threading.Lock()
        first = self._connect(contexts)
        self._size = first.size
        self._zero = first.extents(BASE_ALLOCATION, STATE_ZERO)
        self._dirty = first.extents(BITMAP_CONTEXT + bitmap, DIRTY) if bitmap else None

    def _connect(self, contexts: tuple[str, ...] = ()) -> NbdConnection:
        conn = NbdConnection(self.socket_path, self.export, contexts)
        with self._lock:
            self._all.append(conn)
        self._local.conn = conn
        return conn

    @property
    def size(self) -> int:
        return self._size

    @property
    def name(self) -> str:
        return f"nbd:{self.export}"

    def dirty_ranges(self) -> list[tuple[int, int]] | None:
        """``(offset, length)`` ranges the bitmap marks changed; None without a bitmap."""
        return self._dirty

    def data_extents(self) -> list[tuple[int, int]]:
        """``(start, end)`` ranges outside the extents QEMU reports as reading zeros."""
        extents: list[tuple[int, int]] = []
        pos = 0
        for offset, length in self._zero:
            if offset > pos:
                extents.append((pos, offset))
            pos = offset + length
        if pos < self._size:
            extents.append((pos, self._size))
        return extents

    def pread(self, offset: int, length: int) -> bytearray:
        conn = getattr(self._local, "conn", None) or self._connect()
        return conn.read(offset, length)

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()
