"""Child process of `cairn debug torture`: random operations on a small repository until
it is killed (or, in a clean pass, until it has done ``steps`` of them).

The model is on disk, written only after what it describes is durable: every backup reads a
fresh state file that is never modified again, and its point records that path as its
source, so a committed point must restore to exactly that file. A clone's expected content
is written to ``clone-<name>.sha256`` after the clone's flush, and removed before the clone.
"""

from __future__ import annotations

import hashlib
import os
import random
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Event
from pathlib import Path

from cairn.errors import CairnError, InUse
from cairn.sources.image import ImageSource
from cairn.store.clones import CloneVolume, create_clone, list_clones, remove_clone
from cairn.store.delete import delete_points
from cairn.store.ingest import Ingest
from cairn.store.repack import repack
from cairn.store.repository import Repository
from cairn.store.retention import Policy, select

MIB = 1024 * 1024
VOLUMES = ("alpha", "beta")
CLOUD_SHARE = 0.3


def write_state(path: Path, data: bytes | bytearray) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.rename(path)


def new_image(rnd: random.Random, size: int) -> bytearray:
    """About half the 64 KiB blocks random, the rest zeros (holes and dedup both happen)."""
    data = bytearray(size)
    for offset in range(0, size, 65536):
        if rnd.random() < 0.5:
            data[offset : offset + 65536] = rnd.randbytes(min(65536, size - offset))
    return data


def mutate(rnd: random.Random, data: bytearray) -> None:
    for _ in range(rnd.randrange(1, 8)):
        offset = rnd.randrange(len(data))
        chunk = rnd.randbytes(min(rnd.choice([512, 4096, 70000]), len(data) - offset))
        data[offset : offset + len(chunk)] = chunk


@dataclass(frozen=True)
class Marks:
    """Set around the first of the worker's operations of one kind, so that the torture
    can aim a kill inside one (a prune takes a tenth of a second, a batch write a few
    hundredths: kills at random moments rarely land there) and tell whether it did."""

    started: Event
    ended: Event


@dataclass(frozen=True)
class WorkerMarks:
    prune: Marks
    batch: Marks
    """around the batch writes (`cloud_batch.write`) of the syncs of either node"""


@contextmanager
def environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` set in this process's environment, the old ones back after: a second
    node's cache is chosen by ``CAIRN_CACHE`` when it is opened."""
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def marking_batches(marks: Marks) -> None:
    """Wrap `cloud_batch.write` in this worker's process (the syncs call it there, at any
    depth) so that ``marks`` tell when one began and ended."""
    from cairn.store import cloud_batch

    write: Callable[..., str | None] = cloud_batch.write

    def marked(*args: object) -> str | None:
        marks.started.set()
        name = write(*args)
        marks.ended.set()
        return name

    cloud_batch.write = marked


class Worker:
    def __init__(self, repo: Repository, work: Path, seed: int, cloud_url: str | None,
                 marks: WorkerMarks | None = None) -> None:
        self.repo = repo
        self.work = work
        self.seed = seed
        self.rnd = random.Random(seed)
        self.images: dict[str, bytearray] = {}
        self.cloud_url = cloud_url
        self.marks = marks
        self.remote: Repository | None = None
        """the cloud repository, opened at the first cloud step and kept (as an appliance
        keeps it): a pass spends its time on the steps, not on opening"""
        self.other: Repository | None = None
        """the same cloud repository through another node's cache (`other_cache`)"""
        self.other_cache: Path | None = None
        self.step = 0

    def backup(self, volume: str) -> None:
        if volume not in self.images:
            self.images[volume] = new_image(self.rnd, self.rnd.choice([1, 2]) * MIB + 4096)
        else:
            mutate(self.rnd, self.images[volume])
        state = self.work / f"{volume}-{self.seed}-{self.step}.img"
        write_state(state, self.images[volume])
        with ImageSource(state) as source:
            Ingest(self.repo, volume, source).run(None)

    def delete(self) -> None:
        points = self.repo.catalog.points()
        if points:
            delete_points(self.repo, [self.rnd.choice(points)])

    def prune(self, volume: str) -> None:
        found = self.repo.catalog.volume(volume)
        if found is not None:
            points = self.repo.catalog.points(found.id)
            keep = select(points, Policy(last=self.rnd.randrange(1, 4)))
            delete_points(self.repo, [p for p in points if p.id not in keep])

    def clone(self) -> None:
        clones = list_clones(self.repo)
        if clones and self.rnd.random() < 0.5:
            victim = self.rnd.choice(clones)
            (self.work / f"clone-{victim.name}.sha256").unlink(missing_ok=True)
            remove_clone(self.repo, victim.name)
            return
        points = self.repo.catalog.points()
        if not points:
            return
        clone = create_clone(self.repo, self.rnd.choice(points), f"c{self.seed}-{self.step}")
        with CloneVolume(self.repo, clone) as volume:
            offset = self.rnd.randrange(volume.size)
            volume.pwrite(offset, self.rnd.randbytes(min(9000, volume.size - offset)))
            volume.flush()
            content = volume.pread(0, volume.size)
        write_state(self.work / f"clone-{clone.name}.sha256",
                    hashlib.sha256(content).hexdigest().encode())

    def cloud(self) -> None:
        """Replicate (and another node syncs), unpublish (one point, or what a retention
        of the last few drops), or prune the packs (`cloud_prune`: condemn, repack, delete
        what was condemned a grace period ago; the torture makes the grace short so that
        packs really go)."""
        from cairn.replication.replicate import replicate
        from cairn.store.cloud import open_cloud
        from cairn.store.cloud_prune import prune

        assert self.cloud_url is not None
        if self.remote is None:
            self.remote = open_cloud(self.cloud_url, None)
        roll = self.rnd.random()
        if roll < 0.45:
            replicate(self.repo, self.remote)
            self.sync_other()
        elif roll < 0.65:
            self.retire(self.remote)
        else:
            if self.marks is not None:
                self.marks.prune.started.set()
            prune(self.remote, wait=0.0)
            if self.marks is not None:
                self.marks.prune.ended.set()

    def sync_other(self) -> None:
        """Another appliance, with a cache of its own kept across passes, syncs: it reads
        the records this node published one by one and so writes a batch of them (the
        torture lowers `cloud_batch.batch_min` for the workers), which its next syncs and
        the torture's reader node read."""
        from cairn.store.cloud import open_cloud

        if self.other is not None:
            assert self.other.remote is not None
            self.other.remote.sync(self.other)
            return
        assert self.cloud_url is not None and self.other_cache is not None
        with environ({"CAIRN_CACHE": str(self.other_cache)}):  # read at the open only
            self.other = open_cloud(self.cloud_url, None)  # which syncs

    def close(self) -> None:
        for repo in (self.remote, self.other):
            if repo is not None:
                repo.close()

    def retire(self, cloud: Repository) -> None:
        points = cloud.catalog.points()
        if self.rnd.random() < 0.3 and points:
            delete_points(cloud, [self.rnd.choice(points)])
            return
        for volume in cloud.catalog.volumes():
            held = cloud.catalog.points(volume.id)
            keep = select(held, Policy(last=self.rnd.randrange(1, 4)))
            delete_points(cloud, [p for p in held if p.id not in keep])

    def one(self) -> None:
        """One random operation; refusals a user would also meet (a cloned point) pass.
        With a cloud repository, a share of the steps are cloud steps and the local ones keep
        their proportions; a cloud step needs no image of this pass, so a pass killed early
        reaches it too."""
        op = self.rnd.random()
        volume = self.rnd.choice(VOLUMES)
        try:
            if self.cloud_url is None:
                self.local(op, volume)
            elif op < CLOUD_SHARE:
                self.cloud()
            else:
                self.local((op - CLOUD_SHARE) / (1 - CLOUD_SHARE), volume)
        except InUse:
            pass
        self.step += 1

    def local(self, op: float, volume: str) -> None:
        if op < 0.45 or volume not in self.images:
            self.backup(volume)
        elif op < 0.6:
            self.delete()
        elif op < 0.72:
            self.prune(volume)
        elif op < 0.77:
            repack(self.repo, min_sparse=1)  # the newest points gathered, even if barely
        else:
            self.clone()


def main(argv: list[str], marks: WorkerMarks | None = None) -> int:
    """argv: the repository, the states folder, the seed, the steps (0: until killed),
    and with a cloud its URL and the other node's cache folder."""
    repo_path, work, seed, steps = argv[:4]
    cloud_url = argv[4] if len(argv) > 4 else None
    if marks is not None:
        marking_batches(marks.batch)
    with Repository.open(Path(repo_path)) as repo:
        worker = Worker(repo, Path(work), int(seed), cloud_url, marks)
        worker.other_cache = Path(argv[5]) if len(argv) > 5 else None
        try:
            while int(steps) == 0 or worker.step < int(steps):
                worker.one()
        except CairnError as exc:
            print(f"torture worker, seed {seed}, step {worker.step}: {exc}", file=sys.stderr)
            return 1
        finally:
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
