"""Session-wide images (built once, about 2 s) and a clean temporary directory for them."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.scratch import make as make_scratch
from tests.insights import images


@dataclass
class Images:
    work: Path
    tree: Path
    files: dict[str, bytes]
    ext4: Path
    fat: Path
    xfs: Path
    xfs_files: dict[str, tuple[str, bytes]]
    ntfs: Path
    ntfs_files: dict[str, bytes]
    gpt: Path


@pytest.fixture(scope="session")
def imgs() -> Iterator[Images]:
    work = make_scratch("cairn-insights-")
    try:
        tree = work / "tree"
        tree.mkdir()
        files = images.make_tree(tree)
        ext4 = images.make_ext4(tree, work / "ext4.img")
        fat = images.make_fat(tree, work / "fat.img")
        rnd = random.Random(3)
        xfs_files = {
            "notes.txt": ("640", b"xfs notes\n"),
            "blob.bin": ("644", rnd.randbytes(200_000)),
            "link": ("l", b"notes.txt"),
        }
        xfs = images.make_xfs(work / "xfs.img", xfs_files, work)
        ntfs_files = {"tiny.txt": b"resident\n", "large.bin": rnd.randbytes(150_000)}
        ntfs = images.make_ntfs(work / "ntfs.img", ntfs_files, work)
        garbage = work / "garbage.img"
        garbage.write_bytes(b"\xde\xad\xbe\xef" * 1024)
        gpt = images.make_disk(
            work / "gpt.img",
            "gpt",
            [
                (32, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "root", ext4),
                (8, "0FC63DAF-8483-4772-8E79-3D69D8477DE4", "broken", garbage),
                (40, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "data", fat),
                (16, "EBD0A0A2-B9E5-4433-87C0-68B6B72699C7", "win", ntfs),
            ],
        )
        yield Images(work, tree, files, ext4, fat, xfs, xfs_files, ntfs, ntfs_files, gpt)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A temporary directory removed after the test, mounts or not."""
    work = make_scratch("cairn-insights-t-")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
