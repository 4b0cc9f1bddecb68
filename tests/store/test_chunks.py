"""Unit tests of the chunk format: names, codecs, encryption, and every check on read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.errors import Corruption, MissingChunk
from cairn.store.backends.local import LocalBackend
from cairn.store.chunks import (
    CODEC_RAW,
    CODEC_ZSTD,
    ENCRYPTED,
    KEY_SIZE,
    MAGIC,
    ChunkStore,
    chunk_name,
    key_id,
)

TEXT = b"cairn keeps every point whole. " * 2048
NOISE = os.urandom(64 * 1024)


@pytest.fixture
def store(tmp_path: Path) -> ChunkStore:
    return ChunkStore(LocalBackend(tmp_path / "plain"))


@pytest.fixture
def sealed(tmp_path: Path) -> ChunkStore:
    return ChunkStore(LocalBackend(tmp_path / "sealed"), key=bytes(range(KEY_SIZE)))


def test_names_fan_out_by_hash_prefix(store: ChunkStore) -> None:
    digest = store.hash(TEXT)
    assert chunk_name(digest) == f"chunks/{digest.hex()[:3]}/{digest.hex()}"


def test_compressible_data_is_zstd_and_noise_is_stored_raw(store: ChunkStore) -> None:
    packed = store.encode(TEXT)
    assert packed[:3] == MAGIC and packed[3] == CODEC_ZSTD and len(packed) < len(TEXT) // 10
    raw = store.encode(NOISE)
    assert raw[3] == CODEC_RAW and raw[4:] == NOISE
    for data in (TEXT, NOISE):
        digest = store.hash(data)
        store.put(digest, data)
        assert store.get(digest) == data


def test_the_stored_size_tells_a_raw_chunk_without_reading_it(
        store: ChunkStore, sealed: ChunkStore) -> None:
    """Ransomware detection reads whether a chunk was kept raw from the catalog's sizes:
    exactly when the codec byte says so, plain or encrypted, down to a one-byte block."""
    for chunks in (store, sealed):
        for data in (TEXT, NOISE, NOISE[:4096], TEXT[:4096], b"x", bytes(64) + NOISE[:64]):
            stored = chunks.encode(data)
            assert chunks.stored_raw(len(data), len(stored)) == (
                stored[3] & ~ENCRYPTED == CODEC_RAW)


def test_a_key_renames_and_encrypts(store: ChunkStore, sealed: ChunkStore) -> None:
    assert sealed.hash(TEXT) != store.hash(TEXT)
    digest = sealed.hash(TEXT)
    stored = sealed.encode(TEXT)
    assert stored[3] == CODEC_ZSTD | ENCRYPTED and b"cairn keeps" not in stored
    assert sealed.decode(digest, stored) == TEXT
    other = ChunkStore(LocalBackend(Path("/nonexistent")), key=bytes(KEY_SIZE))
    with pytest.raises(Corruption, match="authentication"):
        other.decode(digest, stored)
    assert key_id(bytes(KEY_SIZE)) != key_id(bytes(range(KEY_SIZE)))


@pytest.mark.parametrize("damage", ["header", "bit", "truncate", "codec"])
def test_every_damage_is_corruption_never_wrong_data(store: ChunkStore, damage: str) -> None:
    digest = store.hash(TEXT)
    stored = bytearray(store.encode(TEXT))
    if damage == "header":
        stored[0] ^= 1
    elif damage == "bit":
        stored[len(stored) // 2] ^= 0x10
    elif damage == "truncate":
        del stored[-10:]
    else:
        stored[3] = 9
    with pytest.raises(Corruption):
        store.decode(digest, bytes(stored))


def test_plain_text_in_an_encrypted_repository_is_refused(store: ChunkStore,
                                                          sealed: ChunkStore) -> None:
    digest = sealed.hash(TEXT)
    with pytest.raises(Corruption, match="plain text"):
        sealed.decode(digest, store.encode(TEXT))


def test_oversized_chunks_are_refused_before_inflating(tmp_path: Path) -> None:
    small = ChunkStore(LocalBackend(tmp_path / "small"), max_size=4096)
    big = ChunkStore(LocalBackend(tmp_path / "big"))
    digest = big.hash(TEXT)
    with pytest.raises(Corruption, match=r"inflate|more than any"):
        small.decode(digest, big.encode(TEXT))


def test_missing_chunks_are_named(store: ChunkStore) -> None:
    digest = store.hash(b"never stored")
    with pytest.raises(MissingChunk, match=digest.hex()):
        store.get(digest)
    with pytest.raises(MissingChunk):
        list(store.get_many([digest], lambda d, data: data))
