"""Hypothesis over every parser of untrusted bytes that has no server in front of it.

Partition tables (a disk inside a point is whatever the protected machine wrote), the chunk
decoder (whatever a disk or a bucket hands back) and the upload frame parser (whatever an
agent sends). Inputs are built to get deep (valid signatures and CRCs around random fields)
and then mutated. The only acceptable failures are the typed errors a user sees; outputs
must stay inside what the input allows. (atheris is not used: Hypothesis runs in the normal
test process and its examples replay with ``derandomize``.)
"""

from __future__ import annotations

import struct
import subprocess
import zlib
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.errors import Corruption, PartitionTableError, UsageError
from cairn.frames import MAX_FRAME, MIN_FRAME, FrameReader, assemble, encode_frame, parse_frames
from cairn.insights.partitions import read_partitions
from cairn.store.chunks import CODEC_RAW, CODEC_ZSTD, ENCRYPTED, MAGIC, ChunkStore

FUZZ = settings(max_examples=400, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class Disk:
    """A `VolumeReader` over bytes, short at the end like a real file."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def size(self) -> int:
        return len(self.data)

    def pread(self, offset: int, length: int) -> bytes:
        assert length <= 8 << 20, f"a parser asked for {length} bytes at once"
        return self.data[offset : offset + length] if offset >= 0 else b""


u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@st.composite
def mbr_disks(draw: st.DrawFn) -> bytes:
    disk = bytearray(draw(st.sampled_from([1024, 65536, 1 << 20])))
    for slot in range(4):
        entry = struct.pack("<B3xB3xII", draw(st.sampled_from([0, 0x80, 0x7F])),
                            draw(st.sampled_from([0, 0x83, 0x05, 0x0F, 0x85, 0x07, 0xEE])),
                            draw(st.one_of(st.integers(0, 4096), u32)),
                            draw(st.one_of(st.integers(0, 4096), u32)))
        disk[446 + 16 * slot : 462 + 16 * slot] = entry
    disk[510:512] = b"\x55\xaa"
    for _ in range(draw(st.integers(0, 4))):  # extended boot records where links may point
        at = draw(st.integers(0, len(disk) // 512 - 1)) * 512
        disk[at : at + 512] = bytes(disk[:512])
    return bytes(disk)


@st.composite
def gpt_disks(draw: st.DrawFn) -> bytes:
    sector = draw(st.sampled_from([512, 4096]))
    disk = bytearray(64 * sector)
    disk[450] = 0xEE
    disk[510:512] = b"\x55\xaa"
    count = draw(st.one_of(st.integers(0, 8), u32))
    entry_size = draw(st.sampled_from([128, 256, 136, 64, 2**31]))
    entries = bytearray(draw(st.binary(min_size=0, max_size=8 * 128)))
    for i in range(0, len(entries) - 47, 128):
        first, last = draw(u64), draw(u64)
        entries[i + 32 : i + 48] = struct.pack("<QQ", first, last)
    entries_lba = draw(st.sampled_from([2, 63, 2**40]))
    if entries_lba * sector + len(entries) <= len(disk):
        disk[entries_lba * sector : entries_lba * sector + len(entries)] = entries
    table = bytes(disk[entries_lba * sector : entries_lba * sector + count * entry_size]) \
        if count * entry_size <= 1 << 20 else b""
    header_size = draw(st.sampled_from([92, 512, 91, 2**32 - 1]))
    header = bytearray(struct.pack("<8sII", b"EFI PART", 0x10000, header_size))
    header += b"\0" * 56 + struct.pack("<QIII", entries_lba, count, entry_size,
                                       zlib.crc32(table))
    header += b"\0" * (max(header_size, 92) - len(header)) if header_size <= sector else b""
    crc = zlib.crc32(bytes(header[:16]) + b"\0\0\0\0" + bytes(header[20:header_size]))
    header[16:20] = struct.pack("<I", crc)
    disk[sector : sector + min(len(header), sector)] = header[:sector]
    return bytes(disk)


def flips(data: bytes, positions: list[int]) -> bytes:
    out = bytearray(data)
    for p in positions:
        out[p % len(out)] ^= 0xFF
    return bytes(out)


@FUZZ
@given(disk=st.one_of(mbr_disks(), gpt_disks(), st.binary(min_size=0, max_size=4096)),
       damage=st.lists(st.integers(0, 2**20), max_size=3))
def test_partition_tables(disk: bytes, damage: list[int]) -> None:
    reader = Disk(flips(disk, damage) if disk and damage else disk)
    try:
        parts = read_partitions(reader)
    except PartitionTableError:
        return
    assert parts or not disk
    for part in parts:
        assert part.start >= 0 and part.length >= 0


def store(key: bytes | None) -> ChunkStore:
    return ChunkStore(None, key=key)  # type: ignore[arg-type]  # decode needs no backend


@st.composite
def stored_chunks(draw: st.DrawFn) -> tuple[bytes, bytes]:
    data = draw(st.binary(min_size=0, max_size=2048))
    kind = draw(st.sampled_from(["raw", "zstd", "bomb", "codec", "random"]))
    if kind == "raw":
        stored = MAGIC + bytes([CODEC_RAW]) + data
    elif kind == "zstd":
        stored = MAGIC + bytes([CODEC_ZSTD]) + zstandard.ZstdCompressor().compress(data)
    elif kind == "bomb":  # declares (or holds) more than any chunk may
        big = bytes(draw(st.sampled_from([(1 << 20) + 1, 1 << 22])))
        frame = zstandard.ZstdCompressor(write_content_size=draw(st.booleans())).compress(big)
        stored = MAGIC + bytes([CODEC_ZSTD]) + frame
    elif kind == "codec":
        stored = MAGIC + bytes([draw(st.integers(0, 255))]) + data
    else:
        stored = data
    stored = flips(stored, draw(st.lists(st.integers(0, 4096), max_size=2))) if stored and \
        draw(st.booleans()) else stored
    return blake3.blake3(data).digest(), stored


@FUZZ
@given(chunk=stored_chunks(), keyed=st.booleans())
def test_chunk_decoder(chunk: tuple[bytes, bytes], keyed: bool) -> None:
    digest, stored = chunk
    chunks = store(b"k" * 32 if keyed else None)
    try:
        data = chunks.decode(digest, stored)
    except Corruption:
        return
    assert chunks.hash(data) == digest and len(data) <= chunks.max_size


def test_encrypted_chunk_survives_only_unaltered() -> None:
    chunks = store(b"k" * 32)
    data = b"block" * 100
    digest = chunks.hash(data)
    stored = chunks.encode(data)
    assert chunks.decode(digest, stored) == data
    assert stored[3] & ENCRYPTED
    for position in (3, 5, len(stored) - 1):
        with pytest.raises(Corruption):
            chunks.decode(digest, flips(stored, [position]))


@st.composite
def upload_bodies(draw: st.DrawFn) -> tuple[bytes, int]:
    size = draw(st.sampled_from([1, 4096, 1 << 20, 1 << 40]))
    body = b""
    for _ in range(draw(st.integers(0, 4))):
        data = draw(st.binary(min_size=1, max_size=300))
        body += encode_frame(draw(st.one_of(st.integers(0, size), u64.map(lambda v: v >> 1))),
                             data)
    tail = draw(st.sampled_from(["", "header", "claim", "zero", "huge"]))
    if tail == "header":
        body += b"\0" * draw(st.integers(1, 11))
    elif tail == "claim":
        body += struct.pack(">QI", 0, 1000) + b"short"
    elif tail == "zero":
        body += struct.pack(">QI", 0, 0)
    elif tail == "huge":
        body += struct.pack(">QI", 0, MAX_FRAME + 1)
    return body, size


def streamed(body: bytes, size: int, cuts: list[int]) -> list[tuple[int, bytes]]:
    """What the appliance stores from ``body`` arriving in pieces cut at ``cuts``."""
    reader, pieces, start = FrameReader(size), [], 0
    for cut in [*sorted(c % (len(body) + 1) for c in cuts), len(body)]:
        pieces += reader.feed(body[start:cut])
        start = max(start, cut)
    reader.finish()
    return assemble(pieces)


@FUZZ
@given(upload=upload_bodies(), damage=st.lists(st.integers(0, 4096), max_size=2),
       cuts=st.lists(st.integers(0, 4096), max_size=6))
def test_upload_frames(upload: tuple[bytes, int], damage: list[int], cuts: list[int]) -> None:
    body, size = upload
    body = flips(body, damage) if body and damage else body
    try:
        frames = parse_frames(body, size)
    except UsageError:
        with pytest.raises(UsageError):
            streamed(body, size, cuts)
        return
    assert streamed(body, size, cuts) == [(o, bytes(d)) for o, d in frames]
    assert b"".join(encode_frame(o, bytes(d)) for o, d in frames) == body
    for offset, data in frames:
        assert 1 <= len(data) <= MAX_FRAME and offset + len(data) <= size
        assert len(data) >= MIN_FRAME or offset + len(data) == size


def test_regression_gpt_header_cut_short_by_the_disk_end() -> None:
    """Found by atheris (bench/fuzz): a disk ending 17 bytes into its GPT header made the
    header parser raise `struct.error` instead of the partition table error."""
    disk = bytearray(512)
    disk[450] = 0xEE
    disk[510:512] = b"\x55\xaa"
    disk += b"EFI PART" + b"\0\0\x01\0" + b"\x5c\0\0\0\0"
    try:
        parts = read_partitions(Disk(bytes(disk)))
    except PartitionTableError as err:
        assert "cut short" in str(err)
    else:
        assert [(p.start, p.length) for p in parts] == [(0, len(disk))]


def test_regression_short_encrypted_chunk_is_corruption() -> None:
    """Found by the fuzzer: a payload shorter than a nonce raised ValueError (a crash)."""
    with pytest.raises(Corruption):
        store(b"k" * 32).decode(b"\0" * 32, MAGIC + bytes([ENCRYPTED]) + b"abc")


def test_regression_gpt_without_partitions_is_the_whole_disk(tmp_path: Path) -> None:
    """Found by the fuzzer: an intact GPT with no entry gave no volume at all, though
    callers are promised at least one for a non-empty disk."""
    image = tmp_path / "empty-gpt.img"
    image.write_bytes(bytes(1 << 20))
    subprocess.run(["sfdisk", "-q", str(image)], input="label: gpt\n", text=True, check=True,
                   capture_output=True)
    parts = read_partitions(Disk(image.read_bytes()))
    assert [(p.start, p.length, p.scheme) for p in parts] == [(0, 1 << 20, "none")]
