"""Diff truth tests: change a real file system the way a machine would, then compare.

The ext4 image is changed through a loop mount (blocks are reused in place, as on a real
disk), the FAT image with mtools. Each diff must report exactly what was done, both when
every file is compared and when only files touching changed 64 KiB blocks are read.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO

import pyfsext
import pytest

from cairn.insights.diff import ChangedRanges, Diff, diff
from cairn.insights.disk import open_filesystem
from cairn.insights.fs import HOLE, FileSystem
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


def keep_times(path: Path) -> Callable[[], None]:
    """Puts the times of `path` back after a change, so only its blocks can tell."""
    before = path.stat()
    return lambda: os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))


def rewrite_elsewhere(path: Path, data: bytes) -> None:
    """Replaces `path` by a new file holding `data` (new blocks), with the old times."""
    restore = keep_times(path)
    fresh = path.with_name(path.name + ".tmp")
    fresh.write_bytes(data)
    os.chmod(fresh, path.stat().st_mode)
    os.replace(fresh, path)
    restore()


def prepare_layouts(root: Path) -> None:
    """Files whose layouts the changes below play with: holes, unwritten space, moves."""
    rnd = random.Random(11)
    (root / "inplace.bin").write_bytes(rnd.randbytes(200_000))
    (root / "moved-same.bin").write_bytes(rnd.randbytes(150_000))
    (root / "moved-other.bin").write_bytes(rnd.randbytes(150_000))
    for name in ("sparse-edit.bin", "sparse-filled.bin", "sparse-kept.bin"):
        with open(root / name, "wb") as f:  # 120 KiB hole, data, then a hole to the end
            f.seek(120 * 1024)
            f.write(rnd.randbytes(50_000))
            f.truncate(400_000)
    with open(root / "prealloc.bin", "wb") as f:
        f.write(rnd.randbytes(30_000))
    junk = root / "junk.bin"  # every free block full of bytes, for unwritten.bin to be given
    with open(junk, "wb") as f, contextlib.suppress(OSError):
        for _ in range(64):
            f.write(rnd.randbytes(1 << 20))
            f.flush()
    os.sync()
    junk.unlink()
    os.sync()
    images.run("fallocate", "-l", "100000", root / "unwritten.bin")  # reads as zeros
    with open(root / "unwritten.bin", "r+b") as f:
        f.seek(50_000)
        f.write(b"written")


def change_layouts(root: Path) -> None:
    """In place, rewritten elsewhere, holes written with zeros and space preallocated:
    only inplace.bin, moved-other.bin and sparse-edit.bin change content."""
    restore = keep_times(root / "inplace.bin")
    with open(root / "inplace.bin", "r+b") as f:
        f.seek(100_000)
        byte = f.read(1)
        f.seek(100_000)
        f.write(bytes([byte[0] ^ 0xFF]))
    restore()
    rewrite_elsewhere(root / "moved-same.bin", (root / "moved-same.bin").read_bytes())
    other = bytearray((root / "moved-other.bin").read_bytes())
    other[-1] ^= 0x01
    rewrite_elsewhere(root / "moved-other.bin", bytes(other))
    restore = keep_times(root / "sparse-edit.bin")
    with open(root / "sparse-edit.bin", "r+b") as f:
        f.seek(120 * 1024 + 25_000)
        f.write(b"\x01")
    restore()
    restore = keep_times(root / "sparse-filled.bin")
    with open(root / "sparse-filled.bin", "r+b") as f:  # the first hole becomes zero blocks
        f.write(bytes(120 * 1024))
    restore()
    restore = keep_times(root / "prealloc.bin")  # unwritten space beyond the end
    images.run("fallocate", "--keep-size", "-o", "30000", "-l", "200000", root / "prealloc.bin")
    restore()
    rewrite_elsewhere(root / "unwritten.bin", (root / "unwritten.bin").read_bytes())


def unwritten_bytes(image: Path, path: str) -> bytes:
    """What the volume holds under the allocated but unwritten ranges of a file."""
    volume = pyfsext.volume()
    volume.open(str(image))
    try:
        raw = volume.get_file_entry_by_path(path)
        ranges = [raw.get_extent(i) for i in range(raw.number_of_extents)]
    finally:
        volume.close()
    with FileReader(image) as reader:
        return b"".join(reader.pread(offset, n) for offset, n, flags in ranges
                        if flags & 1 and offset > 0)


LAYOUT_TRUTH = {
    "/inplace.bin": {"content"},
    "/moved-other.bin": {"content"},
    "/sparse-edit.bin": {"content"},
}


def test_volume_reads_are_exact(imgs: Images, scratch: Path, open_pair: object) -> None:
    before, after = scratch / "before.img", scratch / "after.img"
    shutil.copyfile(imgs.ext4, before)
    with images.loop_mounted(before, scratch / "mnt") as root:
        prepare_layouts(root)
    shutil.copyfile(before, after)
    with images.loop_mounted(after, scratch / "mnt") as root:
        change_layouts(root)
    old, new = open_pair(before, after)  # type: ignore[operator]
    moved = ("/moved-same.bin", "/sparse-filled.bin", "/prealloc.bin", "/unwritten.bin")
    assert all(old.stat(p).extents != new.stat(p).extents for p in moved)
    assert old.stat("/inplace.bin").extents == new.stat("/inplace.bin").extents
    assert HOLE in dict(new.stat("/sparse-kept.bin").extents or ())
    unwritten = old.stat("/unwritten.bin")
    assert unwritten.extents and unwritten.extents[0][0] == HOLE
    assert unwritten_bytes(before, "/unwritten.bin").strip(b"\0")  # old data lies under it

    def no_library_reads(path: str) -> BinaryIO:
        raise AssertionError(f"{path} was read through the file-system library")

    for fs in (old, new):
        fs.open = no_library_reads  # type: ignore[method-assign]
    changed = ChangedRanges(images.changed_ranges(before, after))
    fast, full = diff(old, new, changed), diff(old, new)
    assert summary(fast) == summary(full) == ([], [], LAYOUT_TRUTH)
    assert fast.files_compared < full.files_compared  # sparse-kept.bin and most others unread


def test_library_reads_where_extents_are_not_the_content(
    imgs: Images, scratch: Path, open_pair: object
) -> None:
    """NTFS extents may be compressed or run past the valid data: its files are streamed."""
    before, after = scratch / "before.img", scratch / "after.img"
    shutil.copyfile(imgs.ntfs, before)
    shutil.copyfile(imgs.ntfs, after)
    edited = bytearray(imgs.ntfs_files["large.bin"])
    edited[70_000] ^= 0xFF
    source = scratch / "large.bin"
    source.write_bytes(bytes(edited))
    images.run("ntfscp", "-q", "-f", after, source, "large.bin")
    old, new = open_pair(before, after)  # type: ignore[operator]
    assert not new.plain_extents
    changed = ChangedRanges(images.changed_ranges(before, after))
    result = diff(old, new, changed)
    assert summary(result)[2]["/large.bin"] >= {"content"}
    assert result.files_compared == 2  # large.bin, and tiny.txt whose data is in the MFT
