"""Chunks: the only bytes the store keeps, named by the hash of what they hold.

Format of one stored chunk (version 1), written once and never changed::

    offset 0  3 bytes  magic b"CRN"
    offset 3  1 byte   codec: 0 = stored as is, 1 = zstd frame
    offset 4  ...      payload

A chunk is named by BLAKE3 of its plain content (keyed BLAKE3 when the repository has a
key), so identical blocks of any volume are stored once. The hash of the all-zero block
is never computed: ``ZERO`` (32 zero bytes) stands for it, and for any all-zero subtree of a
block map, and is never stored (thin provisioning). Every read checks the hash: a flipped
bit anywhere surfaces as `Corruption`, never as wrong data.
"""

from __future__ import annotations

import threading

import blake3
import zstandard

from cairn.errors import Corruption, MissingChunk
from cairn.store.backend import Backend

HASH_SIZE = 32
ZERO = bytes(HASH_SIZE)
MAGIC = b"CRN"
CODEC_RAW = 0
CODEC_ZSTD = 1
_HEADER = 4
# Store a block as is unless zstd saves at least this share: incompressible data (already
# compressed files, random bytes) then costs no decompression on restore.
_MIN_SAVING = 1 / 32


def chunk_name(digest: bytes) -> str:
    text = digest.hex()
    return f"chunks/{text[:3]}/{text}"


class ChunkStore:
    """Encodes, stores, fetches and checks chunks over any `Backend`; safe across threads."""

    def __init__(self, backend: Backend, level: int = 1, key: bytes | None = None) -> None:
        self.backend = backend
        self.level = level
        self.key = key
        self._local = threading.local()

    def hash(self, data: bytes | memoryview) -> bytes:
        if self.key is not None:
            return blake3.blake3(data, key=self.key).digest()
        return blake3.blake3(data).digest()

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def encode(self, data: bytes | memoryview) -> bytes:
        packed = self._compressor().compress(data)
        if len(packed) <= len(data) * (1 - _MIN_SAVING):
            return MAGIC + bytes([CODEC_ZSTD]) + packed
        return MAGIC + bytes([CODEC_RAW]) + bytes(data)

    def decode(self, digest: bytes, stored: bytes) -> bytes:
        if len(stored) < _HEADER or stored[:3] != MAGIC:
            raise Corruption(f"chunk {digest.hex()} has a damaged header")
        codec = stored[3]
        if codec == CODEC_RAW:
            data = stored[_HEADER:]
        elif codec == CODEC_ZSTD:
            try:
                data = self._decompressor().decompress(memoryview(stored)[_HEADER:])
            except zstandard.ZstdError as exc:
                raise Corruption(f"chunk {digest.hex()} does not decompress: {exc}") from None
        else:
            raise Corruption(f"chunk {digest.hex()} has unknown codec {codec}")
        if self.hash(data) != digest:
            raise Corruption(f"chunk {digest.hex()} does not match its hash")
        return data

    def put(self, digest: bytes, data: bytes | memoryview) -> int:
        """Store ``data`` under ``digest``; returns the bytes it takes in the backend."""
        encoded = self.encode(data)
        self.backend.put(chunk_name(digest), encoded)
        return len(encoded)

    def get(self, digest: bytes) -> bytes:
        try:
            stored = self.backend.get(chunk_name(digest))
        except KeyError:
            raise MissingChunk(f"chunk {digest.hex()} is missing from the store") from None
        return self.decode(digest, stored)

    def delete(self, digest: bytes) -> None:
        self.backend.delete(chunk_name(digest))
