"""One contract, every backend: the same tests on a local directory and on SeaweedFS S3.

See `cairn.store.backend` for the contract. Each S3 test works under its own key prefix in
the session's bucket, so tests never see each other's objects.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cairn.store.backend import Backend
from cairn.store.backends.local import LocalBackend
from cairn.store.backends.packs import PackBackend
from cairn.store.backends.s3 import S3Backend
from tests.s3server import SeaweedS3


@pytest.fixture(params=["local", "packs", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "local":
        yield LocalBackend(tmp_path)
        return
    if request.param == "packs":
        packs = PackBackend(tmp_path)
        yield packs
        packs.close()
        return
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    yield S3Backend(
        server.bucket,
        f"conformance/{uuid.uuid4().hex}",
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


@pytest.mark.parametrize("size", [0, 1, 65536, 1 << 20])
def test_put_get_roundtrip(backend: Backend, size: int) -> None:
    data = os.urandom(size)
    backend.put("chunks/ab1/ab12cd", data)
    assert backend.get("chunks/ab1/ab12cd") == data


def test_overwrite_with_same_bytes(backend: Backend) -> None:
    data = os.urandom(1000)
    backend.put("chunks/x", data)
    backend.put("chunks/x", data)
    assert backend.get("chunks/x") == data
    assert list(backend.list("chunks")) == ["chunks/x"]


def test_get_missing_raises_keyerror(backend: Backend) -> None:
    with pytest.raises(KeyError):
        backend.get("chunks/missing")


@pytest.mark.parametrize("synced", [False, True])
def test_get_many_reads_each_object_once_whatever_the_layout(
        backend: Backend, synced: bool) -> None:
    """Objects around punched holes, far apart and small or big: every asked-for object
    comes back whole, exactly once, through ``each``; the others are not read."""
    sizes = [1, 65536, 300_000, 7, 5 << 20, 4096, 0, 65536 * 3]
    data = {f"chunks/g/{i}": os.urandom(n) for i, n in enumerate(sizes)}
    for name, blob in data.items():
        backend.put(name, blob)
    backend.delete("chunks/g/2")
    if synced:
        backend.sync()
    wanted = [n for n in data if n not in ("chunks/g/2", "chunks/g/5")]
    got = list(backend.get_many(wanted, lambda name, blob: (name, bytes(blob))))
    assert sorted(n for n, _ in got) == sorted(wanted)
    assert all(blob == data[n] for n, blob in got)
    with pytest.raises(KeyError):
        list(backend.get_many(["chunks/g/0", "chunks/g/2"], lambda name, blob: name))


def test_delete(backend: Backend) -> None:
    backend.delete("chunks/never-written")
    backend.put("chunks/a", b"a")
    backend.delete("chunks/a")
    assert not backend.exists("chunks/a")
    with pytest.raises(KeyError):
        backend.get("chunks/a")


def test_exists(backend: Backend) -> None:
    assert not backend.exists("meta/config")
    backend.put("meta/config", b"")
    assert backend.exists("meta/config")


def test_list_prefix_is_a_directory(backend: Backend) -> None:
    names = {"chunks/aa/1", "chunks/aa/2", "chunks/bb/3", "chunksX/4", "meta/5"}
    for name in names:
        backend.put(name, name.encode())
    assert sorted(backend.list("chunks")) == ["chunks/aa/1", "chunks/aa/2", "chunks/bb/3"]
    assert sorted(backend.list("chunks/aa")) == ["chunks/aa/1", "chunks/aa/2"]
    assert sorted(backend.list("")) == sorted(names)
    assert list(backend.list("nothing")) == []


def test_list_pages_past_one_thousand(backend: Backend) -> None:
    names = {f"chunks/{i % 7}/{i:05d}" for i in range(1100)}
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: backend.put(n, b""), names))
    backend.put("other/outside", b"")
    assert sorted(backend.list("chunks")) == sorted(names)


def test_concurrent_puts_from_eight_threads(backend: Backend) -> None:
    """Distinct names and one name written by every thread at once (same bytes)."""
    shared = os.urandom(65536)
    blobs = {f"chunks/t{i:03d}": os.urandom(65536) for i in range(96)}

    def write(item: tuple[str, bytes]) -> None:
        backend.put(*item)
        backend.put("chunks/shared", shared)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, blobs.items()))
    with ThreadPoolExecutor(8) as pool:
        got = dict(zip(blobs, pool.map(backend.get, blobs), strict=True))
    assert got == blobs
    assert backend.get("chunks/shared") == shared
    assert sorted(backend.list("chunks")) == sorted([*blobs, "chunks/shared"])


def test_sync_after_puts_and_deletes(backend: Backend) -> None:
    backend.put("chunks/keep", b"k")
    backend.put("chunks/drop", b"d")
    backend.delete("chunks/drop")
    backend.sync()
    assert backend.get("chunks/keep") == b"k"
    assert list(backend.list("chunks")) == ["chunks/keep"]
