"""Fuzz targets for what cairn reads back from its own storage: block-map nodes, sealed
point and marks records (a bucket is shared ground), and the pack index (`packs.db`).

Imported by `fuzz_untrusted.py` under atheris's instrumentation. The only acceptable
outcomes are a result within what the input allows, or the typed errors a user sees.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import tempfile
from pathlib import Path

from cairn.errors import CairnError
from cairn.store import blockmap
from cairn.store.backends.packs import PackBackend
from cairn.store.chunks import HASH_SIZE
from cairn.store.cloud import Cloud
from cairn.store.marks import Marks
from cairn.store.records import Sealer

SEALER = Sealer(b"s" * 32)
CLOUD = Cloud(None, "s3://fuzz", SEALER, "fuzzrepo")  # type: ignore[arg-type]  # reads only


def nodes(data: bytes) -> None:
    """A tree of ``blocks`` blocks whose nodes are slices of the input, each named by its
    index: every walk either answers inside the tree or raises a typed error."""
    if len(data) < 6:
        return
    blocks = int.from_bytes(data[:4], "big") % (blockmap.FANOUT ** 2 * 3) + 1
    cut = data[4] * 8 + 1
    body = data[5:]
    table = {bytes([n + 1]) * HASH_SIZE: body[start : start + cut]
             for n, start in enumerate(range(0, len(body), cut)) if n < 255}

    def fetch(digest: bytes) -> bytes:
        if digest not in table:
            raise KeyError(digest.hex())
        return table[digest]

    cache = blockmap.NodeCache(fetch)
    tree = blockmap.Tree(bytes([1]) * HASH_SIZE, blocks)
    try:
        for block, digest in cache.leaves(tree, 0, min(blocks, 2048)):
            if not 0 <= block < blocks or len(digest) != HASH_SIZE:
                raise AssertionError(f"leaf {block} {digest.hex()} outside the tree")
        for (level, index), _old, new in blockmap.diff(cache, None, tree):
            if not 0 <= level <= blockmap.LEVELS or index >= tree.width(level) or \
                    (new is not None and len(new) != HASH_SIZE):
                raise AssertionError(f"slot {level}/{index} outside the tree")
    except (CairnError, KeyError):
        return


def records(data: bytes) -> None:
    """Point and marks records as a bucket returns them: raw, or re-sealed (as a key holder
    writing odd fields would) so the checks after the MAC are reached too."""
    if not data:
        return
    raw = data[1:]
    if data[0] & 1:
        try:
            record = json.loads(raw)
        except (ValueError, RecursionError):
            record = None
        if not isinstance(record, dict):
            return
        raw = json.dumps(SEALER.seal(record)).encode()
    name = "points/web01.sda/0123456789ab.json"
    try:
        point = CLOUD.read_record(name, raw)
    except CairnError:
        point = None
    if point is not None and (len(point.root) != 32 or point.size <= 0):
        raise AssertionError("a point record outside what cairn writes")
    with contextlib.suppress(CairnError, TypeError, ValueError):
        Marks.from_json(SEALER.open(raw, "marks"))


class _Packs:
    """One real pack backend with a few objects; each input replaces one index row."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="cairn-fuzz-packs-"))
        backend = PackBackend(self.root)
        for n in range(4):
            backend.put(f"chunks/{n}", bytes([n]) * 5000)
        backend.sync()
        backend.close()
        self.victim = self.root / "victim"

    def run(self, data: bytes) -> None:
        if len(data) < 16:
            return
        offset = int.from_bytes(data[:8], "big", signed=True)
        length = int.from_bytes(data[8:16], "big", signed=True)
        pack = data[16:].decode("utf-8", "replace").replace("\0", "")
        self.victim.write_bytes(b"v" * 8192)
        db = sqlite3.connect(self.root / "packs.db")
        with db:
            db.execute("INSERT OR REPLACE INTO objects VALUES('chunks/x', ?, ?, ?)",
                       (pack, offset, length))
        db.close()
        backend = PackBackend(self.root)
        try:
            for call in (lambda: backend.get("chunks/x"),
                         lambda: list(backend.get_many(["chunks/x", "chunks/1"],
                                                       lambda _n, b: bytes(b)))):
                try:
                    got = call()
                except (CairnError, KeyError):
                    continue
                if isinstance(got, bytes) and len(got) > 1 << 20:
                    raise AssertionError(f"a read of {len(got)} bytes from one index row")
            backend.delete("chunks/x")
            backend.sync()
        except (CairnError, KeyError):
            pass
        finally:
            backend.close()
        if self.victim.read_bytes() != b"v" * 8192:
            raise AssertionError(f"an index row naming {pack!r} changed a file beside packs/")


_PACKS: list[_Packs] = []


def pack_index(data: bytes) -> None:
    if not _PACKS:
        _PACKS.append(_Packs())
    _PACKS[0].run(data)


def seeds(target: str) -> list[bytes]:
    """Valid inputs to start from: sealed JSON and real rows are not found by chance."""
    if target == "records":
        point = {"id": "0123456789ab", "volume": "web01.sda", "created": 1.5, "size": 4096,
                 "root": (b"\1" * 32).hex(), "allocated": 0, "bytes_read": 0,
                 "bytes_stored": 0, "seconds": 0.1, "source": "x", "repository": "fuzzrepo"}
        return [b"\1" + json.dumps(point).encode(),
                b"\0" + json.dumps(SEALER.seal(point)).encode(),
                b"\1" + json.dumps({"repository": "fuzzrepo", "point": "0123456789ab"}).encode()]
    if target == "pack_index":
        return [(0).to_bytes(8, "big") + (5000).to_bytes(8, "big") + b"../victim",
                (0).to_bytes(8, "big") + (5000).to_bytes(8, "big") + b"1-000000000000.pack"]
    if target == "nodes":
        return [(1000).to_bytes(4, "big") + bytes([3]) + b"\2" * 32 + bytes(range(32)) * 8,
                (600).to_bytes(4, "big") + bytes([127]) + (b"\3" * 32 + b"\2" * 32) * 16]
    return []
