"""Browsing points as a user does: `cairn ls/cat/restore-files/diff/mount` as real processes.

The points are real backups of real images: the ext4 image of the session, the same image
after changes made through a loop mount (add, delete, modify in place, rename, chmod, chown,
symlink retarget), and a GPT disk holding ext4, a garbage partition, FAT and NTFS. Every
mount is taken down in `finally`, lazily as a last resort, so no test leaves one behind.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.test_cli import ROOT, cairn, ok, one_line_error
from tests.insights import images
from tests.insights.conftest import Images
from tests.insights.test_diff import EXT4_TRUTH, change_ext4


@dataclass
class Points:
    repo: Path
    before: str
    after: str
    gpt: str


def backup(repo: Path, volume: str, image: Path) -> str:
    return str(json.loads(ok("backup", "--repo", repo, "--volume", volume, image, "--json"))[
        "point"])


@pytest.fixture(scope="module")
def points(imgs: Images) -> Iterator[Points]:
    work = imgs.work / "cli"
    work.mkdir()
    try:
        repo = work / "repo"
        ok("init", "--repo", repo)
        before = backup(repo, "ext", imgs.ext4)
        changed = work / "after.img"
        shutil.copyfile(imgs.ext4, changed)
        with images.loop_mounted(changed, work / "mnt") as root:
            change_ext4(root)
        ranges = work / "ranges.json"
        ranges.write_text(json.dumps(images.changed_ranges(imgs.ext4, changed)))
        after = str(json.loads(ok("backup", "--repo", repo, "--volume", "ext", changed,
                                  "--changed-ranges", ranges, "--json"))["point"])
        yield Points(repo, before, after, backup(repo, "disk", imgs.gpt))
    finally:
        shutil.rmtree(work, ignore_errors=True)


def cat(p: Points, point: str, path: str) -> bytes:
    done = subprocess.run([sys.executable, "-m", "cairn", "cat", "--repo", str(p.repo), point,
                           path], capture_output=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_ls_whole_disk_and_directories(points: Points) -> None:
    parts = json.loads(ok("ls", "--repo", points.repo, points.before, "--json"))
    assert [(v["partition"], v["filesystem"], v["label"]) for v in parts] == [
        (0, "ext", "cairn-ext4")]
    root = json.loads(ok("ls", "--repo", points.repo, points.before, "/", "--json"))
    assert {e["name"] for e in root} >= {"hello.txt", "docs", "private", "link-to-hello"}
    private = json.loads(ok("ls", "--repo", points.repo, points.before, "/private", "--json"))
    assert [(e["name"], e["mode"], e["uid"], e["gid"]) for e in private] == [
        ("secret.txt", "0600", 1000, 100)]
    text = ok("ls", "--repo", points.repo, points.after, "/")
    assert "link-to-hello -> docs/readme.md" in text and "new.txt" in text
    one_line_error(cairn("ls", "--repo", points.repo, points.before, "/nope"), 2,
                   "no such file", "/nope")


def test_ls_gpt_names_the_bad_partition_and_lists_the_others(points: Points) -> None:
    result = cairn("ls", "--repo", points.repo, points.gpt)
    assert result.returncode == 0, result.stderr
    rows = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert rows == ["1", "2", "3", "4"]
    assert "unreadable" in result.stdout
    warnings = result.stderr.strip().splitlines()
    assert len(warnings) == 1 and "partition 2" in warnings[0]
    parts = json.loads(ok("ls", "--repo", points.repo, points.gpt, "--json"))
    assert [(v["partition"], v["filesystem"]) for v in parts] == [
        (1, "ext"), (2, None), (3, "fat"), (4, "ntfs")]
    assert "partition 2" in parts[1]["error"]
    fat = json.loads(ok("ls", "--repo", points.repo, points.gpt, "p3:/docs", "--json"))
    assert {e["name"] for e in fat} == {"deep", "readme.md"}
    assert "hello.txt" in ok("ls", "--repo", points.repo, points.gpt, "1:/")
    one_line_error(cairn("ls", "--repo", points.repo, points.gpt, "/"), 2,
                   "name one", "1:/")
    one_line_error(cairn("ls", "--repo", points.repo, points.gpt, "2:/"), 1,
                   "partition 2", "no known file system")
    one_line_error(cairn("ls", "--repo", points.repo, points.gpt, "9:/"), 2,
                   "no partition 9", "1, 2, 3, 4")


def test_cat_is_byte_identical(points: Points, imgs: Images) -> None:
    for path in ("/hello.txt", "/docs/deep/data.bin", "/bulk/file07.bin", "/empty"):
        assert cat(points, points.before, path) == imgs.files[path]
    assert cat(points, points.after, "/new.txt") == b"brand new\n"
    assert cat(points, points.gpt, "3:/docs/deep/data.bin") == imgs.files["/docs/deep/data.bin"]
    assert cat(points, points.gpt, "4:/large.bin") == imgs.ntfs_files["large.bin"]
    one_line_error(cairn("cat", "--repo", points.repo, points.before, "/docs"), 2,
                   "not a regular file")
    one_line_error(cairn("cat", "--repo", points.repo, points.before, "/link-to-hello"), 2,
                   "symbolic link to hello.txt")


def test_restore_files_keeps_metadata_and_links(points: Points, imgs: Images,
                                                scratch: Path) -> None:
    out = scratch / "out"
    ok("restore-files", "--repo", points.repo, points.before, "/", "--to", out)
    for dirpath, dirnames, filenames in os.walk(imgs.tree):
        for name in dirnames + filenames:
            source = Path(dirpath) / name
            copy = out / source.relative_to(imgs.tree)
            a, b = source.lstat(), copy.lstat()
            assert (a.st_mode, a.st_uid, a.st_gid, a.st_mtime_ns) == (
                b.st_mode, b.st_uid, b.st_gid, b.st_mtime_ns), copy
            if source.is_symlink():
                assert os.readlink(copy) == os.readlink(source)
            elif source.is_file():
                assert copy.read_bytes() == source.read_bytes()
    assert (out / "hello.txt").stat().st_ino == (out / "hello-hardlink.txt").stat().st_ino
    two = scratch / "two"
    summary = json.loads(ok("restore-files", "--repo", points.repo, points.gpt,
                            "1:/private", "p3:/docs/readme.md", "--to", two, "--json"))
    assert summary["files"] == 2 and summary["dirs"] == 1
    assert (two / "private" / "secret.txt").stat().st_mode & 0o777 == 0o600
    assert (two / "readme.md").read_bytes() == imgs.files["/docs/readme.md"]


def test_restore_files_refuses_to_escape(points: Points, scratch: Path) -> None:
    outside = scratch / "outside"
    outside.mkdir()
    target = scratch / "target"
    target.mkdir()
    (target / "docs").symlink_to(outside)
    one_line_error(cairn("restore-files", "--repo", points.repo, points.before, "/docs",
                         "--to", target), 1, "refusing", "symlink")
    assert list(outside.iterdir()) == []
    ok("restore-files", "--repo", points.repo, points.before, "/../../hello.txt", "--to", target)
    assert (target / "hello.txt").read_bytes() == b"hello, cairn\n"
    one_line_error(cairn("restore-files", "--repo", points.repo, points.before, "/hello.txt",
                         "--to", target), 1, "already exists")


def test_diff_reports_exactly_what_was_done(points: Points) -> None:
    report = json.loads(ok("diff", "--repo", points.repo, points.before, points.after,
                           "--json"))
    (part,) = report["partitions"]
    added, removed, modified = EXT4_TRUTH
    assert [e["path"] for e in part["added"]] == added
    assert [e["path"] for e in part["removed"]] == removed
    assert {m["path"]: set(m["changes"]) for m in part["modified"]} == modified
    assert part["files_compared"] <= 5
    sizes = {m["path"]: (m["old_size"], m["new_size"]) for m in part["modified"]}
    assert sizes["/private/secret.txt"] == (11, 16)
    text = ok("diff", "--repo", points.repo, points.before, points.after)
    assert "4 added, 2 removed, 6 modified" in text
    assert "+  /new.txt" in text and "-  /empty" in text
    same = json.loads(ok("diff", "--repo", points.repo, points.after, points.after, "--json"))
    assert same["partitions"][0]["added"] == same["partitions"][0]["modified"] == []


def test_errors_are_one_line(points: Points, scratch: Path) -> None:
    one_line_error(cairn("ls", "--repo", scratch / "nothing", "abcd"), 2,
                   "not a cairn repository")
    one_line_error(cairn("ls", "--repo", points.repo, "deadbeef0000"), 2, "no recovery point")
    one_line_error(cairn("diff", "--repo", points.repo, points.before, "zzzz"), 2,
                   "no recovery point")
    one_line_error(cairn("mount", "--repo", points.repo, points.before, scratch / "missing"),
                   1, "not a directory")


def wait_mounted(proc: subprocess.Popen[str], mnt: Path) -> None:
    deadline = time.monotonic() + 20
    while not os.path.ismount(mnt):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "mount did not appear"
        time.sleep(0.05)


@pytest.fixture
def mounter(scratch: Path) -> Iterator[object]:
    """Starts `cairn mount`; whatever happens, no mount and no process is left behind."""
    started: list[tuple[subprocess.Popen[str], Path]] = []

    def mount(repo: Path, point: str, name: str) -> tuple[subprocess.Popen[str], Path]:
        mnt = scratch / name
        mnt.mkdir()
        proc = subprocess.Popen([sys.executable, "-m", "cairn", "mount", "--repo", str(repo),
                                 point, str(mnt)], cwd=ROOT, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        started.append((proc, mnt))
        wait_mounted(proc, mnt)
        return proc, mnt

    try:
        yield mount
    finally:
        for proc, mnt in started:
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-u", mnt], check=False, capture_output=True)
            if os.path.ismount(mnt):
                subprocess.run(["fusermount3", "-u", "-z", mnt], check=False,
                               capture_output=True)
            if proc.poll() is None:
                proc.kill()
            proc.communicate()


def test_mount_lists_reads_and_unmounts_on_signal(points: Points, imgs: Images,
                                                  mounter: object) -> None:
    proc, mnt = mounter(points.repo, points.after, "one")  # type: ignore[operator]
    assert {"new.txt", "docs", "hello-renamed.txt"} <= set(os.listdir(mnt))
    assert "empty" not in os.listdir(mnt)
    assert (mnt / "new.txt").read_bytes() == b"brand new\n"
    assert (mnt / "bulk" / "file03.bin").read_bytes() == imgs.files["/bulk/file03.bin"]
    assert os.readlink(mnt / "link-to-hello") == "docs/readme.md"
    source = (imgs.tree / "bulk" / "file03.bin").stat()
    seen = (mnt / "bulk" / "file03.bin").stat()
    assert (seen.st_mtime_ns, seen.st_size) == (source.st_mtime_ns, source.st_size)
    with pytest.raises(OSError):
        (mnt / "x").write_bytes(b"no")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert not os.path.ismount(mnt) and "unmounted" in err


def test_mount_gpt_has_a_folder_per_partition_and_fusermount_works(
        points: Points, imgs: Images, mounter: object) -> None:
    proc, mnt = mounter(points.repo, points.gpt, "gpt")  # type: ignore[operator]
    assert sorted(os.listdir(mnt)) == ["p1", "p3", "p4"]
    assert (mnt / "p1" / "docs" / "deep" / "data.bin").read_bytes() == imgs.files[
        "/docs/deep/data.bin"]
    assert (mnt / "p3" / "hello.txt").read_bytes() == imgs.files["/hello.txt"]
    assert (mnt / "p4" / "tiny.txt").read_bytes() == imgs.ntfs_files["tiny.txt"]
    subprocess.run(["fusermount3", "-u", mnt], check=True, capture_output=True)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "partition 2" in err and not os.path.ismount(mnt)
