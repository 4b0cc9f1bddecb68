"""Offsite replication to a real SeaweedFS S3 server, as a user runs it."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from cairn.store.repository import Repository
from tests.appliance.harness import wait_for
from tests.cli.test_cli import ROOT, one_line_error
from tests.cli.test_export import free_port
from tests.s3server import SeaweedS3
from tests.store.helpers import flip_bit, make_image, mutate


class Cli:
    """`cairn` with the test server's endpoint, credentials and a private cache folder; the
    integrity keys `cairn init` makes go beside the cache, shared by the test's nodes."""

    def __init__(self, server: SeaweedS3, cache: Path) -> None:
        self.env = {**os.environ, "CAIRN_S3_ENDPOINT": server.endpoint,
                    "CAIRN_S3_ACCESS_KEY": server.access_key,
                    "CAIRN_S3_SECRET_KEY": server.secret_key, "CAIRN_CACHE": str(cache),
                    "CAIRN_KEYS": str(cache.parent / "keys")}

    def run(self, *args: str | Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "cairn", *map(str, args)],
                              capture_output=True, text=True, cwd=ROOT, env=self.env,
                              timeout=300)

    def ok(self, *args: str | Path) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def json(self, *args: str | Path) -> object:
        return json.loads(self.ok(*args, "--json"))


def local_repo_with_points(cli: Cli, tmp_path: Path, count: int,
                           encrypt: bool = True) -> tuple[Path, Path, list[tuple[str, bytes]]]:
    repo = tmp_path / "local"
    cli.ok("init", "--repo", repo, *(["--encrypt"] if encrypt else []))
    img = tmp_path / "disk.img"
    data = make_image(img, 3 * 1024 * 1024, seed=11, fill=0.6)
    points = []
    for k in range(count):
        point = cli.json("backup", "--repo", repo, "--volume", "web01-sda", img)["point"]
        points.append((point, bytes(data)))
        mutate(img, data, seed=50 + k, writes=4)
    return repo, img, points


def test_replicate_sends_only_missing_chunks_and_points_are_whole(
        cli: Cli, cloud_url: str, tmp_path: Path, s3_server: SeaweedS3) -> None:
    local, img, points = local_repo_with_points(cli, tmp_path, 3)
    key = local / "key"
    cli.ok("init", "--repo", cloud_url, "--key-file", key)
    first = cli.json("replicate", "--repo", local, "--to", cloud_url)
    assert len(first["points"]) == 3
    stored = cli.json("stats", "--repo", local)["stored_bytes"]
    assert first["bytes_sent"] <= stored * 1.01
    again = cli.json("replicate", "--repo", local, "--to", cloud_url)
    assert again["points"] == [] and again["bytes_sent"] == 0

    listed = [p["id"] for p in cli.json("points", "--repo", cloud_url, "--key-file", key)]
    assert listed == [p for p, _ in points]
    for point, want in points:
        out = tmp_path / f"{point}.img"
        cli.ok("restore", "--repo", cloud_url, "--key-file", key, point, out)
        assert out.read_bytes() == want

    # A new local point costs the cloud about what it stored locally.
    data = bytearray(img.read_bytes())
    mutate(img, data, seed=99, writes=2)
    new = cli.json("backup", "--repo", local, "--volume", "web01-sda", img)
    sent = cli.json("replicate", "--repo", local, "--to", cloud_url)
    assert sent["points"] == [new["point"]]
    assert sent["bytes_sent"] <= new["bytes_stored"] * 1.05 + 4096

    # Local and cloud retention are independent.
    cli.ok("delete", "--repo", local, points[0][0])
    assert points[0][0] in [p["id"] for p in cli.json("points", "--repo", cloud_url,
                                                      "--key-file", key)]
    cli.ok("prune", "--repo", cloud_url, "--key-file", key, "--volume", "web01-sda",
           "--keep-last", "1")
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url, "--key-file", key)] == [
        new["point"]]
    assert len(cli.json("points", "--repo", local)) == 3
    # What the cloud's retention removed is never sent again, whichever cache replicates.
    for node in (cli, Cli(s3_server, tmp_path / "second-appliance-cache")):
        again = node.json("replicate", "--repo", local, "--to", cloud_url)
        assert again["points"] == [] and again["bytes_sent"] == 0
        assert again["not_sent_removed"] == 2
    assert "no problems found" in cli.ok("verify", "--repo", cloud_url, "--key-file", key,
                                         "--read-data")
    assert "no problems found" in cli.ok("verify", "--repo", local, "--read-data")


def test_cloud_cache_is_rebuilt_from_the_bucket(cli: Cli, cloud_url: str, tmp_path: Path,
                                                s3_server: SeaweedS3) -> None:
    local, _img, points = local_repo_with_points(cli, tmp_path, 2, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)
    other_node = Cli(s3_server, tmp_path / "another-cache")
    assert [p["id"] for p in other_node.json("points", "--repo", cloud_url)] == [
        p for p, _ in points]
    other_node.ok("delete", "--repo", cloud_url, points[0][0])
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url)] == [points[1][0]]
    assert "no problems found" in cli.ok("verify", "--repo", cloud_url, "--read-data")
    out = tmp_path / "out.img"
    cli.ok("restore", "--repo", cloud_url, points[1][0], out)
    assert out.read_bytes() == points[1][1]


def _sending_or_done(proc: subprocess.Popen[bytes]) -> bool:
    """Whether the process has written 256 KiB (sockets included: ``wchar`` of /proc/PID/io)."""
    if proc.poll() is not None:
        return True
    try:
        lines = Path(f"/proc/{proc.pid}/io").read_text().splitlines()
    except OSError:  # it has just ended
        return True
    return next(int(line.split()[1]) for line in lines if line.startswith("wchar:")) > 256 << 10


def test_interrupted_replication_resumes_without_resending(cli: Cli, cloud_url: str,
                                                          tmp_path: Path) -> None:
    local, _img, points = local_repo_with_points(cli, tmp_path, 3, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    total = cli.json("stats", "--repo", local)["stored_bytes"]
    cli.env["CAIRN_CLOUD_PACK_BYTES"] = str(128 << 10)  # packs land while the run sends
    rnd = random.Random(20261125)
    for _ in range(3):  # SIGKILL at seeded random moments, each run resuming the last
        proc = subprocess.Popen([sys.executable, "-m", "cairn", "replicate", "--repo",
                                 str(local), "--to", cloud_url, "--bandwidth", "300K"],
                                cwd=ROOT, env=cli.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        # The random moment counts from the first chunks on the wire, not from the start:
        # a loaded machine can spend seconds importing before it sends anything.
        assert wait_for(lambda running=proc: _sending_or_done(running), timeout=120)
        time.sleep(rnd.uniform(0.5, 1.5))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        published = cli.json("points", "--repo", cloud_url)
        assert all(p["id"] in {q for q, _ in points} for p in published)
    resumed = cli.json("replicate", "--repo", local, "--to", cloud_url)
    assert 0 < resumed["bytes_sent"] < total * 0.9
    assert [p["id"] for p in cli.json("points", "--repo", cloud_url)] == [p for p, _ in points]
    assert "no problems found" in cli.ok("verify", "--repo", cloud_url, "--read-data")


def test_cloud_errors_are_clear(cli: Cli, s3_server: SeaweedS3, tmp_path: Path) -> None:
    one_line_error(cli.run("points", "--repo", f"s3://{s3_server.bucket}/nothing-here"), 2,
                   "not a cairn repository")
    one_line_error(cli.run("points", "--repo", "s3://no-such-bucket-x/p"), 1, "no-such-bucket")
    bad = Cli(s3_server, tmp_path / "c")
    bad.env["CAIRN_S3_SECRET_KEY"] = "wrong"
    one_line_error(bad.run("points", "--repo", f"s3://{s3_server.bucket}/p"), 1)
    one_line_error(cli.run("points", "--repo", f"s3://{s3_server.bucket}/p", "--endpoint",
                           "http://127.0.0.1:9"), 1, "127.0.0.1:9")


def test_a_damaged_local_chunk_is_never_sent(cli: Cli, cloud_url: str, tmp_path: Path) -> None:
    local, img, _points = local_repo_with_points(cli, tmp_path, 1, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    repo = Repository.open(local)
    try:
        data = img.read_bytes()
        blocks = (data[at:at + repo.block_size] for at in range(0, len(data), repo.block_size))
        damaged = repo.chunks.hash(next(b for b in blocks if any(b)))
        flip_bit(repo, damaged)
    finally:
        repo.close()
    one_line_error(cli.run("replicate", "--repo", local, "--to", cloud_url), 1,
                   damaged.hex(), "does not match its hash")
    assert cli.json("points", "--repo", cloud_url) == []


def test_two_appliances_and_a_prune_at_once_stay_consistent(cli: Cli, cloud_url: str,
                                                            tmp_path: Path) -> None:
    sites = []
    for name in ("site-a", "site-b"):
        folder = tmp_path / name
        folder.mkdir()
        sites.append(local_repo_with_points(cli, folder, 3, encrypt=False))
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", sites[0][0], "--to", cloud_url)
    runs = [subprocess.Popen([sys.executable, "-m", "cairn", "replicate", "--repo", str(repo),
                              "--to", cloud_url, "--bandwidth", "1M"], cwd=ROOT, env=cli.env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for repo, _img, _points in sites]
    time.sleep(1.0)
    prune = cli.run("prune", "--repo", cloud_url, "--volume", "web01-sda", "--keep-last", "2")
    outcomes = [proc.communicate(timeout=240) for proc in runs]
    assert all(proc.returncode == 0 for proc in runs), outcomes
    assert prune.returncode == 0 or "locked" in prune.stderr, prune.stderr
    assert "no problems found" in cli.ok("verify", "--repo", cloud_url, "--read-data")
    for point in cli.json("points", "--repo", cloud_url):
        out = tmp_path / "check.img"
        cli.ok("restore", "--repo", cloud_url, point["id"], out, "--force")
        originals = {p: data for _repo, _img, pts in sites for p, data in pts}
        assert out.read_bytes() == originals[point["id"]]


def test_clone_and_export_from_the_cloud(cli: Cli, cloud_url: str, tmp_path: Path) -> None:
    local, _img, points = local_repo_with_points(cli, tmp_path, 1, encrypt=False)
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)
    point, data = points[0]
    cli.ok("clone", "--repo", cloud_url, point, "--name", "drill")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", cloud_url,
                             "drill", "--nbd", f"127.0.0.1:{port}"], cwd=ROOT, env=cli.env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout is not None else ""
        assert "exporting" in line
        url = line.split(" at ")[1].split()[0]  # nbd://HOST:PORT/SECRET-NAME
        want = tmp_path / "want.img"
        want.write_bytes(data)
        compare = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw", want, url],
                                 capture_output=True, text=True)
        assert compare.returncode == 0, compare.stdout + compare.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    cli.ok("clone-rm", "--repo", cloud_url, "drill")
