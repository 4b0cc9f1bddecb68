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
    """Split a request body into ``(offset, data)``; rejects anything outside the volume."""
    view = memoryview(body)
    frames = []
    pos = 0
    while pos < len(view):
        if len(view) - pos < FRAME.size:
            raise UsageError("truncated frame header: each frame is offset (u64), length (u32), "
                             "then the data")
        offset, length = FRAME.unpack_from(view, pos)
        pos += FRAME.size
        if length == 0 or length > MAX_FRAME:
            raise UsageError(f"frame length {length} must be between 1 and {MAX_FRAME}")
        if offset + length > size:
            raise UsageError(f"frame {offset}+{length} lies past the end of the volume ({size})")
        if len(view) - pos < length:
            raise UsageError(f"frame at {offset} claims {length} bytes but the body ends first")
        frames.append((offset, view[pos : pos + length]))
        pos += length
    return frames


def encode_frame(offset: int, data: bytes) -> bytes:
    return FRAME.pack(offset, len(data)) + data


def frame_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()
