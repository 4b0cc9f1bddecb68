"""The upload wire format, shared by the agent (which writes it) and the appliance (which
reads it).

Body of ``PUT /api/v1/agent/uploads/{id}/data`` (version 1): a sequence of frames, each
``offset`` (u64, big endian), ``length`` (u32), then ``length`` bytes of the volume at
``offset``. Every frame but one ending at the volume's end holds at least MIN_FRAME bytes,
so the frames an upload keeps (they never overlap) number at most size / MIN_FRAME + 1,
whatever an agent sends. Frames are idempotent, and each is known by its BLAKE3 (`frame_hash`) so a
resumed agent can skip the frames the appliance already holds with identical content.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import blake3

from cairn.errors import UsageError

FRAME = struct.Struct(">QI")
MAX_FRAME = 16 * 1024 * 1024
MIN_FRAME = 4096
"""The smallest frame but a volume's last: the smallest block an agent reads (repository
blocks and FIEMAP changes are whole multiples of it)."""


@dataclass(frozen=True)
class Piece:
    """Part of a frame's data, as it arrived: ``data`` belongs ``at`` bytes into the frame
    ``(offset, length)``, so at ``offset + at`` of the volume."""

    offset: int
    length: int
    at: int
    data: memoryview

    @property
    def first(self) -> bool:
        return self.at == 0

    @property
    def last(self) -> bool:
        return self.at + len(self.data) == self.length


def parse_frames(body: bytes, size: int) -> list[tuple[int, memoryview]]:
    """Split a whole request body into ``(offset, data)``; rejects anything outside the
    volume."""
    reader = FrameReader(size)
    frames = assemble(reader.feed(body))
    reader.finish()
    return [(o, memoryview(d)) for o, d in frames]


def assemble(pieces: list[Piece]) -> list[tuple[int, bytes]]:
    """The whole frames that ``pieces`` complete, joined (for callers that want them
    whole: tests and fuzzers; the appliance writes pieces as they come)."""
    frames, parts = [], []
    for piece in pieces:
        parts = [] if piece.first else parts
        parts.append(bytes(piece.data))
        if piece.last:
            frames.append((piece.offset, b"".join(parts)))
    return frames


class FrameReader:
    """Frames from a body that arrives in pieces: `feed` each piece as it comes and get the
    parts of frames it carries, each known by its frame, at once; `finish` at the end. It
    holds at most a frame header that is not yet whole, never a frame's data, so nothing of
    the body is buffered, and a frame's header is checked before any of its data is
    passed on."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._header = bytearray()
        self._frame: tuple[int, int] | None = None
        self._at = 0

    def _check(self) -> tuple[int, int]:
        offset, length = FRAME.unpack(self._header)
        if length == 0 or length > MAX_FRAME:
            raise UsageError(f"frame length {length} must be between 1 and {MAX_FRAME}")
        if length < MIN_FRAME and offset + length != self.size:
            raise UsageError(f"frame {offset}+{length} is shorter than the minimum frame "
                             f"({MIN_FRAME} bytes; only a frame ending at the volume's end "
                             "may be shorter)")
        if offset + length > self.size:
            raise UsageError(f"frame {offset}+{length} lies past the end of the volume "
                             f"({self.size})")
        return offset, length

    def feed(self, piece: bytes | memoryview) -> list[Piece]:
        view, pos, out = memoryview(piece), 0, []
        while pos < len(view):
            if self._frame is None:
                take = min(FRAME.size - len(self._header), len(view) - pos)
                self._header += view[pos : pos + take]
                pos += take
                if len(self._header) == FRAME.size:
                    self._frame, self._at = self._check(), 0
                    self._header.clear()
                continue
            offset, length = self._frame
            take = min(length - self._at, len(view) - pos)
            out.append(Piece(offset, length, self._at, view[pos : pos + take]))
            pos += take
            self._at += take
            if self._at == length:
                self._frame = None
        return out

    def finish(self) -> None:
        if self._frame is not None:
            raise UsageError(f"frame at {self._frame[0]} claims {self._frame[1]} bytes but "
                             "the body ends first")
        if self._header:
            raise UsageError("truncated frame header: each frame is offset (u64), length "
                             "(u32), then the data")


def encode_frame(offset: int, data: bytes) -> bytes:
    return FRAME.pack(offset, len(data)) + data


def frame_hash(data: bytes | memoryview) -> bytes:
    return blake3.blake3(data).digest()
