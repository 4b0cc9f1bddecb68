"""Restoring files out of an image: metadata kept, and nothing ever written outside."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn.errors import DestinationError, UnsafePath
from cairn.insights.disk import open_filesystem
from cairn.insights.extract import extract
from cairn.insights.fs import FileSystem
from cairn.insights.volume import FileReader
from tests.insights import images
from tests.insights.conftest import Images


@pytest.fixture
def ext4(imgs: Images) -> Iterator[FileSystem]:
    with FileReader(imgs.ext4) as reader:
        fs = open_filesystem(reader, "ext4")
        try:
            yield fs
        finally:
            fs.close()


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """What a restore must reproduce, per path: type and mode, owner, mtime, content/target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st = path.lstat()
            rel = "/" + str(path.relative_to(root))
            if path.is_symlink():
                what: object = os.readlink(path)
            elif path.is_file():
                what = path.read_bytes()
            else:
                what = None
            found[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, what)
    return found


def test_whole_tree_restores_with_metadata(imgs: Images, ext4: FileSystem, scratch: Path) -> None:
    target = scratch / "out"
    done = extract(ext4, "/", target)
    link = (target / "docs" / "absolute-link").lstat()
    assert link.st_atime_ns == link.st_mtime_ns + 50 * 10**9  # symlink times set, not target's
    expected = snapshot(imgs.tree)
    restored = snapshot(target)
    restored.pop("/lost+found")
    assert restored == expected
    assert (target / "hello.txt").stat().st_ino == (target / "hello-hardlink.txt").stat().st_ino
    assert (done.files, done.hardlinks, done.symlinks) == (25, 1, 2)


def test_single_file_and_subtree(imgs: Images, ext4: FileSystem, scratch: Path) -> None:
    extract(ext4, "/private/secret.txt", scratch)
    assert (scratch / "secret.txt").read_bytes() == b"top secret\n"
    assert (scratch / "secret.txt").stat().st_mode & 0o7777 == 0o600
    extract(ext4, "/docs", scratch)
    assert (scratch / "docs" / "deep" / "data.bin").read_bytes() == imgs.files[
        "/docs/deep/data.bin"
    ]


def test_symlink_in_target_is_never_followed(ext4: FileSystem, scratch: Path) -> None:
    """An earlier restore left docs -> elsewhere; restoring /docs must not write through it."""
    outside = scratch / "outside"
    outside.mkdir()
    target = scratch / "target"
    target.mkdir()
    os.symlink(outside, target / "docs")
    with pytest.raises(UnsafePath) as err:
        extract(ext4, "/docs", target)
    assert "symlink" in str(err.value)
    assert list(outside.iterdir()) == []


def test_symlink_in_target_replaced_by_file_only_when_asked(
    ext4: FileSystem, scratch: Path
) -> None:
    outside = scratch / "victim.txt"
    outside.write_bytes(b"keep me")
    os.symlink(outside, scratch / "hello.txt")
    with pytest.raises(DestinationError):
        extract(ext4, "/hello.txt", scratch)
    extract(ext4, "/hello.txt", scratch, overwrite=True)
    assert outside.read_bytes() == b"keep me"
    assert not (scratch / "hello.txt").is_symlink()
    assert (scratch / "hello.txt").read_bytes() == b"hello, cairn\n"


def test_hostile_name_in_image_is_refused(imgs: Images, scratch: Path) -> None:
    """A damaged or crafted directory entry named "../x" must not land outside the target."""
    tree = scratch / "tree"
    (tree / "d").mkdir(parents=True)
    (tree / "d" / "AAAA").write_bytes(b"escape\n")
    image = scratch / "evil.img"
    images.sparse_file(image, 8 * images.MIB)
    images.run("mkfs.ext4", "-q", "-O", "^metadata_csum,^dir_index", "-d", tree, image)
    raw = bytearray(image.read_bytes())
    at = raw.find(b"\x04\x01AAAA")  # name_len 4, file_type 1 (regular), name
    assert at > 0
    raw[at + 2 : at + 6] = b"../x"
    image.write_bytes(raw)
    target = scratch / "target" / "inner"
    target.mkdir(parents=True)
    with FileReader(image) as reader:
        fs = open_filesystem(reader, "evil")
        with pytest.raises(UnsafePath) as err:
            extract(fs, "/", target)
        fs.close()
    assert "'../x'" in str(err.value)
    assert not (scratch / "target" / "x").exists()
