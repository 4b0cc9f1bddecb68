"""Coverage-guided fuzzing (atheris, libFuzzer) of the parsers of untrusted bytes.

Run one target at a time from the repository root, for a time in seconds:
``.venv/bin/python bench/fuzz/fuzz_untrusted.py TARGET -max_total_time=180``
(TARGET: ``frames``, ``chunk``, ``partitions``, ``nbd``, ``nbd_requests``, ``nodes``,
``records``, ``pack_index``). Any other libFuzzer flag passes
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
    from cairn.frames import FrameReader, assemble, parse_frames
    from cairn.insights.partitions import read_partitions
    from cairn.store.chunks import ChunkStore
    from cairn.virt import nbd_protocol
    from cairn.virt.nbd_handshake import Export, Session, negotiate
    from cairn.virt.nbd_transmission import Transmission

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import targets_store


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
    reader, pieces = FrameReader(size), []
    try:
        for start in range(0, len(body), 7):
            pieces += reader.feed(body[start : start + 7])
        reader.finish()
        got = assemble(pieces)
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


class Memory(Disk):
    """A writable disk that records any range the server let past its checks."""

    read_only = False

    def __init__(self, size: int) -> None:
        super().__init__(bytes(size))
        self.buffer = bytearray(size)
        self.outside: list[tuple[str, int, int]] = []

    def _check(self, what: str, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            self.outside.append((what, offset, length))

    def read(self, offset: int, length: int) -> bytes:
        self._check("read", offset, length)
        return bytes(self.buffer[offset : offset + length])

    def write(self, offset: int, data: bytes) -> None:
        self._check("write", offset, len(data))
        self.buffer[offset : offset + len(data)] = data

    def write_zeroes(self, offset: int, length: int) -> None:
        self._check("write_zeroes", offset, length)

    def trim(self, offset: int, length: int) -> None:
        self._check("trim", offset, length)

    def flush(self) -> None:
        pass

    def extents(self, offset: int, length: int) -> list[tuple[int, bool]]:
        self._check("extents", offset, length)
        return [(length // 2, True), (length - length // 2, False)]


def nbd_requests(data: bytes) -> None:
    """Requests after a handshake (its outcome chosen by the first byte): the server answers
    or hangs up, never raises anything but `Disconnected`, and the device sees no range
    outside the export."""
    if not data:
        return
    device = Memory(65536)
    session = Session(structured=bool(data[0] & 1),
                      meta_export="secret" if data[0] & 2 else None)
    server, client = socket.socketpair()
    server.settimeout(2)
    feeder = threading.Thread(target=_feed, args=(client, data[1:]))
    feeder.start()
    try:
        Transmission(server, Export("secret", device), session, threading.Lock()).run()
    except nbd_protocol.Disconnected:
        pass
    finally:
        server.close()
        feeder.join()
        client.close()
    if device.outside:
        raise AssertionError(f"the device was asked for {device.outside[0]}")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": frames, "chunk": chunk, "partitions": partitions, "nbd": nbd,
    "nbd_requests": nbd_requests, "nodes": targets_store.nodes,
    "records": targets_store.records, "pack_index": targets_store.pack_index}


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


def nbd_request_seeds() -> list[bytes]:
    """Each command once, in and out of range, with a structured session and without."""
    p = nbd_protocol

    def req(command: int, offset: int, length: int, flags: int = 0) -> bytes:
        return p.REQUEST.pack(p.REQUEST_MAGIC, flags, command, 7, offset, length)

    requests = (req(p.CMD_READ, 0, 4096) + req(p.CMD_WRITE, 4096, 8) + b"abcdefgh"
                + req(p.CMD_BLOCK_STATUS, 0, 65536, p.CMD_FLAG_REQ_ONE)
                + req(p.CMD_TRIM, 0, 4096) + req(p.CMD_WRITE_ZEROES, 0, 8192,
                                                   p.CMD_FLAG_NO_HOLE)
                + req(p.CMD_FLUSH, 0, 0) + req(p.CMD_READ, 65536, 1) + req(p.CMD_DISC, 0, 0))
    return [bytes([0]) + requests, bytes([3]) + requests]


SEEDS: dict[str, Callable[[], list[bytes]]] = {"nbd": nbd_seeds,
                                               "nbd_requests": nbd_request_seeds}


def main() -> None:
    target = sys.argv[1]
    args = [sys.argv[0], *sys.argv[2:]]
    seeds = SEEDS[target]() if target in SEEDS else targets_store.seeds(target)
    if seeds and not any(not a.startswith("-") for a in args[1:]):
        corpus = Path(tempfile.mkdtemp(prefix=f"cairn-fuzz-{target}-"))
        for n, seed in enumerate(seeds):
            (corpus / f"seed{n}").write_bytes(seed)
        args.append(str(corpus))
    atheris.Setup(args, TARGETS[target])
    atheris.Fuzz()


if __name__ == "__main__":
    main()
