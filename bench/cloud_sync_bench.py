"""Cloud sync benchmark: how a cache's sync grows with the points a repository holds.

Why: issue 20 asks that a sync with nothing new take well under 1 s at 10,000 points (many
appliances share one repository, and every command syncs first). One small point is
replicated to SeaweedFS (`tests/s3server`, on loopback), then copied under new ids into
``--points`` records (`tests.store.cloud_points.plant_points`: each a real point), each
announced in the feed. A second node's first sync (full: every prefix listed, every record
read) is timed, then its syncs with nothing new, with a few new points, with a tenth of the
points announced within the last `cloud_feed.WINDOW` (a busy quarter hour: a sync lists
only after the newest entry it took, the window once every `cloud_sync.rescan_every`),
and a full sync again, side by side in one run, with the requests each
made. The busy quarter hour is also synced by a twin of that cache (a copy of its folder:
another appliance as up to date) after the first one, which read every new record one by
one and wrote a batch (`cloud_batch`): the twin reads the batch instead. The records are
announced as written half an hour before the run (a repository's history), so the first
figure is the steady state of a sync with nothing new.

Run: `python bench/cloud_sync_bench.py [--points 10000]`. Results go to
`bench/work/cloud-sync-<time>.json`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from images import save_result  # noqa: E402

from cairn.replication.replicate import replicate  # noqa: E402
from cairn.store import cloud_batch, cloud_feed  # noqa: E402
from cairn.store.cloud import Cloud, init_cloud, open_cloud  # noqa: E402
from cairn.store.repository import Repository  # noqa: E402
from tests.s3server import SeaweedS3  # noqa: E402
from tests.store.cloud_points import Requests, plant_points  # noqa: E402
from tests.store.helpers import backup, make_image  # noqa: E402

TARGET = 1.0


def timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return round(time.perf_counter() - started, 4)


def _sync(repo: Repository) -> Callable[[], object]:
    assert isinstance(repo.remote, Cloud)
    remote = repo.remote
    return lambda: remote.sync(repo)


def _twin(folder: Path, url: str, b: Repository) -> tuple[Repository, Repository]:
    """``b`` reopened, and another node whose cache is a copy of its folder."""
    b.close()
    shutil.copytree(folder / "cache-b", folder / "cache-c")
    os.environ["CAIRN_CACHE"] = str(folder / "cache-c")
    c = open_cloud(url, None)
    os.environ["CAIRN_CACHE"] = str(folder / "cache-b")
    return open_cloud(url, None), c


def measure(folder: Path, server: SeaweedS3, count: int, repeats: int) -> dict[str, Any]:
    for name, value in (("CAIRN_S3_ENDPOINT", server.endpoint),
                        ("CAIRN_S3_ACCESS_KEY", server.access_key),
                        ("CAIRN_S3_SECRET_KEY", server.secret_key),
                        ("CAIRN_KEYS", str(folder / "keys")),
                        ("CAIRN_CACHE", str(folder / "cache-a"))):
        os.environ[name] = value
    cloud_batch.BATCH_EVERY = 0.0  # the batch of 10 new points must not hold back the burst's
    cloud_batch.JITTER = 0.0  # a lone node: no other writer to wait for
    image = folder / "disk.img"
    make_image(image, 1024 * 1024, seed=1, fill=0.5)
    url = f"s3://{server.bucket}/sync-bench"
    with Repository.init(folder / "local") as local:
        point = backup(local, "web01-sda", image)
        with init_cloud(url, None) as a:
            replicate(local, a)
            template = a.catalog.point(point.id)
            assert template is not None
            history = time.time() - 2 * cloud_feed.WINDOW  # written before this session
            plant_s = timed(lambda: plant_points(a, template, count, announced_at=history))
            os.environ["CAIRN_CACHE"] = str(folder / "cache-b")
            started = time.perf_counter()
            b = open_cloud(url, None)
            first_s = round(time.perf_counter() - started, 2)
            assert len(b.catalog.points()) == count + 1
            _sync(b)()
            requests = Requests(b)
            idle = [timed(_sync(b)) for _ in range(repeats)]
            idle_requests = requests.take()
            plant_points(a, template, 10)
            requests.take()
            ten_s = timed(_sync(b))
            ten_requests = requests.take()
            b, c = _twin(folder, url, b)
            requests, twin = Requests(b), Requests(c)
            burst = plant_points(a, template, count // 10)  # all still inside the window
            burst_s = timed(_sync(b))
            burst_one = requests.take()
            burst_twin_s = timed(_sync(c))
            burst_batch = twin.take()
            c.close()
            burst_idle = [timed(_sync(b)) for _ in range(5)]
            burst_requests = requests.take()
            os.environ["CAIRN_CLOUD_FULL_SYNC_SECONDS"] = "0"
            full_s = timed(_sync(b))
            full_requests = requests.take()
            del os.environ["CAIRN_CLOUD_FULL_SYNC_SECONDS"]
            b.close()
    idle_s = statistics.median(idle)
    return {"points": count, "plant_s": plant_s, "first_sync_s": first_s,
            "idle_sync_s": {"median": idle_s, "max": max(idle), "runs": idle},
            "idle_requests": idle_requests, "ten_new_sync_s": ten_s,
            "ten_new_requests": ten_requests,
            "idle_with_recent_entries": {"recent": len(burst), "median_s": statistics.median(
                burst_idle), "requests": burst_requests},
            "burst_sync": {"one_by_one_s": burst_s, "one_by_one_requests": burst_one,
                           "from_batch_s": burst_twin_s, "from_batch_requests": burst_batch},
            "full_sync_s": full_s,
            "full_requests": full_requests, "full_over_idle": round(full_s / idle_s, 1),
            "target_idle_s": TARGET, "load": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cairn-sync-bench-") as tmp, \
            SeaweedS3.start() as server:
        result = measure(Path(tmp), server, args.points, args.repeats)
    print(f"saved to {save_result('cloud-sync', result)}")


if __name__ == "__main__":
    main()
