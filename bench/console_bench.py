"""Web console benchmark: big installations must stay fast (issue 17).

Targets: the dashboard of 100 machines and the page of a machine with 2,000 points render in
under 300 ms of server time; a folder of 10,000 files lists in under 1 s.

The repository is real: every point is a real backup (`Ingest`) of a small image, changed a
little each time, so the catalog holds what a busy appliance's would. The folder is a real
ext4 file system (`mkfs.ext4 -d`) with 10,000 files in one directory, backed up once. Pages
are fetched through the real app (login, session, templates) and timed by the server's own
``Server-Timing`` header; the wall time of the request is reported beside it. Each figure is
the median of ``--repeats`` fetches after a first one, which is reported too (``cold``: a
folder's listing is kept once read, since points never change). Results go to
``bench/work/console-<time>.json``.

Run: `.venv/bin/python bench/console_bench.py [--machines 100] [--points 2000] [--files 10000]`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402

from cairn.appliance.app import create_app  # noqa: E402
from cairn.appliance.config import ApplianceConfig  # noqa: E402
from cairn.appliance.state import State  # noqa: E402
from cairn.sources.image import ImageSource  # noqa: E402
from cairn.store.ingest import Ingest  # noqa: E402
from cairn.store.repository import Repository  # noqa: E402
from cairn.web.users import Users  # noqa: E402

PASSWORD = "benchmark password"
IMAGE = 256 * 1024


def backups(repo: Repository, volume: str, image: Path, count: int, rnd: random.Random) -> str:
    """``count`` points of ``volume``, each after a small change to ``image``; the last id."""
    point = ""
    for _ in range(count):
        with image.open("r+b") as f:
            f.seek(rnd.randrange(0, IMAGE - 4096))
            f.write(rnd.randbytes(4096))
        with ImageSource(image) as source:
            point = Ingest(repo, volume, source).run(None).id
    return point


def many_files(work: Path, count: int) -> Path:
    tree = work / "tree"
    folder = tree / "many"
    folder.mkdir(parents=True)
    for i in range(count):
        (folder / f"file{i:05d}.txt").write_bytes(b"x")
    image = work / "many.img"
    with image.open("wb") as f:
        f.truncate(64 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-N", str(count + 64), "-d", str(tree),
                    str(image)], check=True, capture_output=True)
    return image


def _server_ms(answer: Any) -> float:
    found = re.search(r"app;dur=([\d.]+)", answer.headers["server-timing"])
    assert found is not None
    return float(found.group(1))


def timed(client: TestClient, url: str, repeats: int) -> dict[str, float]:
    """The first fetch (``cold_server_ms``: nothing cached yet), then the median of more."""
    cold = _server_ms(client.get(url))
    server, wall = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        answer = client.get(url)
        wall.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code, answer.text[:300])
        server.append(_server_ms(answer))
    return {"cold_server_ms": round(cold, 1), "server_ms": round(statistics.median(server), 1),
            "wall_ms": round(statistics.median(wall), 1), "bytes": len(answer.content)}


def build(work: Path, args: argparse.Namespace) -> tuple[Path, str, str]:
    repo_path = work / "repo"
    Repository.init(repo_path).close()
    rnd = random.Random(17)
    image = work / "small.img"
    image.write_bytes(rnd.randbytes(IMAGE))
    state = State(repo_path / "appliance.db")
    repo = Repository.open(repo_path)
    started = time.perf_counter()
    try:
        for i in range(args.machines):
            state.add_machine(f"m{i:03d}")
            backups(repo, f"m{i:03d}.sda", image, args.points_each, rnd)
        state.add_machine("big")
        big = backups(repo, "big.sda", image, args.points, rnd)
        files_point = Ingest(repo, "big.data", ImageSource(many_files(work, args.files))
                             ).run(None).id
    finally:
        repo.close()
        Users(state).add("bench", "viewer", PASSWORD)
        state.close()
    print(f"built in {time.perf_counter() - started:.0f} s", flush=True)
    return repo_path, big, files_point


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--machines", type=int, default=100)
    parser.add_argument("--points-each", type=int, default=3)
    parser.add_argument("--points", type=int, default=2000)
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cairn-console-bench-"))
    try:
        repo_path, big, files_point = build(work, args)
        state = State(repo_path / "appliance.db")
        client = TestClient(create_app(repo_path, state, ApplianceConfig()),
                            base_url="https://testserver")
        page = client.get("/login")
        token = re.search(r'name="login_token" value="([^"]+)"', page.text)
        assert token is not None
        client.post("/login", data={"username": "bench", "password": PASSWORD,
                                    "login_token": token.group(1)})
        results = {
            "dashboard": timed(client, "/", args.repeats),
            "machine": timed(client, "/machines/big", args.repeats),
            "folder": timed(client, f"/points/{files_point}/files?path=/many", args.repeats),
        }
        assert big
        targets = {"dashboard": 300, "machine": 300, "folder": 1000}
        report = {"machines": args.machines + 1, "points_of_big": args.points,
                  "files": args.files, "load": os.getloadavg()[0], "results": results,
                  "targets_ms": targets,
                  "met": {k: results[k]["server_ms"] < v for k, v in targets.items()},
                  "met_cold": {k: results[k]["cold_server_ms"] < v for k, v in targets.items()}}
        print(json.dumps(report, indent=2))
        out = ROOT / "bench" / "work"
        out.mkdir(exist_ok=True)
        (out / f"console-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(
            json.dumps(report, indent=2))
        client.close()
        state.close()
        return 0 if all(report["met"].values()) else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
