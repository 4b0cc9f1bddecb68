"""Repack (`cairn.store.repack`): the newest point gathered, nothing else harmed.

A 4 MiB volume gets a full backup and 24 incrementals of scattered small writes, so its
newest point is read from 25 backups' packs. A repack must leave it in a few long reads,
every point must still restore byte for byte and verify clean, the moved copies' old
bytes must be given back, and the chunks keep their names. It must run beside a backup in
another process (each committing while the other has copied but not committed), and a
repack killed at any step of its commits must lose nothing.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from cairn.store.chunks import ZERO, chunk_name
from cairn.store.repack import MIN_SPARSE, repack
from cairn.store.repository import Repository
from cairn.store.verify import verify
from tests.store.helpers import (
    backup,
    digest,
    flip_bit,
    make_image,
    mutate,
    restored_digest,
)

ROOT = Path(__file__).resolve().parents[2]
SIZE = 4 * 1024 * 1024
INCREMENTALS = 24

History = dict[str, str]
"""point id -> sha256 of the image it was taken of"""


def _history(work: Path) -> History:
    image = work / "disk.img"
    data = make_image(image, SIZE, seed=11, fill=0.9)
    points: History = {}
    with Repository.init(work / "repo") as repo:
        points[backup(repo, "vol", image).id] = digest(data)
        for step in range(INCREMENTALS):
            ranges = mutate(image, data, seed=step, writes=3)
            points[backup(repo, "vol", image, ranges).id] = digest(data)
    return points


def _allocated(repo: Path) -> int:
    return sum(p.stat().st_blocks * 512 for p in (repo / "packs").iterdir())


def _retired(repo: Path) -> int:
    with contextlib.closing(sqlite3.connect(repo / "packs.db")) as db:
        return int(db.execute("SELECT COUNT(*) FROM retired").fetchone()[0])


def _check(repo_path: Path, points: History, out: Path) -> None:
    """Every point restores byte for byte; read-data verify is clean."""
    with Repository.open(repo_path) as repo:
        for point_id, want in points.items():
            assert restored_digest(repo, repo.resolve(point_id), out) == want, point_id
        report = verify(repo, read_data=True)
        assert report.ok, report.problems[:3]


def _start(args: list[str]) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_ready(gate: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while not gate.with_suffix(".ready").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the worker never reached its commit"
        time.sleep(0.02)


def _finish(gate: Path, proc: subprocess.Popen[str]) -> tuple[int, str]:
    gate.with_suffix(".go").touch()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, -9), err
    return proc.returncode, out


def test_repack_gathers_the_newest_point_and_gives_back_the_old_places(tmp_path: Path) -> None:
    points = _history(tmp_path)
    repo_path = tmp_path / "repo"
    with Repository.open(repo_path) as repo:
        names = set(repo.chunks.backend.list("chunks"))
        before = _allocated(repo_path)
        result = repack(repo)
        [done] = result.points
        assert done.point == list(points)[-1]
        assert done.sparse_before >= MIN_SPARSE
        assert done.reads_after <= 3 < done.reads_before
        assert set(repo.chunks.backend.list("chunks")) == names
        assert repack(repo).moved_chunks == 0  # already gathered: nothing to do
    assert _retired(repo_path) == 0
    # The moved copies' places are punched, and the packs that left sparse are compacted
    # and unlinked: not even the blocks a hole shares with a neighbour stay taken (what
    # may differ is the last, partial block of each pack).
    assert result.compacted_packs > 0
    assert _allocated(repo_path) <= before + 16 * 4096
    _check(repo_path, points, tmp_path / "out.img")


def test_a_reader_that_looked_chunks_up_before_they_moved_still_reads_them(
        tmp_path: Path) -> None:
    points = _history(tmp_path)
    with Repository.open(tmp_path / "repo") as reader, \
            Repository.open(tmp_path / "repo") as mover:
        newest = reader.resolve(list(points)[-1])
        tree = reader.tree(newest)
        digests = list({d for _i, d in reader.nodes.leaves(tree, 0, tree.blocks) if d != ZERO})
        digests = digests[:40]  # under READ_LIMIT: read lazily on this thread, batch by batch
        before = {name: loc for read in reader.chunks.backend.reads(
            [chunk_name(d) for d in digests]) for name, loc in read}
        got: dict[bytes, bytes] = {}
        reading = reader.chunks.get_many(digests, got.__setitem__)
        next(reading)  # every chunk looked up, the first read done
        assert repack(mover).moved_chunks > 0
        list(reading)  # the rest read where the look-up said: holes, or packs gone
        after = {name: loc for read in mover.chunks.backend.reads(list(before))
                 for name, loc in read}
        assert sum(after[n] != before[n] for n in before) > len(before) // 2
        assert set(got) == set(digests)
        assert not reader.chunks.take_damage()  # nothing taken for damage


def test_repack_leaves_a_damaged_chunk_where_it_is_and_names_it(tmp_path: Path) -> None:
    points = _history(tmp_path)
    with Repository.open(tmp_path / "repo") as repo:
        tree = repo.tree(repo.resolve(list(points)[-1]))
        damaged = next(d for _i, d in repo.nodes.leaves(tree, 0, tree.blocks) if d != ZERO)
        flip_bit(repo, damaged)
        backend = repo.chunks.backend
        where = backend.reads([chunk_name(damaged)])
        assert repack(repo).moved_chunks > 0
        assert backend.reads([chunk_name(damaged)]) == where  # not copied: damage stays put
        assert damaged in repo.catalog.bad_chunks()  # and is named, as any read finding it


def test_a_retired_row_naming_live_bytes_is_not_punched(tmp_path: Path) -> None:
    """``packs.db`` is read like stored bytes: a ``retired`` row altered to name a live
    chunk (or left over, overlapping one) must not make `recover` punch it."""
    image = tmp_path / "disk.img"
    want = digest(make_image(image, 1024 * 1024, seed=3, fill=1.0))
    with Repository.init(tmp_path / "repo") as repo:
        point = backup(repo, "vol", image)
    with contextlib.closing(sqlite3.connect(tmp_path / "repo" / "packs.db")) as db, db:
        pack, offset, length = db.execute("SELECT pack, offset, length FROM objects "
                                          "ORDER BY length DESC LIMIT 1").fetchone()  # a block
        db.execute("INSERT INTO retired VALUES(?, ?, ?)", (pack, offset + 100, length))
    with Repository.open(tmp_path / "repo") as repo:
        repo.chunks.backend.recover()
        assert restored_digest(repo, point, tmp_path / "out.img") == want
    assert _retired(tmp_path / "repo") == 0


def test_repack_runs_beside_a_backup_in_another_process(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    points = _history(template)
    data = bytearray((template / "disk.img").read_bytes())
    mutate(template / "disk.img", data, seed=99, writes=8)
    for first in ("backup", "repack"):
        work = tmp_path / first
        shutil.copytree(template, work)
        backup_proc = _start(["tests.store.crash_worker", str(work / "repo"), "vol",
                              str(work / "disk.img"), str(work / "b"), "0"])
        repack_proc = _start(["tests.store.repack_worker", str(work / "repo"),
                              str(work / "r"), "0"])
        try:
            _wait_ready(work / "b", backup_proc)
            _wait_ready(work / "r", repack_proc)
            order = [(work / "b", backup_proc), (work / "r", repack_proc)]
            outs = [_finish(*pair) for pair in (order if first == "backup" else order[::-1])]
        finally:
            for proc in (backup_proc, repack_proc):
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        assert [code for code, _out in outs] == [0, 0]
        new_point = (outs[0] if first == "backup" else outs[1])[1].split()[0]
        moved = int((outs[1] if first == "backup" else outs[0])[1].split()[0])
        assert moved > 0
        _check(work / "repo", points | {new_point: digest(data)}, work / "out.img")


def test_a_killed_repack_loses_nothing_and_its_space_comes_back(tmp_path: Path) -> None:
    template = tmp_path / "template"
    template.mkdir()
    points = _history(template)
    clean = tmp_path / "clean"
    shutil.copytree(template, clean)
    proc = _start(["tests.store.repack_worker", str(clean / "repo"), str(clean / "g"), "0"])
    _wait_ready(clean / "g", proc)
    _code, out = _finish(clean / "g", proc)
    steps = int(out.split()[1])
    clean_allocated = _allocated(clean / "repo")
    for kill_at in (3, 4, steps // 2):  # before the first COMMIT, after it, midway
        work = tmp_path / f"k{kill_at}"
        shutil.copytree(template, work)
        proc = _start(["tests.store.repack_worker", str(work / "repo"), str(work / "g"),
                       str(kill_at)])
        try:
            _wait_ready(work / "g", proc)
            code, _out = _finish(work / "g", proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert code == -9, f"the repack was not killed at step {kill_at} of {steps}"
        _check(work / "repo", points, work / "out.img")
        with Repository.open(work / "repo") as repo:
            repo.chunks.backend.recover()  # what the next backup of any volume does
            assert not repo.chunks.backend.unindexed(), kill_at
            repack(repo)
            assert verify(repo, read_data=True).ok, kill_at
        assert _retired(work / "repo") == 0, kill_at
        assert _allocated(work / "repo") <= clean_allocated + 64 * 1024, kill_at
        shutil.rmtree(work)
