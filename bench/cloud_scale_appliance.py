"""The processes of the cloud scale benchmark (`cloud_scale_bench.py`), one role each.

- ``appliance``: a small appliance. It makes a few small volumes (`tests.store.helpers`:
  half random blocks, the rest zeros), and until its deadline backs each one up into its own
  local repository and replicates them all into the shared cloud repository, opening it
  afresh each round as a `cairn replicate` run would. Every point it backs up is recorded
  with the SHA-256 of its image, so the check can prove each published point restores it.
- ``prune``: the cloud's retention beside them: each pass keeps the last ``--keep`` points of
  every volume and deletes the rest, then collects garbage (`collect`). The ids it tried to
  delete are recorded: only those may be missing at the end.
- ``check``: one slice of the bucket's points: each verifies (reading its data) and restores
  to exactly the image its appliance backed up.
- ``synth``: publishes copies of one real point under new ids (all sharing its block map,
  so they cost the bucket one small record each): the many points the sync and prune
  timings need, made in seconds instead of days.

Each role writes what it measured as JSON to ``--out`` (appliances and the prune after every
round, so a killed process leaves what it had). Lock waits are the time this process spent
in `RemoteLock.acquire` (patched in: the code under test is not changed to be measured).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cairn.errors import CairnError  # noqa: E402
from cairn.ops.restore import restore  # noqa: E402
from cairn.replication.replicate import replicate  # noqa: E402
from cairn.store.cloud import open_cloud  # noqa: E402
from cairn.store.delete import delete_points  # noqa: E402
from cairn.store.repository import Repository  # noqa: E402
from cairn.store.retention import Policy, select  # noqa: E402
from cairn.store.verify import verify  # noqa: E402
from tests.store.helpers import backup, make_image, mutate  # noqa: E402

SYNTH_PREFIX = "synth-"


@dataclass
class LockMeter:
    """Seconds this process spent taking the cloud's writers' lock, one entry per take."""

    waits: list[float] = field(default_factory=list)
    refused: int = 0

    def install(self) -> LockMeter:
        """Time every `RemoteLock.acquire`; a code base without the lock records none."""
        try:
            from cairn.store.cloudlock import RemoteLock
        except ImportError:
            return self
        real = RemoteLock.acquire
        meter = self

        def acquire(lock: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.monotonic()
            try:
                return real(lock, *args, **kwargs)
            except CairnError:
                meter.refused += 1
                raise
            finally:
                meter.waits.append(time.monotonic() - start)

        RemoteLock.acquire = acquire  # type: ignore[method-assign]
        return self

    def json(self) -> dict[str, Any]:
        return {"takes": len(self.waits), "seconds": sum(self.waits),
                "max_s": max(self.waits, default=0.0),
                "over_1s": sum(w > 1.0 for w in self.waits), "refused": self.refused}


def save(path: Path, data: dict[str, Any]) -> None:
    """Write atomically: the parent may read it while this process still runs."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.rename(path)


def sha256(data: bytes | bytearray) -> str:
    return hashlib.sha256(data).hexdigest()


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    start = time.monotonic()
    return fn(), time.monotonic() - start


def replicate_round(url: str, local: Repository) -> dict[str, Any]:
    """One replication as `cairn replicate` runs it: open (sync), send, close."""
    start = time.monotonic()
    try:
        with open_cloud(url, None) as cloud:
            opened = time.monotonic()
            known = len(cloud.catalog.points())
            report = replicate(local, cloud)
    except CairnError as error:
        return {"error": str(error), "seconds": time.monotonic() - start,
                "where": traceback.format_exc(limit=-6)}
    return {"open_s": opened - start, "points_known": known,
            "replicate_s": time.monotonic() - opened, "points": report.points,
            "bytes_sent": report.bytes_sent, "chunks_sent": report.chunks_sent}


def appliance(args: argparse.Namespace) -> None:
    meter = LockMeter().install()
    work = Path(args.work)
    images = {}
    for n in range(args.volumes):
        path = work / f"disk{n}.img"
        images[f"a{args.index:03d}-disk{n}"] = (path, make_image(path, args.size,
                                                                 seed=args.index * 97 + n))
    expected: dict[str, str] = {}
    rounds: list[dict[str, Any]] = []
    time.sleep(args.delay)  # its place in the fleet's schedule
    with Repository.init(work / "repo") as local:
        while not rounds or time.time() < args.until:
            started = time.monotonic()
            for n, (volume, (path, data)) in enumerate(images.items()):
                ranges = mutate(path, data, seed=len(rounds) * 1000 + n) if rounds else None
                expected[backup(local, volume, path, ranges).id] = sha256(data)
            rounds.append(replicate_round(args.url, local))
            save(Path(args.out), {"expected": expected, "rounds": rounds,
                                  "locks": meter.json()})
            rest = args.interval - (time.monotonic() - started)  # the backup schedule
            if rest > 0 and time.time() + rest < args.until:
                time.sleep(rest)


def collect(cloud: Repository) -> dict[str, Any]:
    """Free what no point needs, with the cloud prune of the code under test: `cairn cloud
    prune`'s (packs; its report), or before it the exclusive lock and sweep of chunk
    objects."""
    if importlib.util.find_spec("cairn.ops.cloud_space") is None:
        remote = cloud.remote
        if not hasattr(remote, "sweep"):
            return {"how": "none"}  # the lock and sweep are gone, the packs' prune not here
        with remote.lock(cloud, exclusive=True):  # type: ignore[union-attr]
            remote.sweep(cloud)  # type: ignore[union-attr]
        return {"how": "sweep"}
    from cairn.ops.cloud_space import prune_cloud

    report = prune_cloud(cloud)
    return {"how": "cloud prune", **{k: len(v) if isinstance(v, list) else v
                                      for k, v in report.json().items()}}


def prune_pass(url: str, keep: int, tried: list[str]) -> dict[str, Any]:
    """Retention on every appliance volume (synthesized ones are left alone), then `collect`."""
    start = time.monotonic()
    try:
        with open_cloud(url, None) as cloud:
            opened = time.monotonic()
            points = cloud.catalog.points()
            doomed = []
            for volume in cloud.catalog.volumes():
                if volume.name.startswith(SYNTH_PREFIX):
                    continue
                mine = cloud.catalog.points(volume.id)
                kept = select(mine, Policy(last=keep))
                doomed += [p for p in mine if p.id not in kept]
            tried += [p.id for p in doomed]
            delete_points(cloud, doomed)
            deleted = time.monotonic()
            how = collect(cloud)
    except CairnError as error:
        return {"error": str(error), "seconds": time.monotonic() - start,
                "where": traceback.format_exc(limit=-6)}
    return {"open_s": opened - start, "points": len(points), "deleted": len(doomed),
            "delete_s": deleted - opened, "collect_s": time.monotonic() - deleted,
            "collect": how, "seconds": time.monotonic() - start}


def pruner(args: argparse.Namespace) -> None:
    meter = LockMeter().install()
    tried: list[str] = []
    passes: list[dict[str, Any]] = []
    while time.time() < args.until:
        passes.append(prune_pass(args.url, args.keep, tried))
        save(Path(args.out), {"passes": passes, "tried": tried, "locks": meter.json()})
        time.sleep(args.pause)


def check(args: argparse.Namespace) -> None:
    """Verify and restore slice ``k`` of ``n`` of the bucket's appliance points."""
    expected: dict[str, str] = json.loads(Path(args.expected).read_text())
    k, n = (int(x) for x in args.slice.split("/"))
    out = Path(args.work) / "restored.img"
    failures: list[str] = []
    checked: list[str] = []
    with open_cloud(args.url, None) as cloud:
        points = sorted((p for p in cloud.catalog.points()
                         if not p.volume.startswith(SYNTH_PREFIX)), key=lambda p: p.id)
        for point in points[k::n]:
            checked.append(point.id)
            report = verify(cloud, point, read_data=True)
            if not report.ok:
                failures.append(f"{point.id}: verify: {'; '.join(report.problems)[:300]}")
            restore(cloud, point.id, out)
            if sha256(out.read_bytes()) != expected.get(point.id):
                failures.append(f"{point.id} ({point.volume}): restored bytes differ")
            out.unlink()
    save(Path(args.out), {"checked": checked, "failures": failures})


def synth(args: argparse.Namespace) -> None:
    """Publish ``count`` copies of a real point into volume ``--volume``."""
    with open_cloud(args.url, None) as cloud:
        template = next(p for p in cloud.catalog.points()
                        if not p.volume.startswith(SYNTH_PREFIX))
        base = time.time() - 10 * 365 * 86400 + args.offset
        remote = cloud.remote
        assert remote is not None
        _, seconds = timed(lambda: [
            remote.publish(replace(template, id=os.urandom(len(template.id) // 2).hex(),
                                   volume=args.volume, created=base + i * 0.001))
            for i in range(args.count)])
    save(Path(args.out), {"published": args.count, "seconds": seconds})


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    roles = p.add_subparsers(dest="role", required=True)
    for name in ("appliance", "prune", "check", "synth"):
        role = roles.add_parser(name)
        role.add_argument("--url", required=True)
        role.add_argument("--out", required=True)
        role.add_argument("--work", default=".")
        role.add_argument("--until", type=float, default=0.0)
    roles.choices["appliance"].add_argument("--index", type=int, required=True)
    roles.choices["appliance"].add_argument("--volumes", type=int, default=3)
    roles.choices["appliance"].add_argument("--size", type=int, default=2 * 2**20)
    roles.choices["appliance"].add_argument("--interval", type=float, default=0.0)
    roles.choices["appliance"].add_argument("--delay", type=float, default=0.0)
    roles.choices["prune"].add_argument("--keep", type=int, default=3)
    roles.choices["prune"].add_argument("--pause", type=float, default=5.0)
    roles.choices["check"].add_argument("--expected", required=True)
    roles.choices["check"].add_argument("--slice", required=True)
    roles.choices["synth"].add_argument("--volume", required=True)
    roles.choices["synth"].add_argument("--count", type=int, required=True)
    roles.choices["synth"].add_argument("--offset", type=float, default=0.0)
    return p


ROLES: dict[str, Callable[[argparse.Namespace], None]] = {
    "appliance": appliance, "prune": pruner, "check": check, "synth": synth}


if __name__ == "__main__":
    arguments = parser().parse_args()
    ROLES[arguments.role](arguments)
