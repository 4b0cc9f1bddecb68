"""Machine points from the command line: backup --qemu, points --machine, restore, export,
delete, prune, replicate; each machine point is restored, served, deleted, sent to the cloud
and kept whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cairn.ops.offsite import OffsiteTarget, replicate_volumes
from cairn.ops.retention import purge
from cairn.store import marks
from cairn.store.cloud import open_cloud
from cairn.store.machine_points import MachinePoints
from tests.cli.test_export import export_url
from tests.replication.test_replicate import Cli
from tests.replication.test_tamper import Bucket
from tests.s3server import SeaweedS3
from tests.sources.live_vm import MIB, LiveVm

ROOT = Path(__file__).resolve().parents[2]


def cairn(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env=dict(os.environ), timeout=120)


def ok(*args: str | Path) -> str:
    result = cairn(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


@contextmanager
def exported_disks(repo: Path, target: str, disks: int) -> Iterator[dict[str, str]]:
    """`cairn export` of a machine point on free ports: disk -> the URL printed for it."""
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                             target, "--nbd", "127.0.0.1:0"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        lines = [proc.stdout.readline() for _ in range(disks)]
        assert all(line.startswith("exporting disk ") for line in lines), \
            "".join(lines) + (proc.stderr.read() if proc.stderr else "")
        yield {line.split()[2].rstrip(":"): export_url(line) for line in lines}
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_machine_points_restore_delete_prune_whole(start_vm: Callable[..., LiveVm],
                                                   tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    vm = start_vm({"vda": 8 * MIB, "vdb": 4 * MIB}, name="web01")
    refs: list[dict[str, bytes]] = []
    ids = []
    for round_ in range(3):
        vm.write("vda", round_ * MIB, MIB, 0x10 + round_)
        vm.write("vdb", round_ * 64 * 1024, 64 * 1024, 0x20 + round_)
        refs.append({d: vm.reference(d, tmp_path / f"ref{round_}-{d}.img").read_bytes()
                     for d in vm.disks})
        out = ok("backup", "--repo", repo, "--qemu", vm.qmp, "--json")
        ids.append(json.loads(out)["machine_point"]["id"])
    text = cairn("backup", "--repo", repo, "--qemu", vm.qmp)
    assert "incremental" in text.stdout and "crash-consistent" in text.stdout

    listed = json.loads(ok("points", "--repo", repo, "--machine", "web01", "--json"))
    assert [mp["id"] for mp in listed][:3] == ids
    assert [[v["disk"] for v in mp["volumes"]] for mp in listed] == [["vda", "vdb"]] * 4
    assert {v["volume"] for v in listed[0]["volumes"]} == {"web01.vda", "web01.vdb"}

    for round_, mp in enumerate(ids):
        ok("restore", "--repo", repo, mp, tmp_path / f"out{round_}")
        for disk, data in refs[round_].items():
            assert (tmp_path / f"out{round_}" / f"{disk}.img").read_bytes() == data
    with exported_disks(repo, ids[0], 2) as urls:
        assert list(urls) == ["vda", "vdb"]
        for disk, url in urls.items():
            compared = subprocess.run(["qemu-img", "compare", "-f", "raw", "-F", "raw",
                                       tmp_path / f"ref0-{disk}.img", url],
                                      capture_output=True, text=True, timeout=60)
            assert compared.returncode == 0, compared.stdout + compared.stderr

    ok("delete", "--repo", repo, ids[1])
    left = json.loads(ok("points", "--repo", repo, "--machine", "web01", "--json"))
    assert [mp["id"] for mp in left][:2] == [ids[0], ids[2]]
    assert "brought back 2 point(s)" in ok("undelete", "--repo", repo, ids[1])
    assert listed_ids(repo, "web01")[:3] == ids
    ok("delete", "--repo", repo, ids[1])
    volume_points = json.loads(ok("points", "--repo", repo, "--json"))
    assert len(volume_points) == 6
    assert not {v["id"] for v in listed[1]["volumes"]} & {p["id"] for p in volume_points}

    pruned = json.loads(ok("prune", "--repo", repo, "--machine", "web01", "--keep-last", "1",
                           "--json"))
    assert pruned["deleted"] == [ids[0], ids[2]]
    assert len(json.loads(ok("points", "--repo", repo, "--json"))) == 2
    ok("restore", "--repo", repo, "web01@latest", tmp_path / "latest")
    assert (tmp_path / "latest" / "vdb.img").read_bytes() == refs[2]["vdb"]
    ok("lock", "--repo", repo, "web01@latest", "--until", "1d")
    assert all(p["locked_until"] for p in json.loads(ok("points", "--repo", repo, "--json")))
    refused = cairn("delete", "--repo", repo, "web01@latest")
    assert refused.returncode != 0 and "locked" in refused.stderr


def test_qemu_with_volume_is_a_usage_error(tmp_path: Path) -> None:
    result = cairn("backup", "--repo", tmp_path, "--qemu", tmp_path / "q.sock", "--volume", "v")
    assert result.returncode == 2
    assert result.stderr.startswith("cairn: error: --qemu backs up every disk")


def test_machine_point_clone_keeps_it_whole_and_the_cloud_too(
        start_vm: Callable[..., LiveVm], tmp_path: Path, s3_server: SeaweedS3,
        monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    vm = start_vm({"vda": 4 * MIB, "vdb": 4 * MIB}, name="db01")
    vm.write("vdb", 0, MIB, 0x61)
    first = json.loads(ok("backup", "--repo", repo, "--qemu", vm.qmp, "--json"))
    ok("backup", "--repo", repo, "--qemu", vm.qmp)
    ok("clone", "--repo", repo, first["machine_point"]["id"], "--name", "try")
    clones = json.loads(ok("clones", "--repo", repo, "--json"))
    members = {v["disk"]: v["id"] for v in first["machine_point"]["volumes"]}
    assert {c["name"]: c["point"] for c in clones} == {"try.vda": members["vda"],
                                                       "try.vdb": members["vdb"]}
    pruned = json.loads(ok("prune", "--repo", repo, "--machine", "db01", "--keep-last", "1",
                           "--json"))
    assert pruned["deleted"] == []
    assert {"id": first["machine_point"]["id"], "rules": ["has a clone"]} in pruned["kept"]
    refused = cairn("delete", "--repo", repo, "--now", first["machine_point"]["id"])
    assert refused.returncode != 0 and "clone" in refused.stderr
    assert len(json.loads(ok("points", "--repo", repo, "--machine", "db01", "--json"))) == 2
    cli = Cli(s3_server, tmp_path / "cache")
    for name, value in cli.env.items():
        if name.startswith("CAIRN_"):
            monkeypatch.setenv(name, value)
    replicated_whole(repo, [first["machine_point"]["id"], listed_ids(repo, "db01")[1]],
                     tmp_path, cli, s3_server)


def listed_ids(repo: Path | str, machine: str, cli: Cli | None = None) -> list[str]:
    args = ("points", "--repo", repo, "--machine", machine)
    return [mp["id"] for mp in (cli.json(*args) if cli else json.loads(ok(*args, "--json")))]


def replicated_whole(repo: Path, ids: list[str], tmp_path: Path, cli: Cli,
                     s3_server: SeaweedS3) -> None:
    """The machine points reach the cloud whole (every disk's point and the grouping), are
    listed, restored and pruned there whole (by the offsite policy's retention), and a
    forged grouping is refused."""
    url = f"s3://{s3_server.bucket}/mp{abs(hash(str(tmp_path))) % 10**8}"
    cli.ok("init", "--repo", url)
    unknown = cli.run("replicate", "--repo", repo, "--to", url, "--machine", "nope")
    assert unknown.returncode == 2 and "no machine points of 'nope'" in unknown.stderr
    sent = cli.json("replicate", "--repo", repo, "--to", url, "--machine", "db01")
    assert len(sent["points"]) == 4 and sorted(sent["machine_points"]) == sorted(ids)
    assert cli.json("replicate", "--repo", repo, "--to", url)["machine_points"] == []
    fresh = Cli(s3_server, tmp_path / "other-cache")  # another node: only the bucket
    assert listed_ids(url, "db01", fresh) == ids
    fresh.ok("restore", "--repo", url, "db01@latest", tmp_path / "from-cloud")
    ok("restore", "--repo", repo, "db01@latest", tmp_path / "from-local")
    for disk in ("vda", "vdb"):
        assert (tmp_path / "from-cloud" / f"{disk}.img").read_bytes() == \
            (tmp_path / "from-local" / f"{disk}.img").read_bytes()

    planned = cli.json("prune", "--repo", url, "--machine", "db01", "--keep-last", "1",
                       "--dry-run")
    assert planned["deleted"] == [ids[0]]  # the clone is local: the cloud keeps nothing for it
    offsite = replicate_volumes(repo, ["db01.vda", "db01.vdb"],
                                OffsiteTarget(url, s3_server.endpoint, retention="last=1"))
    assert offsite.points_sent == 0 and offsite.cloud_deleted == 2  # both disks of ids[0]
    # held for the deletion window, as local prunes hold (its record stays until reclaimed)
    assert listed_ids(url, "db01", fresh) == [ids[1]]
    assert len(fresh.json("points", "--repo", url)) == 2
    again = cli.json("replicate", "--repo", repo, "--to", url)
    assert again["points"] == [] and again["machine_points"] == []

    bucket = Bucket(s3_server, url)
    record = f"machines/db01/{ids[1]}.json"
    assert sorted(bucket.keys("machines/")) == sorted(f"machines/db01/{i}.json" for i in ids)
    sealed = bucket.get(record)
    forged = bucket.get_json(record)
    forged["volumes"].reverse()
    bucket.put_json(record, forged)
    refused = Cli(s3_server, tmp_path / "third-cache").run("points", "--repo", url)
    assert refused.returncode != 0 and "machine point record" in refused.stderr
    bucket.put(record, sealed)
    cli.ok("delete", "--repo", url, "--now", ids[1])
    assert bucket.keys("machines/") == [f"machines/db01/{ids[0]}.json"]
    gone = fresh.run("points", "--repo", url, "--machine", "db01")
    assert gone.returncode != 0 and "no machine points of 'db01'" in gone.stderr
    with open_cloud(url, s3_server.endpoint) as cloud:  # the held one's window ends now
        held = MachinePoints(cloud.catalog).get(ids[0])
        assert held is not None
        marks.hold(cloud, [m.point for m in held.members], window=0)
        purge(cloud)
    assert bucket.keys("machines/") == [] and bucket.keys("points/") == []
