"""`cairn debug torture`: pull the power cord (ZFS ztest style) and prove nothing is lost.

Each pass forks a `torture_worker` on one small repository with its own seed (from a fork
server that has imported everything already, so a pass costs the work and not an
interpreter's start); in most passes it is SIGKILLed at a random moment, in the others it
finishes a few operations and must exit cleanly. After every pass the repository is opened
as the next writer would open it and checked: ``verify`` (catalog integrity, reference
counts against a recount, every chunk present), the chunk files are exactly those the
catalog counts once recovery ran (nothing lost, nothing leaked), every committed point not
checked by an earlier pass restores bit for bit to the state file it was taken from (a
point is immutable, so one proven is not proven again), and every clone reads what was
flushed to it. Every ``FULL_EVERY`` passes, and after the last, the check is whole:
``verify --read-data`` hashes every chunk and every point is restored again.

With a cloud repository the worker also replicates there, unpublishes points, and runs the
pack prune (`cloud_prune`: condemn, repack, delete), each killed at random like the rest;
a share of the killed passes aim their kill inside the worker's first prune (which takes a
tenth of a second, so a kill at any moment rarely lands in one), and count those that did.
The grace period is cut to ``Settings.grace`` seconds and packs to ``CLOUD_PACK_BYTES``,
so that packs are condemned and really deleted within a run. The cloud copy is checked
the same way, and more: every chunk a published point needs must have a whole copy in a
pack object the bucket lists (the bytes a prune might have deleted, checked by listing, not
through the cache it keeps), and after a pass that freed packs every cloud point is restored
again. Dead bytes are not a failure there (a prune frees them a grace period later, or its
next run does when it was killed); the packs and bytes that went are counted.

Batches (`cloud_batch`): the worker also syncs another node, with a cache of its own kept
across passes, which reads the new records one by one and writes a batch of them (the
workers write one at nearly every such sync: ``CAIRN_CLOUD_BATCH_MIN``); another share of
the killed passes aim their kill inside a batch write. After every pass a *reader* node,
opened before the first pass so that it learns every point from the feed and the batches
in it (a fresh cache syncs in full and reads no batch), syncs and must hold exactly the
points the bucket lists, each once, and restore them; it may differ only where the feed
is silent (a writer killed between an object and its entry: rule 5 of `cloud`, a full
sync finds those), which is checked against the feed's own listing and counted. A failure
names the run's seed and the pass's.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import multiprocessing.context
import os
import random
import signal
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from cairn.debug.torture_worker import Marks, WorkerMarks, environ
from cairn.errors import CairnError
from cairn.restore.writer import restore_image
from cairn.store import cloud_sync
from cairn.store.backends.packs import PackBackend
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import ZERO, chunk_name
from cairn.store.clones import CloneVolume, list_clones
from cairn.store.cloud_counts import view
from cairn.store.cloud_prune import CLOCK, CONDEMNED, packs_of
from cairn.store.cloudlock import Bucket
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import verify

CLEAN_STEPS = 12
FULL_EVERY = 100
KILL_WITHIN = 0.5
CLOUD_KILL_WITHIN = 1.5
"""a kill lands this many seconds after the worker starts, at most (cloud steps are slower:
a replication, an unpublish or a prune takes a second, not a tenth)"""
AIM_AT_PRUNE = 0.25
"""the share of a cloud run's killed passes whose kill is aimed inside a prune"""
AIM_AT_BATCH = 0.2
"""the share whose kill is aimed inside a batch write"""
AIM_WAIT = 30.0
PRUNE_KILL_WITHIN = 0.3
BATCH_KILL_WITHIN = 0.015
"""a batch write is one small PUT (10 to 25 ms on a local SeaweedFS): a kill aimed at one
lands this soon after it began"""
READER_ENV = {"CAIRN_CLOUD_BATCH_MIN": str(1 << 30), "CAIRN_CLOUD_FEED_RESCAN_SECONDS": "0"}
"""the reader node writes no batch (those counted are the workers') and lists the feed's
whole window at every sync (the tail-only listing between windowed ones may take an entry
that landed late at a later sync: rule 5 allows it, the check would not)"""
CLOUD_PACK_BYTES = 256 * 1024
"""packs of a few chunks: a replication writes several, and a prune finds sparse ones"""


class TortureFailed(CairnError):
    """A check after a pass found something lost, leaked or wrong."""


@dataclass(frozen=True)
class Settings:
    seconds: float
    seed: int
    work: Path
    cloud_url: str | None = None
    kill_share: float = 0.7
    grace: float = 6.0
    """the cloud prune's grace period G (``CAIRN_CLOUD_LOCK_SECONDS``) for the workers:
    a pack is condemned G after it was written and deleted G after that"""


@dataclass
class Outcome:
    passes: int = 0
    kills: int = 0
    clean_passes: int = 0
    points_checked: int = 0
    cloud_points_checked: int = 0
    prune_passes: int = 0
    """passes in which a cloud prune started (as the bucket shows)"""
    prunes_killed_midway: int = 0
    """passes killed after a prune began and before it returned"""
    packs_condemned: int = 0
    """condemned notices seen by the checks (a clean pass may condemn and free unseen)"""
    packs_freed: int = 0
    pack_bytes_freed: int = 0
    batches_written: int = 0
    """batch objects the checks saw in the bucket's feed"""
    batches_killed_midway: int = 0
    """passes killed after a batch write began and before it returned"""
    reader_points_checked: int = 0
    """points the reader node (feed and batches only) restored bit for bit"""
    reader_unannounced: int = 0
    """points the reader and the bucket differed on at some check, each for want of a feed
    entry (a writer killed between an object and its entry)"""
    seconds: float = 0.0


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Check:
    """One check after a pass: where it is (for messages), whether it is whole, and the
    points proven by earlier passes (keyed by id and source: ids are never reused, sources
    never rewritten), which a partial check does not restore again."""

    where: str
    scratch: Path
    whole: bool
    proven: set[tuple[str, str]]


def _restores(repo: Repository, check: Check, points: list[RecoveryPoint] | None = None
              ) -> int:
    """Restore ``points`` (default: the catalog's) not proven yet, or all when whole."""
    todo = [p for p in (repo.catalog.points() if points is None else points)
            if check.whole or (p.id, p.source) not in check.proven]
    for point in todo:
        out = check.scratch / "restore.img"
        restore_image(PointReader(repo, point), out)
        if _sha(out) != _sha(Path(point.source)):
            raise TortureFailed(f"{check.where}: point {point.id} does not restore to "
                                f"{point.source}")
        check.proven.add((point.id, point.source))
    return len(todo)


def _no_leaks(repo: Repository, where: str) -> None:
    for volume in repo.catalog.volumes():
        with repo.volume_lock(volume):
            repo.recover(volume)
    repo.reclaim()
    on_disk = set(repo.chunks.backend.list("chunks"))
    counted = {chunk_name(h) for h in repo.catalog.chunk_refs()}
    if on_disk != counted:
        raise TortureFailed(f"{where}: {len(on_disk - counted)} chunk files leaked, "
                            f"{len(counted - on_disk)} missing")
    backend = repo.chunks.backend
    left = sorted(p.name for p in backend.unindexed()) if isinstance(backend, PackBackend) \
        else []
    if left:
        raise TortureFailed(f"{where}: packs left by a dead writer: {left}")


def _clones_hold(repo: Repository, states: Path, where: str) -> None:
    for clone in list_clones(repo):
        model = states / f"clone-{clone.name}.sha256"
        if not model.exists():
            continue  # killed before its flush was recorded: nothing was promised
        with CloneVolume(repo, clone) as volume:
            content = volume.pread(0, volume.size)
        if hashlib.sha256(content).hexdigest() != model.read_text():
            raise TortureFailed(f"{where}: clone {clone.name} lost what was flushed to it")


def _verified(repo: Repository, check: Check) -> None:
    report = verify(repo, read_data=check.whole)
    if not report.ok:
        raise TortureFailed(f"{check.where}: verify{' --read-data' * check.whole}: "
                            f"{'; '.join(report.problems[:3])}")


def check_local(repo_path: Path, states: Path, check: Check) -> int:
    with Repository.open(repo_path) as repo:
        _verified(repo, check)
        _no_leaks(repo, check.where)
        _clones_hold(repo, states, check.where)
        checked = _restores(repo, check)
        _verified(repo, check)
        return checked


@dataclass
class Space:
    """The bucket as the previous checks saw it, and what went since the run began."""

    packs: dict[str, int] = field(default_factory=dict)
    """every pack object listed at the last check -> its size"""
    notices: set[str] = field(default_factory=set)
    prune_clock: float | None = None
    prunes: int = 0
    freed: int = 0
    freed_bytes: int = 0
    batches: set[str] = field(default_factory=set)
    """every batch object a check listed"""
    unannounced: set[tuple[str, str]] = field(default_factory=set)
    """the points the reader node and the bucket differed on"""

    def fold(self, outcome: Outcome) -> None:
        outcome.prune_passes = self.prunes
        outcome.batches_written = len(self.batches)
        outcome.reader_unannounced = len(self.unannounced)
        outcome.packs_condemned = len(self.notices)
        outcome.packs_freed, outcome.pack_bytes_freed = self.freed, self.freed_bytes


def _listed(bucket: Bucket, prefix: str) -> dict[str, int]:
    return {name.rpartition("/")[2]: size for name, size in bucket.sizes(prefix)}


def _held_whole(cloud: Repository, listed: dict[str, int], where: str) -> None:
    """Every chunk a published point needs has a copy in a pack object the bucket lists,
    long enough to hold it: what a prune deletes is judged by the bucket, not by the cache
    (which a prune killed between its deletes and `forget_pack` leaves behind)."""
    packs = packs_of(cloud)
    packs.refresh(full=True)
    with view(cloud):  # every volume counted, those this cache does not write too
        needed = {d for d, refs in cloud.catalog.chunk_refs().items()
                  if refs > 0 and d != ZERO}
    for pack in packs.pack_ids():
        info = packs.pack_info(pack)
        if info is not None and pack in listed:
            needed.difference_update(d for d, o, n in info.chunks if o + n <= listed[pack])
    if needed:
        raise TortureFailed(f"{where}: {len(needed)} chunk(s) that published points need "
                            f"are in no whole pack the bucket lists (chunk {min(needed).hex()})")


def _space(bucket: Bucket, listed: dict[str, int], space: Space) -> bool:
    """Count the packs the pass freed (``listed`` are those there now) and condemned, and
    whether a prune ran in it (each writes `cloud_prune.CLOCK` first); True if any went."""
    freed = space.packs.keys() - listed.keys()
    space.freed += len(freed)
    space.freed_bytes += sum(space.packs[p] for p in freed)
    space.packs = listed
    space.notices |= _listed(bucket, CONDEMNED).keys()
    try:
        clock: float | None = bucket.stamp(CLOCK)
    except KeyError:
        clock = None
    if clock != space.prune_clock:
        space.prune_clock = clock
        space.prunes += 1
    return bool(freed)


def check_cloud(url: str, check: Check, space: Space) -> int:
    """The cloud copy after a pass; every point is restored again when packs were freed."""
    from cairn.store.cloud import Cloud, open_cloud

    with open_cloud(url, None) as cloud:
        _verified(cloud, check)
        assert isinstance(cloud.remote, Cloud)
        listed = _listed(cloud.remote.backend, "packs")
        _held_whole(cloud, listed, check.where)
        freed = _space(cloud.remote.backend, listed, space)
        return _restores(cloud, replace(check, whole=check.whole or freed))


def _records(names: Iterable[str]) -> set[tuple[str, str]]:
    """(volume, point id) of the point records among object names."""
    found = set()
    for name in names:
        parts = name.split("/")
        if len(parts) == 3 and parts[0] == "points" and parts[2].endswith(".json"):
            found.add((parts[1], parts[2].removesuffix(".json")))
    return found


def _unannounced(bucket: Bucket, held: set[tuple[str, str]], where: str,
                 space: Space) -> None:
    """The points the reader and the bucket differ on must each lack the feed entry that
    would have told the reader (the record's, or its tombstone's); they are noted."""
    listed = _records(bucket.list("points"))
    feed = list(bucket.list(cloud_sync.FEED))
    space.batches.update(n for n in feed if cloud_sync.parse_batch(n) is not None)
    targets = {e.target for e in map(cloud_sync.parse, feed) if e is not None and e.op == "put"}
    lost = {p for p in listed - held if f"points/{p[0]}/{p[1]}.json" in targets}
    removed = {t.rpartition("_")[0].rpartition("_")[0] for t in targets
               if t.startswith("removed/")}
    stale = {p for p in held - listed if f"removed/{p[0]}/{p[1]}" in removed}
    if lost or stale:
        raise TortureFailed(f"{where}: a node syncing from the feed and its batches lacks "
                            f"{len(lost)} announced point(s) {sorted(lost)[:3]} and still "
                            f"holds {len(stale)} announced as removed {sorted(stale)[:3]}")
    space.unannounced |= listed ^ held


def check_reader(url: str, cache: Path, check: Check, space: Space) -> int:
    """The reader node syncs (its feed's window, reading the batches listed there) and
    must hold each point the bucket lists once, and restore it; returns the points
    restored."""
    from cairn.store.cloud import Cloud, open_cloud

    with environ({"CAIRN_CACHE": str(cache), **READER_ENV}), open_cloud(url, None) as reader:
        assert isinstance(reader.remote, Cloud)
        points = reader.catalog.points()
        held = {(p.volume, p.id) for p in points}
        if len(held) != len(points):
            raise TortureFailed(f"{check.where}: the reader node holds a point twice")
        _unannounced(reader.remote.backend, held, check.where, space)
        listed = _records(reader.remote.backend.list("points"))
        return _restores(reader, check, [p for p in points if (p.volume, p.id) in listed])


def _work(argv: list[str], errors: Path, env: dict[str, str], marks: WorkerMarks) -> None:
    """A worker's body, in a process the fork server made, with ``env`` set; its stderr
    goes to ``errors``."""
    from cairn.debug import torture_worker

    os.environ.update(env)
    fd = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    sys.exit(torture_worker.main(argv, marks))


def _forks() -> multiprocessing.context.ForkServerContext:
    """Workers are forked by a server that imported everything before any thread ran (the
    S3 client's runtime cannot survive a fork of this process once a cloud check used it):
    a pass costs its work, not an interpreter's start."""
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(["cairn.debug.torture", "cairn.debug.torture_worker"])
    return forks


def worker_env(settings: Settings) -> dict[str, str]:
    """What the workers run with: a short grace and small packs, so a prune's two steps
    both happen within a run."""
    return {"CAIRN_CLOUD_LOCK_SECONDS": str(settings.grace),
            "CAIRN_CLOUD_PACK_BYTES": str(CLOUD_PACK_BYTES),
            "CAIRN_CLOUD_BATCH_MIN": "1", "CAIRN_CLOUD_BATCH_EVERY": "0",
            "CAIRN_CLOUD_BATCH_JITTER": "0"} \
        if settings.cloud_url else {}


def _one_pass(settings: Settings, rnd: random.Random, outcome: Outcome,
              forks: multiprocessing.context.ForkServerContext) -> str:
    """Run one worker to its kill (or clean end); returns the pass's name for messages."""
    pass_seed = rnd.randrange(1 << 31)
    kill = rnd.random() < settings.kill_share
    where = f"torture seed {settings.seed}, pass {outcome.passes} (worker seed {pass_seed})"
    argv = [str(settings.work / "repo"), str(settings.work / "states"), str(pass_seed),
            "0" if kill else str(CLEAN_STEPS),
            *([settings.cloud_url, str(settings.work / "node-b")] if settings.cloud_url
              else [])]
    errors = settings.work / "scratch" / "worker.err"
    marks = WorkerMarks(*(Marks(forks.Event(), forks.Event()) for _ in range(2)))
    child = forks.Process(target=_work, args=(argv, errors, worker_env(settings), marks))
    child.start()
    try:
        killed = kill and _kill(settings, rnd, child, marks)
        child.join(timeout=600)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    if child.exitcode not in (0, -signal.SIGKILL):
        raise TortureFailed(f"{where}: the worker failed: "
                            f"{errors.read_text(errors='replace').strip()[-300:]}")
    outcome.kills += killed
    outcome.prunes_killed_midway += killed and _inside(marks.prune)
    outcome.batches_killed_midway += killed and _inside(marks.batch)
    outcome.clean_passes += child.exitcode == 0
    return where


def _inside(marks: Marks) -> bool:
    return marks.started.is_set() and not marks.ended.is_set()


def _aim(settings: Settings, rnd: random.Random, marks: WorkerMarks
         ) -> tuple[Marks, float] | None:
    """What a cloud pass's kill is aimed inside, and how soon after it began it lands."""
    if not settings.cloud_url:
        return None
    roll = rnd.random()
    if roll < AIM_AT_PRUNE:
        return marks.prune, PRUNE_KILL_WITHIN
    if roll < AIM_AT_PRUNE + AIM_AT_BATCH:
        return marks.batch, BATCH_KILL_WITHIN
    return None


def _kill(settings: Settings, rnd: random.Random, child: multiprocessing.process.BaseProcess,
          marks: WorkerMarks) -> bool:
    """SIGKILL the worker at a random moment after its start or, in a share of the cloud
    passes, at a random moment after its first cloud prune or batch write began; whether
    it was alive."""
    aim = _aim(settings, rnd, marks)
    if aim is not None:
        target, within = aim
        deadline = time.monotonic() + AIM_WAIT
        while child.is_alive() and time.monotonic() < deadline \
                and not target.started.wait(0.05):
            pass
        time.sleep(rnd.uniform(0.0, within))
    else:
        time.sleep(rnd.uniform(0.02, CLOUD_KILL_WITHIN if settings.cloud_url
                               else KILL_WITHIN))
    if not child.is_alive():
        return False
    child.kill()
    return True


def _check_clouds(settings: Settings, check: Check, proven: dict[str, set[tuple[str, str]]],
                  outcome: Outcome, space: Space) -> None:
    """The cloud copy through the workers' cache, then through the reader node's."""
    assert settings.cloud_url is not None
    outcome.cloud_points_checked += check_cloud(
        settings.cloud_url, replace(check, where=check.where + " (cloud)",
                                    proven=proven["cloud"]), space)
    outcome.reader_points_checked += check_reader(  # once each: the data is the same
        settings.cloud_url, settings.work / "reader",
        replace(check, where=check.where + " (reader node)", whole=False,
                proven=proven["reader"]), space)


def torture(settings: Settings) -> Outcome:
    for folder in ("states", "scratch"):
        (settings.work / folder).mkdir(parents=True, exist_ok=True)
    if not (settings.work / "repo" / "config.json").exists():
        Repository.init(settings.work / "repo").close()
    rnd = random.Random(settings.seed)
    forks = _forks()
    outcome = Outcome()
    proven: dict[str, set[tuple[str, str]]] = {"local": set(), "cloud": set(),
                                               "reader": set()}
    space = Space()
    if settings.cloud_url:  # the reader node learns every later point from the feed
        check_reader(settings.cloud_url, settings.work / "reader",
                     Check("before the first pass", settings.work / "scratch", False, set()),
                     space)
    started = time.monotonic()
    done = False
    while not done:
        where = _one_pass(settings, rnd, outcome, forks)
        outcome.passes += 1
        done = time.monotonic() - started >= settings.seconds
        whole = done or outcome.passes % FULL_EVERY == 0
        scratch = settings.work / "scratch"
        outcome.points_checked += check_local(
            settings.work / "repo", settings.work / "states",
            Check(where, scratch, whole, proven["local"]))
        if settings.cloud_url:
            _check_clouds(settings, Check(where, scratch, whole, set()), proven, outcome,
                          space)
    space.fold(outcome)
    outcome.seconds = time.monotonic() - started
    return outcome
