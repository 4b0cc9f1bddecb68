"""`cairn debug torture`: pull the power cord (ZFS ztest style) and prove nothing is lost.

Each pass starts `torture_worker` on one small repository with its own seed; in most passes
it is SIGKILLed at a random moment, in the others it finishes a few operations and must exit
cleanly. After every pass the repository is opened as the next writer would open it and
checked whole: ``verify --read-data`` (catalog integrity, reference counts against a recount,
every chunk present and hashing right), the chunk files are exactly those the catalog
counts once recovery ran (nothing lost, nothing leaked), every committed point restores bit
for bit to the state file it was taken from, and every clone reads what was flushed to it.
With a cloud repository the worker also replicates and prunes there, and the cloud copy is
checked the same way (orphans aside: an interrupted cloud delete leaves them for the next
exclusive writer to sweep). A failure names the run's seed and the pass's.
"""

from __future__ import annotations

import hashlib
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import CairnError
from cairn.restore.writer import restore_image
from cairn.store.chunks import chunk_name
from cairn.store.clones import CloneVolume, list_clones
from cairn.store.reader import PointReader
from cairn.store.repository import Repository
from cairn.store.verify import verify

KILL_SHARE = 0.7
CLEAN_STEPS = 12


class TortureFailed(CairnError):
    """A check after a pass found something lost, leaked or wrong."""


@dataclass(frozen=True)
class Settings:
    seconds: float
    seed: int
    work: Path
    cloud_url: str | None = None


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


def _restores(repo: Repository, scratch: Path, where: str) -> int:
    points = repo.catalog.points()
    for point in points:
        out = scratch / "restore.img"
        restore_image(PointReader(repo, point), out)
        if _sha(out) != _sha(Path(point.source)):
            raise TortureFailed(f"{where}: point {point.id} does not restore to {point.source}")
    return len(points)


def _no_leaks(repo: Repository, repo_path: Path, where: str) -> None:
    for volume in repo.catalog.volumes():
        with repo.volume_lock(volume):
            repo.recover(volume)
    repo.reclaim()
    on_disk = set(repo.chunks.backend.list("chunks"))
    counted = {chunk_name(h) for h in repo.catalog.chunk_refs()}
    if on_disk != counted:
        raise TortureFailed(f"{where}: {len(on_disk - counted)} chunk files leaked, "
                            f"{len(counted - on_disk)} missing")
    packs = {p.name for p in (repo_path / "packs").glob("*.pack")}
    with sqlite3.connect(repo_path / "packs.db") as index:
        indexed = {r[0] for r in index.execute("SELECT name FROM packs")}
    if not packs <= indexed:
        raise TortureFailed(f"{where}: packs left by a dead writer: {sorted(packs - indexed)}")


def _clones_hold(repo: Repository, states: Path, where: str) -> None:
    for clone in list_clones(repo):
        model = states / f"clone-{clone.name}.sha256"
        if not model.exists():
            continue  # killed before its flush was recorded: nothing was promised
        volume = CloneVolume(repo, clone)
        try:
            content = volume.pread(0, volume.size)
        finally:
            volume.close()
        if hashlib.sha256(content).hexdigest() != model.read_text():
            raise TortureFailed(f"{where}: clone {clone.name} lost what was flushed to it")


def _verified(repo: Repository, where: str) -> None:
    report = verify(repo, read_data=True)
    if not report.ok:
        raise TortureFailed(f"{where}: verify --read-data: {'; '.join(report.problems[:3])}")


def check_local(repo_path: Path, states: Path, scratch: Path, where: str) -> int:
    repo = Repository.open(repo_path)
    try:
        _verified(repo, where)
        _no_leaks(repo, repo_path, where)
        _clones_hold(repo, states, where)
        checked = _restores(repo, scratch, where)
        _verified(repo, where)
        return checked
    finally:
        repo.close()


def check_cloud(url: str, scratch: Path, where: str) -> int:
    from cairn.store.cloud import open_cloud

    cloud = open_cloud(url, None)
    try:
        _verified(cloud, where + " (cloud)")
        return _restores(cloud, scratch, where + " (cloud)")
    finally:
        cloud.close()


def _one_pass(settings: Settings, rnd: random.Random, outcome: Outcome) -> str:
    """Run one worker to its kill (or clean end); returns the pass's name for messages."""
    pass_seed = rnd.randrange(1 << 31)
    kill = rnd.random() < KILL_SHARE
    where = f"torture seed {settings.seed}, pass {outcome.passes} (worker seed {pass_seed})"
    command = [sys.executable, "-m", "cairn.debug.torture_worker",
               str(settings.work / "repo"), str(settings.work / "states"), str(pass_seed),
               "0" if kill else str(CLEAN_STEPS)]
    child = subprocess.Popen([*command, *([settings.cloud_url] if settings.cloud_url else [])],
                             stderr=subprocess.PIPE)
    try:
        if kill:
            time.sleep(rnd.uniform(0.05, 1.5))
            if child.poll() is None:
                child.send_signal(signal.SIGKILL)
                outcome.kills += 1
        child.wait(timeout=600)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    errors = child.stderr.read().decode() if child.stderr else ""
    if child.returncode not in (0, -signal.SIGKILL):
        raise TortureFailed(f"{where}: the worker failed: {errors.strip()[-300:]}")
    outcome.clean_passes += child.returncode == 0
    return where


def torture(settings: Settings) -> Outcome:
    for folder in ("states", "scratch"):
        (settings.work / folder).mkdir(parents=True, exist_ok=True)
    if not (settings.work / "repo" / "config.json").exists():
        Repository.init(settings.work / "repo").close()
    rnd = random.Random(settings.seed)
    outcome = Outcome()
    started = time.monotonic()
    while time.monotonic() - started < settings.seconds:
        where = _one_pass(settings, rnd, outcome)
        outcome.passes += 1
        scratch = settings.work / "scratch"
        outcome.points_checked += check_local(settings.work / "repo", settings.work / "states",
                                              scratch, where)
        if settings.cloud_url:
            outcome.cloud_points_checked += check_cloud(settings.cloud_url, scratch, where)
    outcome.seconds = time.monotonic() - started
    return outcome
