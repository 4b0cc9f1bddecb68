"""Chunks: the only bytes the store keeps, named by the hash of what they hold.

Format of one stored chunk (version 1), written once and never changed::

    offset 0  3 bytes  magic b"CRN"
    offset 3  1 byte   codec: 0 = stored as is, 1 = zstd frame; +0x80 when encrypted
    offset 4  ...      payload; encrypted: 12-byte nonce, then AES-256-GCM of the
                       (possibly compressed) bytes with the 4-byte header as associated data

A chunk is named by BLAKE3 of its plain content, keyed BLAKE3 when the repository has a
key (so names reveal nothing about content to whoever holds the bytes without the key), and
identical blocks of any volume are stored once. The encryption key is derived from the same
repository key; it never leaves the machine that holds the key file. The hash of the all-zero block
is never computed: ``ZERO`` (32 zero bytes) stands for it, and for any all-zero subtree of a
block map, and is never stored (thin provisioning). Every read checks the hash: a flipped
bit anywhere surfaces as `Corruption`, never as wrong data.

Stored bytes may come from a bucket someone else can write, so decoding trusts nothing
before the hash: a chunk larger than the repository's largest chunk (``max_size``: a
block or a block-map node) is refused before it is decompressed or hashed, a zstd frame
never inflates past ``max_size``, and a repository with a key refuses a chunk stored in
plain text instead of reading it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, cast

import blake3

if TYPE_CHECKING:
    import zstandard
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cairn.errors import Corruption, MissingChunk
from cairn.store.backend import Backend, T

HASH_SIZE = 32
ZERO = bytes(HASH_SIZE)
MAGIC = b"CRN"
CODEC_RAW = 0
CODEC_ZSTD = 1
ENCRYPTED = 0x80
_HEADER = 4
_NONCE = 12
_TAG = 16
KEY_SIZE = 32
DEFAULT_MAX_SIZE = 1 << 20


def derive(key: bytes, purpose: str) -> bytes:
    """A subkey for one purpose; the repository key itself is never used directly."""
    return blake3.blake3(key, derive_key_context=f"cairn 2026 {purpose}").digest()


def key_id(key: bytes) -> str:
    """What a repository's config records about its key: enough to tell keys apart."""
    return derive(key, "key id")[:16].hex()
# Store a block as is unless zstd saves at least this share: incompressible data (already
# compressed files, random bytes) then costs no decompression on restore.
_MIN_SAVING = 1 / 32


def chunk_name(digest: bytes) -> str:
    text = digest.hex()
    return f"chunks/{text[:3]}/{text}"


class ChunkStore:
    """Encodes, stores, fetches and checks chunks over any `Backend`; safe across threads."""

    def __init__(self, backend: Backend, level: int = 1, key: bytes | None = None,
                 max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.backend = backend
        self.level = level
        self.max_size = max_size
        self.max_stored = _HEADER + _NONCE + max_size + _TAG
        self._name_key = derive(key, "chunk names") if key is not None else None
        self._aead: AESGCM | None = None
        if key is not None:  # imported only here: most commands never need it
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aead = AESGCM(derive(key, "chunk encryption"))
        self._local = threading.local()
        self._damage: dict[bytes, str] = {}
        self._met: set[bytes] = set()  # reported once per process, however often read
        self._damage_lock = threading.Lock()
        self.on_damage: Callable[[dict[bytes, str]], bool] | None = None
        self.locate: Callable[[bytes], str] | None = None
        """where the backend keeps a chunk, for the errors about it (a cloud's packs)"""

    def _damaged(self, digest: bytes, why: str) -> None:
        """Remember a chunk that failed a read and hand what is remembered to
        ``on_damage`` (the catalog's quarantine); what it could not take is kept for
        `take_damage`."""
        with self._damage_lock:
            if digest in self._met:
                return
            self._met.add(digest)
            self._damage[digest] = why
            found = dict(self._damage)
        if self.on_damage is not None and self.on_damage(found):
            with self._damage_lock:
                for h in found:
                    if self._damage.get(h) == found[h]:
                        del self._damage[h]

    def take_damage(self) -> dict[bytes, str]:
        """Damage met by reads and not yet recorded; forgotten here once taken."""
        with self._damage_lock:
            found, self._damage = self._damage, {}
        return found

    def keep_damage(self, found: dict[bytes, str]) -> None:
        """Give back what `take_damage` returned and could not be recorded."""
        with self._damage_lock:
            self._damage = {**found, **self._damage}

    def hash(self, data: bytes | memoryview) -> bytes:
        if self._name_key is not None:
            return blake3.blake3(data, key=self._name_key).digest()
        return blake3.blake3(data).digest()

    # zstandard is imported on first use, like the cipher: its extension module is 11 MiB
    # and loading it costs a cold command 30 ms, which a delete or a listing never needs.

    def _compressor(self) -> zstandard.ZstdCompressor:
        c = getattr(self._local, "c", None)
        if c is None:
            import zstandard

            c = self._local.c = zstandard.ZstdCompressor(level=self.level)
        return c

    def _decompressor(self) -> zstandard.ZstdDecompressor:
        d = getattr(self._local, "d", None)
        if d is None:
            import zstandard

            d = self._local.d = zstandard.ZstdDecompressor()
        return d

    def stored_raw(self, size: int, stored: int) -> bool:
        """Whether a chunk of ``size`` plain bytes taking ``stored`` bytes was kept as is
        (incompressible), known without reading it: `encode` keeps a zstd frame only when
        it is smaller than the data, so only a raw payload is exactly the data's size."""
        overhead = _HEADER + (_NONCE + _TAG if self._aead is not None else 0)
        return stored == size + overhead

    def encode(self, data: bytes | memoryview, compress: bool = True) -> bytes:
        packed = self._compressor().compress(data) if compress else b""
        if compress and len(packed) <= len(data) * (1 - _MIN_SAVING):
            codec, payload = CODEC_ZSTD, packed
        else:
            codec, payload = CODEC_RAW, bytes(data)
        if self._aead is None:
            return MAGIC + bytes([codec]) + payload
        header = MAGIC + bytes([codec | ENCRYPTED])
        nonce = os.urandom(_NONCE)
        return header + nonce + self._aead.encrypt(nonce, payload, header)

    def decode(self, digest: bytes, stored: bytes, copy: bool = True) -> bytes:
        """The checked content of a chunk stored as ``stored``. ``copy`` False: a chunk
        stored as is comes back as a view of ``stored`` (typed bytes: it reads like them),
        which keeps ``stored`` whole in memory as long as it is referenced."""
        if len(stored) < _HEADER or stored[:3] != MAGIC:
            raise Corruption(f"chunk {digest.hex()} has a damaged header")
        if len(stored) > self.max_stored:
            raise Corruption(f"chunk {digest.hex()} is {len(stored)} bytes, more than any "
                             "chunk of this repository: it was altered")
        codec = stored[3]
        payload: bytes | memoryview = memoryview(stored)[_HEADER:]
        if self._aead is not None and not codec & ENCRYPTED:
            raise Corruption(f"chunk {digest.hex()} is stored in plain text in an encrypted "
                             "repository: it was altered; refusing to read it")
        if codec & ENCRYPTED:
            if self._aead is None:
                raise Corruption(f"chunk {digest.hex()} is encrypted but no key was given")
            if len(payload) < _NONCE + _TAG:
                raise Corruption(f"chunk {digest.hex()} is too short to be an encrypted chunk")
            from cryptography.exceptions import InvalidTag

            try:
                payload = self._aead.decrypt(bytes(payload[:_NONCE]), bytes(payload[_NONCE:]),
                                             stored[:_HEADER])
            except InvalidTag:
                raise Corruption(f"chunk {digest.hex()} fails authentication (damaged, or "
                                 "another key)") from None
            codec &= ~ENCRYPTED
        if codec == CODEC_RAW:
            data = bytes(payload) if copy else cast("bytes", payload)
        elif codec == CODEC_ZSTD:
            data = self._inflate(digest, payload)
        else:
            raise Corruption(f"chunk {digest.hex()} has unknown codec {codec}")
        if len(data) > self.max_size:
            raise Corruption(f"chunk {digest.hex()} holds {len(data)} bytes, more than any "
                             "chunk of this repository: it was altered")
        if self.hash(data) != digest:
            raise Corruption(f"chunk {digest.hex()} does not match its hash")
        return data

    def _inflate(self, digest: bytes, payload: bytes | memoryview) -> bytes:
        """Decompress at most ``max_size`` bytes: zstd trusts a frame's declared size and
        ignores ``max_output_size`` when there is one, so that size is checked first."""
        decompressor = self._decompressor()
        import zstandard  # loaded by now by `_decompressor`

        try:
            declared = zstandard.frame_content_size(payload)
            if declared > self.max_size:
                raise Corruption(f"chunk {digest.hex()} claims to inflate to {declared} "
                                 "bytes, more than any chunk of this repository: it was "
                                 "altered")
            return decompressor.decompress(payload, max_output_size=self.max_size)
        except zstandard.ZstdError as exc:
            raise Corruption(f"chunk {digest.hex()} does not decompress: {exc}") from None

    def put(self, digest: bytes, data: bytes | memoryview, compress: bool = True,
            replace: bool = False) -> int:
        """Store ``data`` under ``digest``; returns the bytes it takes in the backend.
        ``replace``: the stored copy is damaged, this one takes its place."""
        encoded = self.encode(data, compress)
        self.backend.put(chunk_name(digest), encoded, replace)
        return len(encoded)

    def get(self, digest: bytes) -> bytes:
        try:
            stored = self.backend.get(chunk_name(digest))
        except KeyError:
            raise self._missing(digest) from None
        return self.checked(digest, stored)

    def _missing(self, digest: bytes) -> MissingChunk:
        self._damaged(digest, "missing")
        exc = MissingChunk(f"chunk {digest.hex()} is missing from the store")
        exc.digest = digest
        return exc

    def settled(self, digest: bytes, stored: bytes) -> bytes:
        """`decode`, reading the chunk once more before calling it damaged: a repack
        (`cairn.store.repack`) may have moved it between the backend's look-up and its
        read, leaving a hole where it was. Real damage costs one more read."""
        return self._settle(digest, stored)[1]

    def _settle(self, digest: bytes, stored: bytes, copy: bool = True) -> tuple[bytes, bytes]:
        """`settled`, with the stored bytes that decoded (``stored``, or the second read)."""
        try:
            return stored, self.decode(digest, stored, copy)
        except Corruption:
            try:
                again = self.backend.get(chunk_name(digest))
            except KeyError:
                again = stored
            if again == stored:
                raise
        return again, self.decode(digest, again, copy)

    def checked(self, digest: bytes, stored: bytes, copy: bool = True) -> bytes:
        """`settled`, quarantining the chunk when it fails."""
        return self._checked(digest, stored, copy)[1]

    def _checked(self, digest: bytes, stored: bytes, copy: bool = True
                 ) -> tuple[bytes, bytes]:
        """`checked`, with the stored bytes that decoded (`_settle`)."""
        try:
            return self._settle(digest, stored, copy)
        except Corruption as exc:
            where = self.locate(digest) if self.locate is not None else ""
            failed = type(exc)(f"{exc}, {where}") if where else exc
            self._damaged(digest, str(failed))
            failed.digest = digest
            raise failed from None

    def get_many(self, digests: list[bytes], each: Callable[[bytes, bytes], T]) -> Iterator[T]:
        """``each(digest, content)`` for every chunk, checked, in the order the backend
        reads fastest; decoding and ``each`` run on the backend's reading threads."""
        return self._read_many(digests, lambda digest, stored: each(
            digest, self.checked(digest, stored)))

    def get_many_kept(self, digests: list[bytes], each: Callable[[bytes, bytes], T]
                      ) -> Iterator[T]:
        """`get_many` for content that is kept (a cache of decoded blocks). Where the
        backend can read each chunk into its own buffer (`PackBackend.get_apart`), a chunk
        stored as is (most of a disk's data: already compressed files) comes back as a
        view of that buffer instead of a copy. The copy is made holding the GIL, and
        filling fresh memory costs a page fault per 4 KiB: a third of a cold NBD copy's
        time went there, on one core. A read fills its fresh buffer in the kernel, off
        the GIL."""
        apart = getattr(self.backend, "get_apart", None)
        return self._read_many(digests, lambda digest, stored: each(
            digest, self.checked(digest, stored, copy=apart is None)), apart)

    def get_many_stored(self, digests: list[bytes], each: Callable[[bytes, bytes, int], T]
                        ) -> Iterator[T]:
        """``each(digest, stored, size)`` for every chunk as stored (to be sent on
        unchanged: replication), after the check `get_many` makes, so a damaged chunk is
        never passed on; ``size`` is its content's. In the order the backend reads fastest
        (a local pack store: pack by pack, neighbours in one read), on its reading threads."""

        def check(digest: bytes, stored: bytes) -> T:
            stored, data = self._checked(digest, stored)
            return each(digest, stored, len(data))

        return self._read_many(digests, check)

    def _read_many(self, digests: list[bytes], each: Callable[[bytes, bytes], T],
                   read: Callable[[list[str], Callable[[str, bytes], T]], Iterator[T]]
                   | None = None) -> Iterator[T]:
        by_name = {chunk_name(d): d for d in digests}
        try:
            yield from (read or self.backend.get_many)(list(by_name), lambda name, stored: each(
                by_name[name], stored))
        except KeyError as exc:
            raise self._missing(by_name.get(str(exc.args[0]), b"")) from None

    def delete(self, digest: bytes) -> None:
        self.backend.delete(chunk_name(digest))

    def delete_many(self, digests: list[bytes]) -> None:
        self.backend.delete_many([chunk_name(d) for d in digests])
