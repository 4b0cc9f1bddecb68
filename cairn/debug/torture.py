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
With a cloud repository the worker also replicates and prunes there, and the cloud copy is
checked the same way (orphans aside: an interrupted cloud delete leaves them for the next
exclusive writer to sweep). A failure names the run's seed and the pass's.
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
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import CairnError
from cairn.restore.writer import restore_image
from cairn.store.backends.packs import PackBackend
from cairn.store.chunks import chunk_name
from cairn.store.clones import CloneVolume, list_clones
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import verify

CLEAN_STEPS = 12
FULL_EVERY = 100


class TortureFailed(CairnError):
    """A check after a pass found something lost, leaked or wrong."""


@dataclass(frozen=True)
class Settings:
    seconds: float
    seed: int
    work: Path
    cloud_url: str | None = None
    kill_share: float = 0.7


@dataclass
class Outcome:
    passes: int = 0
    kills: int = 0
    clean_passes: int = 0
    points_checked: int = 0
    cloud_points_checked: int = 0
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


def _restores(repo: Repository, check: Check) -> int:
    todo = [p for p in repo.catalog.points()
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


def check_cloud(url: str, check: Check) -> int:
    from cairn.store.cloud import open_cloud

    with open_cloud(url, None) as cloud:
        _verified(cloud, check)
        return _restores(cloud, check)


def _work(argv: list[str], errors: Path) -> None:
    """A worker's body, in a process the fork server made; its stderr goes to ``errors``."""
    from cairn.debug import torture_worker

    fd = os.open(errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(fd, 2)
    sys.exit(torture_worker.main(argv))


def _forks() -> multiprocessing.context.ForkServerContext:
    """Workers are forked by a server that imported everything before any thread ran (the
    S3 client's runtime cannot survive a fork of this process once a cloud check used it):
    a pass costs its work, not an interpreter's start."""
    forks = multiprocessing.get_context("forkserver")
    forks.set_forkserver_preload(["cairn.debug.torture", "cairn.debug.torture_worker"])
    return forks


def _one_pass(settings: Settings, rnd: random.Random, outcome: Outcome,
              forks: multiprocessing.context.ForkServerContext) -> str:
    """Run one worker to its kill (or clean end); returns the pass's name for messages."""
    pass_seed = rnd.randrange(1 << 31)
    kill = rnd.random() < settings.kill_share
    where = f"torture seed {settings.seed}, pass {outcome.passes} (worker seed {pass_seed})"
    argv = [str(settings.work / "repo"), str(settings.work / "states"), str(pass_seed),
            "0" if kill else str(CLEAN_STEPS), *([settings.cloud_url] if settings.cloud_url
                                                   else [])]
    errors = settings.work / "scratch" / "worker.err"
    child = forks.Process(target=_work, args=(argv, errors))
    child.start()
    try:
        if kill:
            time.sleep(rnd.uniform(0.02, 0.5))
            if child.is_alive():
                child.kill()
                outcome.kills += 1
        child.join(timeout=600)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
    if child.exitcode not in (0, -signal.SIGKILL):
        raise TortureFailed(f"{where}: the worker failed: "
                            f"{errors.read_text(errors='replace').strip()[-300:]}")
    outcome.clean_passes += child.exitcode == 0
    return where


def torture(settings: Settings) -> Outcome:
    for folder in ("states", "scratch"):
        (settings.work / folder).mkdir(parents=True, exist_ok=True)
    if not (settings.work / "repo" / "config.json").exists():
        Repository.init(settings.work / "repo").close()
    rnd = random.Random(settings.seed)
    forks = _forks()
    outcome = Outcome()
    proven: dict[str, set[tuple[str, str]]] = {"local": set(), "cloud": set()}
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
            outcome.cloud_points_checked += check_cloud(
                settings.cloud_url, Check(where + " (cloud)", scratch, whole, proven["cloud"]))
    outcome.seconds = time.monotonic() - started
    return outcome
