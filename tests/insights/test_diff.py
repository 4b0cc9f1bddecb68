"""Diff truth tests: change a real file system the way a machine would, then compare.

The ext4 image is changed through a loop mount (blocks are reused in place, as on a real
disk), the FAT image with mtools. Each diff must report exactly what was done, both when
every file is compared and when only files touching changed 64 KiB blocks are read.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from cairn.insights.diff import ChangedRanges, Diff, diff
from cairn.insights.disk import open_filesystem
from cairn.insights.fs import FileSystem
from cairn.insights.volume import FileReader
from tests.insights import images
from tests.insights.conftest import Images


def summary(result: Diff) -> tuple[list[str], list[str], dict[str, set[str]]]:
    return (
        [e.path for e in result.added],
        [e.path for e in result.removed],
        {m.path: set(m.changes) for m in result.modified},
    )


@pytest.fixture
def open_pair() -> Iterator[object]:
    with ExitStack() as stack:

        def opener(a: Path, b: Path) -> tuple[FileSystem, FileSystem]:
            systems = []
            for path in (a, b):
                reader = stack.enter_context(FileReader(path))
                fs = open_filesystem(reader, path.name)
                stack.callback(fs.close)
                systems.append(fs)
            return systems[0], systems[1]

        yield opener


def change_ext4(root: Path) -> None:
    (root / "new.txt").write_bytes(b"brand new\n")
    (root / "docs" / "newdir").mkdir()
    (root / "docs" / "newdir" / "inner.txt").write_bytes(b"inner\n")
    (root / "empty").unlink()
    readme = root / "docs" / "readme.md"
    readme.write_bytes(readme.read_bytes().replace(b"readme", b"README"))
    data = root / "docs" / "deep" / "data.bin"
    before = data.stat()
    with open(data, "r+b") as f:  # in place, then the old times put back: only blocks tell
        f.seek(1000)
        f.write(b"\x00" * 100)
    os.utime(data, ns=(before.st_atime_ns, before.st_mtime_ns))
    with open(root / "private" / "secret.txt", "ab") as f:
        f.write(b"more\n")
    os.rename(root / "hello-hardlink.txt", root / "hello-renamed.txt")
    os.chmod(root / "hello.txt", 0o600)
    os.chown(root / "private", 1000, 1000)
    os.unlink(root / "link-to-hello")
    os.symlink("docs/readme.md", root / "link-to-hello")


EXT4_TRUTH = (
    ["/docs/newdir", "/docs/newdir/inner.txt", "/hello-renamed.txt", "/new.txt"],
    ["/empty", "/hello-hardlink.txt"],
    {
        "/docs/deep/data.bin": {"content"},
        "/docs/readme.md": {"content", "mtime"},
        "/hello.txt": {"mode"},
        "/link-to-hello": {"target", "mtime"},
        "/private": {"owner"},
        "/private/secret.txt": {"content", "mtime"},
    },
)


def test_ext4_diff_is_the_truth(imgs: Images, scratch: Path, open_pair: object) -> None:
    before = imgs.ext4
    after = scratch / "after.img"
    shutil.copyfile(before, after)
    with images.loop_mounted(after, scratch / "mnt") as root:
        change_ext4(root)
    old, new = open_pair(before, after)  # type: ignore[operator]
    full = diff(old, new)
    assert summary(full) == EXT4_TRUTH
    changed = ChangedRanges(images.changed_ranges(before, after))
    fast = diff(old, new, changed)
    assert summary(fast) == EXT4_TRUTH
    assert full.files_compared >= 20 and fast.files_compared <= 5
    modified = {m.path: m for m in fast.modified}
    assert modified["/private/secret.txt"].new.size == len(b"top secret\nmore\n")


def test_unchanged_image_reads_nothing(imgs: Images, open_pair: object) -> None:
    old, new = open_pair(imgs.ext4, imgs.ext4)  # type: ignore[operator]
    result = diff(old, new, ChangedRanges([]))
    assert summary(result) == ([], [], {}) and result.files_compared == 0


def test_fat_diff_is_the_truth(imgs: Images, scratch: Path, open_pair: object) -> None:
    before = imgs.fat
    after = scratch / "after.img"
    shutil.copyfile(before, after)
    new_file = scratch / "new.txt"
    new_file.write_bytes(b"new on fat\n")
    readme = scratch / "readme.md"
    readme.write_bytes(imgs.files["/docs/readme.md"].replace(b"readme", b"README"))
    os.utime(readme, (images.T0 + 1000, images.T0 + 1000))
    images.mtools("mcopy", "-m", "-i", after, new_file, "::/new.txt")
    images.mtools("mdel", "-i", after, "::/empty")
    images.mtools("mcopy", "-o", "-m", "-i", after, readme, "::/docs/readme.md")
    images.mtools("mren", "-i", after, "::/hello.txt", "::/hello2.txt")
    images.mtools("mattrib", "-i", after, "+r", "::/docs/deep/data.bin")
    truth = (
        ["/hello2.txt", "/new.txt"],
        ["/empty", "/hello.txt"],
        {"/docs/readme.md": {"content", "mtime"}, "/docs/deep/data.bin": {"mode"}},
    )
    old, new = open_pair(before, after)  # type: ignore[operator]
    assert summary(diff(old, new)) == truth
    changed = ChangedRanges(images.changed_ranges(before, after))
    assert summary(diff(old, new, changed)) == truth


def test_changed_ranges_overlap_and_partition_view() -> None:
    ranges = ChangedRanges([(100, 50), (140, 20), (1000, 10)])
    assert [ranges.overlaps(s, n) for s, n in [(0, 100), (0, 101), (160, 840), (159, 1)]] == [
        False, True, False, True,
    ]  # fmt: skip
    inside = ranges.within(120, 900)
    assert [inside.overlaps(s, n) for s, n in [(0, 1), (39, 1), (40, 840), (880, 1)]] == [
        True, True, False, True,
    ]  # fmt: skip
