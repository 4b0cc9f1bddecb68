"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers of untrusted bytes.

Run one target at a time from the repository root, for a time in seconds:
``.venv/bin/python bench/fuzz/fuzz_untrusted.py TARGET -max_total_time=180``
(TARGET: ``frames``, ``chunk``, ``partitions``, ``nbd``). Any other libFuzzer flag passes
through (``-artifact_prefix=DIR/`` keeps the crashers). The only acceptable outcomes are a
parse or the typed errors a user sees; anything else is a crash, and each crash found
becomes a regression input in ``tests/fuzz``. `tests/fuzz/test_untrusted_bytes.py` runs
the same properties under Hypothesis in CI.
"""

from __future__ import annotations

import socket
import struct
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports():
    from cairn.errors import CairnError
    from cairn.frames import FrameReader, parse_frames
    from cairn.insights.partitions import read_partitions
    from cairn.store.chunks import ChunkStore
    from cairn.virt import nbd_protocol
    from cairn.virt.nbd_handshake import Export, negotiate


class Disk:
    """A read-only disk over the input's bytes, for the partition reader and NBD."""

    read_only = True

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def pread(self, offset: int, length: int) -> bytes:
        if length > 8 << 20:
            raise AssertionError(f"a parser asked for {length} bytes at once")
        return self.data[offset : offset + length] if offset >= 0 else b""

    def read(self, offset: int, length: int) -> bytes:
        return self.pread(offset, length)

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        return [(length, False)]


def frames(data: bytes) -> None:
    size = int.from_bytes(data[:5], "big") if len(data) > 5 else 1
    body = data[5:]
    try:
        whole = parse_frames(body, size)
    except CairnError:
        whole = None
    reader, got = FrameReader(size), []
    try:
        for start in range(0, len(body), 7):
            got += reader.feed(body[start : start + 7])
        got += reader.finish() or []
    except CairnError:
        got = None  # type: ignore[assignment]
    if whole is not None and got is not None and whole != got:
        raise AssertionError("streamed frames differ from the whole body's")
    for offset, piece in whole or []:
        if offset < 0 or offset + len(piece) > size:
            raise AssertionError("a frame outside the upload")


KEYED = ChunkStore(None, key=b"k" * 32)  # type: ignore[arg-type]  # decode needs no backend
PLAIN = ChunkStore(None)  # type: ignore[arg-type]


def chunk(data: bytes) -> None:
    if len(data) < 33:
        return
    chunks = KEYED if data[0] & 1 else PLAIN
    digest, stored = data[1:33], data[33:]
    try:
        out = chunks.decode(digest, stored)
    except CairnError:
        return
    if chunks.hash(out) != digest or len(out) > chunks.max_size:
        raise AssertionError("decode returned what does not hash to the digest")


def partitions(data: bytes) -> None:
    try:
        parts = read_partitions(Disk(data))  # type: ignore[arg-type]
    except CairnError:
        return
    for part in parts:
        if part.start < 0 or part.length < 0:
            raise AssertionError("a partition before the disk")


def nbd(data: bytes) -> None:
    """A client's whole handshake in one go; the server must answer or hang up, never
    raise anything but `Disconnected`, within its socket timeout."""
    server, client = socket.socketpair()
    server.settimeout(2)
    feeder = threading.Thread(target=_feed, args=(client, data))
    feeder.start()
    try:
        negotiate(server, Export("secret", Disk(b"\0" * 65536)))  # type: ignore[arg-type]
    except (nbd_protocol.Disconnected, CairnError, OSError):
        pass
    finally:
        server.close()
        feeder.join()
        client.close()


def _feed(client: socket.socket, data: bytes) -> None:
    try:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)
        while client.recv(65536):
            pass
    except OSError:
        pass


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames, "chunk": chunk, "partitions": partitions, "nbd": nbd}


def _option(option: int, payload: bytes) -> bytes:
    return nbd_protocol.OPTION_HEADER.pack(nbd_protocol.IHAVEOPT, option, len(payload)) + payload


def nbd_seeds() -> list[bytes]:
    """Real handshakes (as qemu-img and nbdinfo send them) for the fuzzer to start from: an
    8-byte magic is not found by chance."""
    p = nbd_protocol
    flags = struct.pack(">I", p.CLIENT_FLAGS_KNOWN)
    name = struct.pack(">I", 6) + b"secret"
    go = _option(p.OPT_GO, name + struct.pack(">HHH", 2, p.INFO_BLOCK_SIZE, p.INFO_NAME))
    meta = _option(p.OPT_SET_META_CONTEXT,
                   name + struct.pack(">II", 1, 15) + b"base:allocation")
    return [flags + _option(p.OPT_EXPORT_NAME, b"secret"),
            flags + _option(p.OPT_STRUCTURED_REPLY, b"") + meta + go,
            flags + _option(p.OPT_LIST, b"") + _option(p.OPT_INFO, name + b"\0\0") + go,
            flags + _option(p.OPT_LIST_META_CONTEXT, name + b"\0\0\0\0") +
            _option(p.OPT_ABORT, b"")]


def main() -> None:
    target = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    if target == "nbd" and not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix="cairn-fuzz-nbd-"))
        for n, seed in enumerate(nbd_seeds()):
            (corpus / f"seed{n}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
