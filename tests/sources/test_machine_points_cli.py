"""Machine points from the command line: backup --qemu, points --machine, restore, export,
delete, prune; each machine point is restored, served, deleted and kept whole."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli.test_export import export_url
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
    volume_points = json.loads(ok("points", "--repo", repo, "--json"))
    assert len(volume_points) == 6
    assert not {v["id"] for v in listed[1]["volumes"]} & {p["id"] for p in volume_points}

    pruned = json.loads(ok("prune", "--repo", repo, "--machine", "web01", "--keep-last", "1",
                           "--json"))
    assert pruned["deleted"] == [ids[0], ids[2]]
    assert len(json.loads(ok("points", "--repo", repo, "--json"))) == 2
    ok("restore", "--repo", repo, "web01@latest", tmp_path / "latest")
    assert (tmp_path / "latest" / "vdb.img").read_bytes() == refs[2]["vdb"]


def test_qemu_with_volume_is_a_usage_error(tmp_path: Path) -> None:
    result = cairn("backup", "--repo", tmp_path, "--qemu", tmp_path / "q.sock", "--volume", "v")
    assert result.returncode == 2
    assert result.stderr.startswith("cairn: error: --qemu backs up every disk")


def test_machine_point_clone_keeps_it_whole(start_vm: Callable[..., LiveVm],
                                            tmp_path: Path) -> None:
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
