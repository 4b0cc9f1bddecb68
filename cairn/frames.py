"""The upload wire format, shared by the agent (which writes it) and the appliance (which
reads it).

Body of ``PUT /api/v1/agent/uploads/{id}/data`` (version 1): a sequence of frames, each
``offset`` (u64, big endian), ``length`` (u32), then ``length`` bytes of the volume at
``offset``. Frames are idempotent, and each is known by its BLAKE3 (`frame_hash`) so a
resumed agent can skip the frames the appliance already holds with identical content.
"""

from __future__ import annotations

import struct

import blake3

from cairn.errors import UsageError

FRAME = struct.Struct(">QI")
MAX_FRAME = 16 * 1024 * 1024


def parse_frames(body: bytes, size: int) -> list[tuple[int, memoryview]]:
    """Split a whole request body into ``(offset, data)``; rejects anything outside the
    volume."""
    reader = FrameReader(size)
    frames = [(o, memoryview(d)) for o, d in reader.feed(body)]
    reader.finish()
    return frames


class FrameReader:
    """Frames from a body that arrives in pieces: `feed` each piece as it comes and get the
    frames it completed; `finish` at the end. It holds at most one frame that is not yet
    whole (``MAX_FRAME``), so a body is never buffered entire, and a frame's header is
    checked before any of its data is waited for."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._buffer = bytearray()
        self._want: tuple[int, int] | None = None

    def _header(self) -> tuple[int, int]:
        offset, length = FRAME.unpack_from(self._buffer, 0)
        if length == 0 or length > MAX_FRAME:
            raise UsageError(f"frame length {length} must be between 1 and {MAX_FRAME}")
        if offset + length > self.size:
            raise UsageError(f"frame {offset}+{length} lies past the end of the volume "
                             f"({self.size})")
        return offset, length

    def feed(self, piece: bytes) -> list[tuple[int, bytes]]:
        self._buffer += piece
        frames = []
        while True:
            if self._want is None:
                if len(self._buffer) < FRAME.size:
                    return frames
                self._want = self._header()
            offset, length = self._want
            if len(self._buffer) < FRAME.size + length:
                return frames
            with memoryview(self._buffer) as view:  # one copy of a 16 MiB frame, not two
                frames.append((offset, bytes(view[FRAME.size : FRAME.size + length])))
            del self._buffer[: FRAME.size + length]
            self._want = None

    def finish(self) -> None:
        if self._want is not None:
            raise UsageError(f"frame at {self._want[0]} claims {self._want[1]} bytes but the "
                             "body ends first")
        if self._buffer:
            raise UsageError("truncated frame header: each frame is offset (u64), length "
                             "(u32), then the data")


def encode_frame(offset: int, data: bytes) -> bytes:
    return FRAME.pack(offset, len(data)) + data


def frame_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()
