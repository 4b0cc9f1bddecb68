"""Fail the k-th storage operation (SQLite's way), for k = 1, 2, 3 ... until the work succeeds.

Every put, delete and sync of a backup or a delete is failed in turn, once failing only that
call and once failing every call after it. After each failure the next writer opens the
repository as usual and it must hold: ``verify --read-data`` is clean, every committed point
restores bit for bit, and the chunk files are exactly those the catalog counts.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.store.backend import Backend, T
from cairn.store.chunks import chunk_name
from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.store.helpers import backup, digest, make_image, mutate, restored_digest


class FailingBackend:
    """Passes calls through, except that call number ``fail_at`` (and, if ``sticky``, every
    later one) raises EIO."""

    def __init__(self, inner: Backend, fail_at: int, sticky: bool) -> None:
        self.inner = inner
        self.fail_at = fail_at
        self.sticky = sticky
        self.calls = 0

    def _tick(self) -> None:
        self.calls += 1
        if self.calls == self.fail_at or (self.sticky and self.calls > self.fail_at):
            raise OSError(errno.EIO, "injected I/O error")

    def put(self, name: str, data: bytes, replace: bool = False) -> None:
        self._tick()
        self.inner.put(name, data, replace)

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        return self.inner.get_many(names, each)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def delete(self, name: str) -> None:
        self._tick()
        self.inner.delete(name)

    def delete_many(self, names: list[str]) -> None:
        for name in names:
            self.delete(name)

    def list(self, prefix: str) -> Iterator[str]:
        return self.inner.list(prefix)

    def sync(self) -> None:
        self._tick()
        self.inner.sync()

    def close(self) -> None:
        self.inner.close()

    def recover(self) -> None:
        self.inner.recover()


def check(path: Path, expected: dict[str, str], scratch: Path) -> None:
    repo = Repository.open(path)
    try:
        for volume in repo.catalog.volumes():
            with repo.volume_lock(volume):
                repo.recover(volume)
        report = verify(repo, read_data=True)
        assert report.ok and report.orphans == 0, report.problems
        staged = repo.catalog.db.execute("SELECT COUNT(*) FROM session_chunks").fetchone()
        assert staged == (0,), "a failed backup's staged runs outlived its session"
        on_disk = set(repo.chunks.backend.list("chunks"))
        assert on_disk == {chunk_name(h) for h in repo.catalog.chunk_refs()}
        for point in repo.catalog.points():
            assert restored_digest(repo, point, scratch / "out") == expected[point.id]
    finally:
        repo.close()


@pytest.fixture
def base(tmp_path: Path) -> tuple[Path, Path, bytearray, dict[str, str]]:
    path = tmp_path / "base"
    repo = Repository.init(path)
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=1, fill=0.7)
    expected = {}
    for k in range(2):
        expected[backup(repo, "vol", img).id] = digest(data)
        mutate(img, data, seed=10 + k)
    repo.close()
    return path, img, data, expected


@pytest.mark.parametrize("sticky", [False, True], ids=["once", "always"])
def test_backup_survives_a_failure_at_every_step(base: tuple[Path, Path, bytearray,
                                                             dict[str, str]],
                                                 tmp_path: Path, sticky: bool) -> None:
    path, img, _data, expected = base
    for k in range(1, 200):
        work = tmp_path / f"k{k}"
        shutil.copytree(path, work)
        repo = Repository.open(work)
        repo.chunks.backend = FailingBackend(repo.chunks.backend, k, sticky)
        try:
            point = backup(repo, "vol", img)
        except OSError:
            committed = None
        else:
            committed = point
        finally:
            repo.close()
        want = dict(expected)
        if committed is not None:
            want[committed.id] = digest(img.read_bytes())
        check(work, want, tmp_path)
        shutil.rmtree(work)
        if committed is not None:
            assert k > 3, "the backup never touched storage"
            return
    pytest.fail("the backup never completed")


@pytest.mark.parametrize("sticky", [False, True], ids=["once", "always"])
def test_delete_survives_a_failure_at_every_step(base: tuple[Path, Path, bytearray,
                                                             dict[str, str]],
                                                 tmp_path: Path, sticky: bool) -> None:
    path, _img, _data, expected = base
    for k in range(1, 200):
        work = tmp_path / f"k{k}"
        shutil.copytree(path, work)
        repo = Repository.open(work)
        first = repo.catalog.points()[0]
        repo.chunks.backend = FailingBackend(repo.chunks.backend, k, sticky)
        try:
            delete_points(repo, [first])
            done = True
        except OSError:
            done = False
        finally:
            repo.close()
        reopened = Repository.open(work)
        remaining = {p.id for p in reopened.catalog.points()}
        reopened.close()
        check(work, {p: d for p, d in expected.items() if p in remaining}, tmp_path)
        shutil.rmtree(work)
        if done:
            return
    pytest.fail("the delete never completed")
