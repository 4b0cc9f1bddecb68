"""Which blocks a point's reader fetches ahead of its reads: streams, with a growing window.

A disk copied over NBD (nbdcopy) is read as two or more sequential streams at once, one per
connection, each a long run of 256 KiB requests answered out of order; a booting machine
reads files in 4 KiB pieces. Read-ahead overlaps a stream's disk reads and decompression
with its replies, and the bigger its batches the less each block costs (one index query and
one pack read per batch, one wake-up per batch): a cold copy of a 2 GiB point (890 MB of
data) cost the server 3.0 s of CPU with batches of 8 blocks, 2.3-2.7 s with these
streams (load 12, 32 MiB cache). So, as Linux does for files, each
stream starts with a small window and doubles it while it goes on, up to MAX_WINDOW; random
reads never fetch more than they ask for. The streams are told apart by where they are, so
two connections reading two halves of a disk each keep their own window.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

FIRST_WINDOW = 8
"""Blocks fetched ahead when a stream is first seen to go on (512 KiB at 64 KiB blocks)."""
MAX_WINDOW = 64
"""The largest window (4 MiB at 64 KiB blocks): more only fills the cache with blocks a
stream reaches later, and evicts what other readers need."""
STREAMS = 8
"""Streams followed at once (nbdcopy uses up to 4 connections; a machine reads files
besides); the least recently read is forgotten first."""


@dataclass(eq=False)  # streams are told apart by identity: two may hold equal numbers
class _Stream:
    last: int  # the last block read
    ahead: int  # the block after the last one asked to be fetched ahead
    window: int


class ReadAhead:
    """Decides, read by read, which blocks to prefetch; safe across threads (an export's
    connections and their pool threads call it at once)."""

    def __init__(self, blocks: int) -> None:
        self.blocks = blocks
        self._streams: list[_Stream] = []  # least recently read first
        self._lock = threading.Lock()

    def follow(self, first: int, last: int) -> range:
        """Note a read of blocks ``first..last``; the blocks to fetch ahead (often none).

        A read that starts inside a known stream (from a window behind its last block,
        where out-of-order requests land, to where its read-ahead stopped) and goes past its
        last block continues it; once the blocks fetched ahead lead the read by half the
        window or less, the next ones are asked for, up to a window past the read, and the
        window doubles. Any other read starts a stream: a second read that goes on from it
        starts the read-ahead (one read alone is no stream)."""
        with self._lock:
            stream = self._stream_at(first)
            if stream is None:
                self._streams.append(_Stream(last, last + 1, FIRST_WINDOW))
                if len(self._streams) > STREAMS:
                    del self._streams[0]
                return range(0)
            self._streams.remove(stream)
            self._streams.append(stream)
            if last <= stream.last:
                return range(0)
            stream.last = last
            if last - first >= MAX_WINDOW or stream.ahead - last > stream.window // 2:
                return range(0)  # a big read is its own batch; or far enough ahead already
            start = max(stream.ahead, last + 1)
            stream.ahead = min(last + 1 + stream.window, self.blocks)
            stream.window = min(stream.window * 2, MAX_WINDOW)
            return range(start, stream.ahead)

    def _stream_at(self, first: int) -> _Stream | None:
        """The stream a read from ``first`` continues: of those it falls in, the one whose
        last read ended nearest (one stream's read-ahead may reach into another's reads)."""
        near = [stream for stream in self._streams
                if stream.last - stream.window <= first <= max(stream.ahead, stream.last + 1)]
        return min(near, key=lambda stream: abs(first - stream.last - 1), default=None)
