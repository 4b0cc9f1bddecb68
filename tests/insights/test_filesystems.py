"""Listing, stat, reading and extents on real ext4, FAT32, XFS and NTFS images."""

from __future__ import annotations

import dataclasses
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.errors import DamagedFileSystem, PathNotFound, UnknownFileSystem
from cairn.insights.disk import open_disk, open_filesystem
from cairn.insights.fs import DIR, FILE, SYMLINK, FileSystem
from cairn.insights.volume import FileReader, VolumeReader
from tests.insights import images
from tests.insights.conftest import Images

T0_NS = images.T0 * 1_000_000_000


@pytest.fixture
def opened(imgs: Images) -> Iterator[dict[str, tuple[FileSystem, VolumeReader]]]:
    readers = {name: FileReader(getattr(imgs, name)) for name in ("ext4", "fat", "xfs", "ntfs")}
    systems = {name: (open_filesystem(r, name), r) for name, r in readers.items()}
    try:
        yield systems
    finally:
        for fs, reader in systems.values():
            fs.close()
            reader.close()  # type: ignore[attr-defined]


def test_kinds_and_labels(opened: dict[str, tuple[FileSystem, VolumeReader]]) -> None:
    found = {name: (fs.kind, fs.label) for name, (fs, _) in opened.items()}
    assert found == {
        "ext4": ("ext", "cairn-ext4"),
        "fat": ("fat", "CAIRNFAT"),
        "xfs": ("xfs", "cairnxfs"),
        "ntfs": ("ntfs", "cairnntfs"),
    }


def test_ext4_listing_has_posix_metadata(
    imgs: Images, opened: dict[str, tuple[FileSystem, VolumeReader]]
) -> None:
    fs, _ = opened["ext4"]
    names = [e.name for e in fs.list("/")]
    assert names == [
        "bulk", "docs", "empty", "hello-hardlink.txt", "hello.txt", "link-to-hello", "lost+found",
        "private",
    ]  # fmt: skip
    secret = fs.stat("/private/secret.txt")
    host = (imgs.tree / "private" / "secret.txt").lstat()
    assert (secret.kind, secret.mode, secret.uid, secret.gid) == (FILE, host.st_mode, 1000, 100)
    assert secret.mtime == host.st_mtime_ns
    assert secret.atime == secret.mtime + 50 * 10**9  # as set before mkfs read the file
    assert fs.stat("/private").kind == DIR and fs.stat("/private").permissions == 0o750
    link = fs.stat("/link-to-hello")
    assert (link.kind, link.link_target) == (SYMLINK, "hello.txt")
    assert fs.stat("/docs/absolute-link").link_target == "/etc/passwd"
    hello, hard = fs.stat("/hello.txt"), fs.stat("/hello-hardlink.txt")
    assert hello.inode == hard.inode and hello.nlink == 2


@pytest.mark.parametrize("name", ["ext4", "fat"])
def test_every_file_reads_back_exactly(
    imgs: Images, opened: dict[str, tuple[FileSystem, VolumeReader]], name: str
) -> None:
    fs, _ = opened[name]
    expected = {p: d for p, d in imgs.files.items() if name == "ext4" or "hardlink" not in p}
    found = {e.path: fs.read(e.path) for e in fs.walk() if e.kind == FILE}
    assert found == expected


def test_fat_times_are_right(
    imgs: Images, opened: dict[str, tuple[FileSystem, VolumeReader]]
) -> None:
    """pyfsfat shifted these by a month and a day; TSK must give the host's mtime exactly."""
    fs, _ = opened["fat"]
    for path in ("/hello.txt", "/docs/readme.md", "/docs/deep/data.bin"):
        host = (imgs.tree / path.lstrip("/")).stat().st_mtime_ns
        assert fs.stat(path).mtime == host - host % 2_000_000_000  # FAT keeps 2 s steps


def test_xfs_and_ntfs_files(
    imgs: Images, opened: dict[str, tuple[FileSystem, VolumeReader]]
) -> None:
    xfs, _ = opened["xfs"]
    assert [e.name for e in xfs.list("/")] == ["blob.bin", "link", "notes.txt"]
    notes = xfs.stat("/notes.txt")
    assert (notes.permissions, notes.uid, notes.gid) == (0o640, 1000, 100)
    assert xfs.stat("/link").link_target == "notes.txt"
    assert xfs.read("/blob.bin") == imgs.xfs_files["blob.bin"][1]
    ntfs, _ = opened["ntfs"]
    assert [e.name for e in ntfs.list("/")] == ["large.bin", "tiny.txt"]  # no $MFT and friends
    assert {e.name: ntfs.read(e.path) for e in ntfs.list("/")} == imgs.ntfs_files
    assert ntfs.stat("/tiny.txt").extents is None  # resident data lives in the MFT record


@pytest.mark.parametrize(
    ("name", "path"),
    [("ext4", "/docs/deep/data.bin"), ("fat", "/docs/deep/data.bin"), ("xfs", "/blob.bin"),
     ("ntfs", "/large.bin")],
)  # fmt: skip
def test_extents_point_at_the_file_data_on_the_volume(
    opened: dict[str, tuple[FileSystem, VolumeReader]], name: str, path: str
) -> None:
    fs, reader = opened[name]
    entry = fs.stat(path)
    assert entry.extents
    on_volume = b"".join(reader.pread(offset, length) for offset, length in entry.extents)
    assert on_volume[: entry.size] == fs.read(path)


def test_streaming_read_and_seek(
    imgs: Images, opened: dict[str, tuple[FileSystem, VolumeReader]]
) -> None:
    fs, _ = opened["ext4"]
    data = imgs.files["/docs/deep/data.bin"]
    with fs.open("/docs/deep/data.bin") as f:
        assert f.read(1000) == data[:1000]
        f.seek(250_000)
        assert f.read() == data[250_000:]
        assert f.read(10) == b""


def test_missing_paths_and_wrong_kinds(opened: dict[str, tuple[FileSystem, VolumeReader]]) -> None:
    for fs, _ in opened.values():
        with pytest.raises(PathNotFound):
            fs.stat("/no/such/file")
    for fs, _ in (opened["ext4"], opened["fat"]):
        with pytest.raises(PathNotFound):
            fs.open("/docs")
        with pytest.raises(PathNotFound):
            fs.list("/hello.txt")


def test_fat_modes_are_what_a_mount_shows(
    opened: dict[str, tuple[FileSystem, VolumeReader]],
) -> None:
    fs, _ = opened["fat"]
    assert (fs.stat("/hello.txt").mode, fs.stat("/docs").mode) == (0o100644, 0o040755)


def test_disk_lists_good_partitions_and_names_the_bad_one(imgs: Images) -> None:
    with FileReader(imgs.gpt) as disk:
        volumes = open_disk(disk)
        try:
            summary = [(v.partition.index, v.filesystem and v.filesystem.kind) for v in volumes]
            assert summary == [(1, "ext"), (2, None), (3, "fat"), (4, "ntfs")]
            assert str(volumes[1].error) == (
                "partition 2 (offset 34603008, 8 MiB): no known file system "
                "(found bytes de ad be ef de ad be ef de ad be ef de ad be ef ...); "
                "supported are ext2/3/4, XFS, NTFS and FAT"
            )
            assert isinstance(volumes[1].error, UnknownFileSystem)
            ext4 = volumes[0].filesystem
            fat = volumes[2].filesystem
            assert ext4 and fat
            assert ext4.read("/hello.txt") == fat.read("/hello.txt") == b"hello, cairn\n"
        finally:
            for v in volumes:
                if v.filesystem:
                    v.filesystem.close()


def test_damaged_ext4_says_so(imgs: Images, scratch: Path) -> None:
    """The magic survives but the group descriptors are gone: damaged, not unknown."""
    image = scratch / "bad.img"
    images.run("cp", "--sparse=always", imgs.ext4, image)
    with open(image, "r+b") as f:
        f.seek(2048)  # 1 KiB blocks: the group descriptors follow the superblock
        f.write(b"\xff" * 2048)
    with FileReader(image) as reader, pytest.raises(DamagedFileSystem) as err:
        open_filesystem(reader, "partition 1 (offset 0, 32 MiB)").list("/")
    message = str(err.value)
    assert message.startswith("partition 1 (offset 0, 32 MiB): ")
    assert "ext file system is damaged" in message and "group descriptor" in message
    assert "\n" not in message and "pyfsext" not in message


def test_zeroed_partition_message(scratch: Path) -> None:
    image = images.sparse_file(scratch / "zero.img", images.MIB)
    with FileReader(image) as reader, pytest.raises(UnknownFileSystem) as err:
        open_filesystem(reader, "partition 3 (offset 1048576, 1 MiB)")
    assert "its first 4 KiB are all zeros" in str(err.value)


def test_walk_visits_parents_first(opened: dict[str, tuple[FileSystem, VolumeReader]]) -> None:
    fs, _ = opened["ext4"]
    seen: set[str] = {"/"}
    for entry in fs.walk():
        assert entry.path.rsplit("/", 1)[0] or "/" in seen
        seen.add(entry.path)
    assert "/docs/deep/data.bin" in seen and stat.S_ISDIR(fs.stat("/docs/deep").mode)


def test_a_listing_is_the_stat_of_each_entry_less_its_extents(
        opened: dict[str, tuple[FileSystem, VolumeReader]]) -> None:
    """`list` skips reading extents (a big folder lists faster); `stat` and `walk` keep them."""
    for name in ("ext4", "xfs", "ntfs"):
        fs, _ = opened[name]
        listed = {e.path: e for e in fs.list("/")}
        walked = {e.path: e for e in fs.walk("/") if e.path in listed}
        for path, entry in listed.items():
            full = fs.stat(path)
            assert entry.extents is None and walked[path] == full
            assert dataclasses.replace(full, extents=None) == entry
        assert any(e.extents for e in walked.values())
