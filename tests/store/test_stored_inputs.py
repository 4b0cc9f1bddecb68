"""What cairn reads back from its own storage is checked like any untrusted input.

Found by fuzzing (`bench/fuzz/fuzz_untrusted.py`: ``pack_index``, ``nodes``, ``records``)
and by reading the parsers the fuzzer drives: an index row naming a path outside the
packs' folder, a block-map node of the wrong length, and sealed records whose numbers or
nesting pass the MAC but not the parser.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path

import pytest

from cairn.errors import Corruption
from cairn.store.backends.packs import PackBackend
from cairn.store.blockmap import FANOUT, NodeCache, Tree
from cairn.store.cloud import Cloud
from cairn.store.records import Sealer
from cairn.store.repository import Repository


def set_row(root: Path, name: str, pack: str, offset: int, length: int) -> None:
    with contextlib.closing(sqlite3.connect(root / "packs.db")) as db, db:
        db.execute("UPDATE objects SET pack=?, offset=?, length=? WHERE name=?",
                   (pack, offset, length, name))


def test_an_index_row_naming_a_path_never_reads_or_punches_it(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    victim = tmp_path / "victim"
    victim.write_bytes(b"v" * 65536)
    backend = PackBackend(root)
    for name in ("chunks/a", "chunks/b", "chunks/c"):
        backend.put(name, name.encode() * 4096)
    backend.sync()
    backend.close()
    set_row(root, "chunks/a", "../../victim", 0, 65536)
    set_row(root, "chunks/b", backend_pack(root), 0, 1 << 40)
    (root / "packs" / "junk.pack").write_bytes(b"x")

    backend = PackBackend(root)
    try:
        backend.recover()
        for name in ("chunks/a", "chunks/b"):
            with pytest.raises(KeyError):
                backend.get(name)
            with pytest.raises(KeyError):
                list(backend.get_many([name, "chunks/c"], lambda _n, data: bytes(data)))
        assert backend.get("chunks/c") == b"chunks/c" * 4096
        backend.delete_many(["chunks/a", "chunks/b"])
        backend.sync()
    finally:
        backend.close()
    assert victim.read_bytes() == b"v" * 65536
    assert (root / "packs" / "junk.pack").exists()


def backend_pack(root: Path) -> str:
    return next(p.name for p in (root / "packs").glob("*-*.pack"))


def test_a_node_of_the_wrong_length_is_corruption(tmp_path: Path) -> None:
    """A node that hashes right but holds too few hashes (or a torn one) sent a walk of
    its leaves into IndexError."""
    repo = Repository.init(tmp_path / "repo")
    try:
        for node in (b"\1" * 32 * 3, b"\1" * 32 * FANOUT + b"\2" * 31):
            digest = repo.chunks.hash(node)
            repo.chunks.put(digest, node)
            cache = NodeCache(repo.chunks.get)
            for tree, level in ((Tree(digest, FANOUT ** 3 * 4), 4),
                                (Tree(digest, FANOUT ** 2 * 5), 4)):
                with pytest.raises(Corruption, match="block-map node"):
                    list(cache.leaves(tree, 0, 10))
                with pytest.raises(Corruption, match="block-map node"):
                    cache.children(tree, level, 0, digest)
    finally:
        repo.close()


SEALER = Sealer(b"k" * 32)
POINT = {"id": "0123456789ab", "volume": "web01.sda", "created": 1.5, "size": 4096,
         "root": "01" * 32, "allocated": 0, "bytes_read": 0, "bytes_stored": 0,
         "seconds": 0.1, "source": "agent:web01", "repository": "r1"}
NAME = "points/web01.sda/0123456789ab.json"


@pytest.mark.parametrize("change", [{"size": float("inf")}, {"created": 10 ** 400},
                                    {"allocated": float("nan")}])
def test_a_sealed_point_record_with_numbers_out_of_range_is_corruption(
        change: dict[str, object]) -> None:
    cloud = Cloud(None, "s3://b", SEALER, "r1")  # type: ignore[arg-type]  # reads no object
    assert cloud.read_record(NAME, json.dumps(SEALER.seal(POINT)).encode()).size == 4096
    with pytest.raises(Corruption, match="does not belong"):
        cloud.read_record(NAME, json.dumps(SEALER.seal({**POINT, **change})).encode())


def test_a_record_nested_past_the_parser_is_corruption() -> None:
    with pytest.raises(Corruption, match="not a cairn record"):
        SEALER.open(b"[" * 100_000, "points/x.json")


def test_a_record_whose_mac_is_not_ascii_is_corruption() -> None:
    """Found by the ``records`` fuzz target: ``hmac.compare_digest`` raised TypeError."""
    raw = json.dumps({**SEALER.seal(POINT), "mac": "ba79\u0319" + "0" * 59}).encode()
    with pytest.raises(Corruption, match="fails authentication"):
        SEALER.open(raw, NAME)
