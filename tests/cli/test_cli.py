"""The command line as a user runs it: real processes, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store.helpers import make_image, mutate

ROOT = Path(__file__).resolve().parents[2]


def cairn(*args: str | Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn", *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT, env={**os.environ, **(env or {})}, timeout=600)


def ok(*args: str | Path) -> str:
    result = cairn(*args)
    assert result.returncode == 0, result.stderr
    return result.stdout


def one_line_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cairn: error: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    ok("init", "--repo", path)
    return path


def test_version_loads_no_command_module() -> None:
    """`cairn --version` (monitoring, scripts) answers without importing every command: that
    cost seconds with a cold page cache (the appliance, QEMU and web modules)."""
    code = ("import sys; from cairn.cli import main; main(['--version']); "
            "print(sorted(m for m in sys.modules if m.endswith('_cmd')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)
    version, loaded = done.stdout.splitlines()
    assert version.startswith("cairn ") and loaded == "[]"
    assert ok("--version") == version + "\n"


def test_backup_points_restore_delete_roundtrip(repo: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    data = make_image(img, 2 * 1024 * 1024, seed=1)
    first = json.loads(ok("backup", "--repo", repo, "--volume", "web01-sda", img, "--json"))
    assert {"point", "bytes_read", "bytes_stored", "seconds"} <= first.keys()
    original = bytes(data)
    ranges = mutate(img, data, seed=2)
    (tmp_path / "ranges.json").write_text(json.dumps(ranges))
    second = json.loads(ok("backup", "--repo", repo, "--volume", "web01-sda", img,
                           "--changed-ranges", tmp_path / "ranges.json", "--json"))
    assert second["bytes_read"] < len(data) // 2
    points = json.loads(ok("points", "--repo", repo, "--json"))
    assert [p["id"] for p in points] == [first["point"], second["point"]]
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, first["point"], out)
    assert out.read_bytes() == original
    for fmt in ("qcow2", "vmdk", "vhdx"):
        conv = tmp_path / f"out.{fmt}"
        ok("restore", "--repo", repo, "web01-sda@latest", conv, "--format", fmt)
        compare = subprocess.run(["qemu-img", "compare", "-f", "raw", img, conv],
                                 capture_output=True, text=True)
        assert compare.returncode == 0, compare.stdout + compare.stderr
    ok("delete", "--repo", repo, first["point"])
    assert [p["id"] for p in json.loads(ok("points", "--repo", repo, "--json"))] == [
        second["point"]]
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    stats = json.loads(ok("stats", "--repo", repo, "--json"))
    assert stats["points"] == 1 and stats["stored_bytes"] > 0


def test_repo_from_environment(repo: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    make_image(img, 256 * 1024, seed=3)
    result = cairn("backup", "--volume", "v", img, env={"CAIRN_REPO": str(repo)})
    assert result.returncode == 0, result.stderr


def test_bad_input_gets_one_line_and_the_right_code(repo: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    make_image(img, 256 * 1024, seed=4)
    one_line_error(cairn("backup", "--repo", repo, "--volume", "v", tmp_path / "nope"), 2,
                   "does not exist")
    one_line_error(cairn("restore", "--repo", repo, "deadbeef0000", tmp_path / "o"), 2,
                   "no recovery point")
    one_line_error(cairn("points", "--repo", tmp_path), 2, "not a cairn repository",
                   "cairn init")
    one_line_error(cairn("points", env={"CAIRN_REPO": ""}), 2, "--repo")
    one_line_error(cairn("init", "--repo", repo), 2, "already")
    one_line_error(cairn("backup", "--repo", repo, "--volume", "bad/name", img), 2,
                   "volume name")
    (tmp_path / "r.json").write_text("[[0, 99999999]]")
    one_line_error(cairn("backup", "--repo", repo, "--volume", "v", img, "--changed-ranges",
                         tmp_path / "r.json"), 2, "outside")
    one_line_error(cairn("prune", "--repo", repo, "--volume", "v"), 2, "no volume")
    ok("backup", "--repo", repo, "--volume", "v", img)
    one_line_error(cairn("prune", "--repo", repo, "--volume", "v"), 2, "--keep")
    one_line_error(cairn("restore", "--repo", repo, "v@latest", tmp_path / "no" / "dir" / "x"),
                   1, "does not exist")


def test_second_writer_is_refused_naming_the_holder(repo: Path, tmp_path: Path) -> None:
    img = tmp_path / "disk.img"
    make_image(img, 256 * 1024, seed=5)
    ok("backup", "--repo", repo, "--volume", "v", img)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys,time; from pathlib import Path; from cairn.store.repository import "
         "Repository; r = Repository.open(Path(sys.argv[1])); "
         "l = r.volume_lock(r.volume('v')); print('locked', flush=True); time.sleep(60)",
         str(repo)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        one_line_error(cairn("backup", "--repo", repo, "--volume", "v", img), 1,
                       "locked by pid", str(holder.pid))
        point = json.loads(ok("points", "--repo", repo, "--json"))[0]["id"]
        one_line_error(cairn("delete", "--repo", repo, "--now", point), 1, "locked")
    finally:
        holder.kill()
        holder.wait()
    ok("backup", "--repo", repo, "--volume", "v", img)


@pytest.fixture
def small_mount(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs: a disk that fills up. Needs root; skipped otherwise."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", mnt], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", mnt], check=False)


def test_full_disk_fails_cleanly_and_keeps_committed_points(small_mount: Path,
                                                            tmp_path: Path) -> None:
    repo = small_mount / "repo"
    ok("init", "--repo", repo)
    small = tmp_path / "small.img"
    data = make_image(small, 1024 * 1024, seed=6, fill=1.0)
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", small, "--json"))["point"]
    big = tmp_path / "big.img"
    make_image(big, 16 * 1024 * 1024, seed=7, fill=1.0)
    one_line_error(cairn("backup", "--repo", repo, "--volume", "w", big), 1, "no space left")
    assert "no problems found" in ok("verify", "--repo", repo, "--read-data")
    out = tmp_path / "out.img"
    ok("restore", "--repo", repo, first, out)
    assert out.read_bytes() == bytes(data)
    # The space the failed backup took is given back.
    ok("backup", "--repo", repo, "--volume", "v", small)


def test_destination_block_device_too_small(repo: Path, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("loop devices need root")
    img = tmp_path / "disk.img"
    make_image(img, 2 * 1024 * 1024, seed=8)
    ok("backup", "--repo", repo, "--volume", "v", img)
    backing = tmp_path / "dev.img"
    backing.write_bytes(bytes(1024 * 1024))
    loop = subprocess.run(["losetup", "-f", "--show", backing], capture_output=True, text=True)
    if loop.returncode != 0:
        pytest.skip(f"no loop device: {loop.stderr.strip()}")
    device = loop.stdout.strip()
    try:
        one_line_error(cairn("restore", "--repo", repo, "v@latest", device), 1,
                       "use a device at least that large")
    finally:
        subprocess.run(["losetup", "-d", device], check=False)
