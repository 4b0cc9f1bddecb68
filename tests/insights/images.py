"""Real file-system images for the insights tests, built with the real tools, no mount.

Each builder writes one image file from a directory tree: `mkfs.ext4 -d`, `mkfs.vfat` +
`mcopy`, `mkfs.xfs -p protofile`, `mkntfs` + `ntfscp`. `make_disk` lays several of them out
as partitions of one disk with `sfdisk` and `dd conv=notrunc,sparse`. `loop_mounted`
mounts an ext4 image to change it the way a real machine would (same blocks reused), which
is what the diff tests need; it always unmounts.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

MIB = 1 << 20
T0 = 1_700_000_000  # whole seconds: mkfs.ext4 -d and FAT keep no sub-second part


def run(*args: str | Path, **kw: object) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, **kw)  # type: ignore[call-overload]


def sparse_file(path: Path, size: int) -> Path:
    with open(path, "wb") as f:
        f.truncate(size)
    return path


def make_tree(root: Path) -> dict[str, bytes]:
    """A small tree with every kind of entry; returns {path: content} of its regular files."""
    rnd = random.Random(7)
    files = {
        "/hello.txt": b"hello, cairn\n",
        "/empty": b"",
        "/docs/readme.md": b"# readme\n" * 50,
        "/docs/deep/data.bin": rnd.randbytes(300_000),
        "/private/secret.txt": b"top secret\n",
    }
    files.update({f"/bulk/file{i:02d}.bin": rnd.randbytes(100_000) for i in range(20)})
    for rel, data in files.items():
        path = root / rel.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    os.link(root / "hello.txt", root / "hello-hardlink.txt")
    files["/hello-hardlink.txt"] = files["/hello.txt"]
    os.symlink("hello.txt", root / "link-to-hello")
    os.symlink("/etc/passwd", root / "docs" / "absolute-link")
    os.chmod(root / "private" / "secret.txt", 0o600)
    os.chmod(root / "private", 0o750)
    os.chown(root / "private" / "secret.txt", 1000, 100)
    os.chmod(root / "docs" / "readme.md", 0o644)
    for i, (dirpath, dirnames, filenames) in enumerate(os.walk(root, topdown=False)):
        for name in filenames + dirnames:
            os.utime(Path(dirpath) / name, (T0 + 50 + i, T0 + i), follow_symlinks=False)
    return files


def make_ext4(tree: Path, image: Path, size: int = 32 * MIB) -> Path:
    sparse_file(image, size)
    run(
        "mkfs.ext4", "-q", "-F", "-d", tree, "-U", "00000000-0000-0000-0000-00000000ca11",
        "-E", "hash_seed=00000000-0000-0000-0000-00000000ca11", "-L", "cairn-ext4", image,
    )  # fmt: skip
    return image


def make_fat(tree: Path, image: Path, size: int = 40 * MIB) -> Path:
    """FAT32 with the tree's regular files and directories (FAT has no links)."""
    sparse_file(image, size)
    run("mkfs.vfat", "-F", "32", "-n", "CAIRNFAT", "-i", "cafe0001", image)
    plain = image.with_suffix(".tree")
    shutil.copytree(tree, plain, symlinks=True, ignore=_links_of(tree))
    for item in sorted(plain.iterdir()):
        mtools("mcopy", "-s", "-m", "-i", image, item, "::/")
    shutil.rmtree(plain)
    return image


def _links_of(tree: Path) -> Callable[[str, list[str]], list[str]]:
    def ignore(directory: str, names: list[str]) -> list[str]:
        here = Path(directory)
        return [n for n in names if (here / n).is_symlink() or n.endswith("hardlink.txt")]

    return ignore


def _mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "1", "TZ": "UTC", "MTOOLS_NO_VFAT": "0"}


def mtools(*args: str | Path) -> None:
    run(*args, env=_mtools_env())


def make_xfs(image: Path, files: dict[str, tuple[str, bytes]], work: Path) -> Path:
    """XFS (300 MiB sparse, the minimum) from a protofile: {name: (mode, content)} at root.

    A mode of "l" makes a symlink whose content is the target.
    """
    sparse_file(image, 300 * MIB)
    lines = ["cairn", "0 0", "d--755 0 0"]
    for name, (mode, data) in files.items():
        if mode == "l":
            lines.append(f"{name} l--777 0 0 {data.decode()}")
            continue
        source = work / f"xfs-src-{name}"
        source.write_bytes(data)
        lines.append(f"{name} ---{mode} 1000 100 {source}")
    lines += ["$", "$"]
    proto = work / "xfs.proto"
    proto.write_text("\n".join(lines) + "\n")
    run("mkfs.xfs", "-q", "-f", "-L", "cairnxfs", "-p", proto, image)
    return image


def make_ntfs(image: Path, files: dict[str, bytes], work: Path, size: int = 16 * MIB) -> Path:
    sparse_file(image, size)
    run("mkntfs", "-q", "-F", "-f", "-L", "cairnntfs", image)
    for name, data in files.items():
        source = work / f"ntfs-src-{name}"
        source.write_bytes(data)
        run("ntfscp", "-q", image, source, name)
    return image


def make_disk(disk: Path, label: str, parts: list[tuple[int, str, str, Path | None]]) -> Path:
    """A disk with `label` ("gpt"/"dos") and partitions (size MiB, type, name, image file).

    Partitions start at 1 MiB and follow each other; each image is copied in sparsely.
    """
    total = 2 + sum(size for size, _, _, _ in parts)
    sparse_file(disk, total * MIB)
    script = [f"label: {label}", "unit: sectors"]
    start = MIB // 512
    for size, kind, name, _ in parts:
        line = f"start={start}, size={size * MIB // 512}, type={kind}"
        script.append(line + (f', name="{name}"' if label == "gpt" and name else ""))
        start += size * MIB // 512
    subprocess.run(
        ["sfdisk", "-q", "--no-reread", "--no-tell-kernel", str(disk)],
        input="\n".join(script) + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    offset = 1
    for size, _, _, image in parts:
        if image is not None:
            run("dd", f"if={image}", f"of={disk}", "bs=1M", f"seek={offset}",
                "conv=notrunc,sparse", "status=none")  # fmt: skip
        offset += size
    return disk


@contextlib.contextmanager
def loop_mounted(image: Path, mountpoint: Path) -> Iterator[Path]:
    """The ext4/XFS image mounted read-write through a loop device, unmounted on exit."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    run("mount", "-o", "loop", image, mountpoint)
    try:
        yield mountpoint
    finally:
        run("umount", mountpoint)


def changed_ranges(a: Path, b: Path, block: int = 64 * 1024) -> list[tuple[int, int]]:
    """The 64 KiB blocks that differ between two images, as the store's tree diff gives them."""
    ranges = []
    with open(a, "rb") as fa, open(b, "rb") as fb:
        offset = 0
        while True:
            da, db = fa.read(block), fb.read(block)
            if not da and not db:
                return ranges
            if da != db:
                ranges.append((offset, block))
            offset += block
