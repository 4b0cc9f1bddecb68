"""Build the realistic image pair the store benchmarks run on, and the changed ranges between.

Why: synthetic random files flatter or punish a backup tool in ways real disks do not. Image A
is an ext4 file system holding a Debian root (`debootstrap --variant=minbase`) plus
incompressible data files; image B is A after a real change made through the file system:
a package installed in a chroot and part of the data rewritten in place. The changed ranges
(A against B in 64 KiB blocks) are what a change-tracking driver would hand to `cairn backup`.

Promises: the images are built once per size and cached under `bench/work/images-SIZE/`
(`A.img`, `B.img`, `changed-AB.json`, `manifest.json`); the random data is deterministic
(BLAKE3 XOF from a fixed seed); every loop mount is unmounted, even on failure.

Run as root: `.venv/bin/python bench/images.py [--size 2G] [--force]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import blake3

WORK = Path(__file__).resolve().parent / "work"
BLOCK = 64 * 1024
SUITE = "bookworm"
PACKAGE = "nano"
DATA_SHARE = 600e6 / 2**31
CHANGE_SHARE = 40e6 / 2**31
DATA_FILE = 100 * 2**20
WRITE_PIECE = 2**20
SEED = b"cairn-bench-images-v1"
MIN_SIZE = 512 * 2**20


class BenchError(Exception):
    """A step of the benchmark cannot go on; the message names the problem and the fix."""


@dataclass(frozen=True)
class ImagePair:
    """Where one cached pair lives and what separates its two images."""

    a: Path
    b: Path
    changed: Path
    size: int
    changed_bytes: int
    package: str


def save_result(kind: str, result: dict[str, object]) -> Path:
    """Print a bench's result and keep it as ``bench/work/KIND-TIME.json`` beside the others."""
    text = json.dumps(result, indent=2)
    print(text)
    WORK.mkdir(parents=True, exist_ok=True)
    out = WORK / f"{kind}-{int(time.time())}.json"
    out.write_text(text)
    return out


def parse_size(text: str) -> int:
    """Read sizes the way people type them (`2G`, `512M`), binary units."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    text = text.strip().upper().removesuffix("IB").removesuffix("B")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def size_label(size: int) -> str:
    """Name a size for file names: 2G, 512M."""
    if size % 2**30 == 0:
        return f"{size // 2**30}G"
    return f"{size // 2**20}M"


def debian_mirror() -> str:
    """The Debian mirror apt on this host uses, so debootstrap needs no other network."""
    candidates = [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
    for path in candidates:
        if not path.is_file() or path.suffix not in {".list", ".sources", ""}:
            continue
        for line in path.read_text().splitlines():
            words = line.split()
            if path.suffix == ".sources" and words[:1] == ["URIs:"]:
                uri = words[1]
            elif words[:1] == ["deb"]:
                uri = next(w for w in words[1:] if not w.startswith("["))
            else:
                continue
            if "security" not in uri:
                return uri
    raise BenchError("no Debian mirror found in /etc/apt: add one to sources.list and retry")


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    """Run a command; a failure becomes a BenchError that shows the command's own words."""
    argv = [str(a) for a in args]
    done = subprocess.run(argv, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise BenchError(f"`{' '.join(argv[:4])}` failed ({done.returncode}): {' | '.join(tail)}")
    return done


def rootfs(work: Path) -> Path:
    """A minbase Debian root, debootstrapped once and reused by every image size.

    apt's binary caches are generated here, as on any system that has run apt once, so that
    installing a package in B changes what an install changes rather than 70 MB of caches.
    """
    root = work / f"rootfs-{SUITE}-minbase"
    marker = root / ".cairn-bench-complete"
    if marker.exists():
        return root
    shutil.rmtree(root, ignore_errors=True)
    print(f"debootstrap {SUITE} from {debian_mirror()} ...", flush=True)
    run("debootstrap", "--variant=minbase", SUITE, root, debian_mirror())
    run("chroot", root, "apt-cache", "gencaches")
    marker.touch()
    return root


def random_bytes(name: str, length: int, offset: int = 0) -> bytes:
    """Deterministic incompressible bytes: the same name and offset give the same data."""
    return blake3.blake3(SEED + name.encode()).digest(length=length, seek=offset)


def write_data_files(folder: Path, total: int) -> list[Path]:
    """Fill `folder` with `total` bytes of random data in files of at most 100 MiB."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    index = 0
    while total > 0:
        length = min(DATA_FILE, total)
        path = folder / f"data-{index:03d}.bin"
        with path.open("wb") as out:
            for start in range(0, length, 16 * 2**20):
                out.write(random_bytes(path.name, min(16 * 2**20, length - start), start))
        files.append(path)
        total -= length
        index += 1
    return files


def build_a(root: Path, target: Path, size: int) -> None:
    """mkfs.ext4 -d from a staging tree: the root (hard-linked, no copy) plus the data files."""
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="staging-") as tmp:
        staging = Path(tmp) / "root"
        run("cp", "-al", root, staging)
        (staging / ".cairn-bench-complete").unlink()
        write_data_files(staging / "srv" / "bench-data", int(size * DATA_SHARE))
        partial = target.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        with partial.open("wb") as out:
            out.truncate(size)
        run("mkfs.ext4", "-q", "-F", "-L", "bench-root", "-d", staging, partial)
        partial.rename(target)


def install_package(mnt: Path) -> None:
    """Install a small package in a chroot; fall back to a host-downloaded .deb if apt fails."""
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["chroot", str(mnt), "apt-get", "install", "-y", "--no-install-recommends", PACKAGE]
    if subprocess.run(apt, capture_output=True, env=env, check=False).returncode == 0:
        return
    with tempfile.TemporaryDirectory(dir=mnt / "tmp") as tmp:
        run("apt-get", "download", PACKAGE, cwd=tmp)
        debs = [f"/tmp/{Path(tmp).name}/{p.name}" for p in Path(tmp).glob("*.deb")]
        run("chroot", mnt, "dpkg", "-i", *debs, env=env)


def rewrite_data(folder: Path, total: int) -> None:
    """Overwrite `total` bytes of the data files in place, 1 MiB at seeded 4 KiB-aligned spots.

    Opened without truncation, so ext4 rewrites the same blocks: the image changes where a
    database or a VM disk inside the guest would change, not all over.
    """
    files = sorted(folder.glob("data-*.bin"))
    pieces = max(1, total // WRITE_PIECE)
    picks = random_bytes("rewrite-picks", 16 * pieces)
    for n in range(pieces):
        pick = int.from_bytes(picks[16 * n : 16 * n + 16], "little")
        path = files[pick % len(files)]
        span = path.stat().st_size - WRITE_PIECE
        offset = (pick >> 32) % max(1, span) // 4096 * 4096
        fd = os.open(path, os.O_WRONLY)
        try:
            os.pwrite(fd, random_bytes(f"rewrite-{n}", WRITE_PIECE), offset)
            os.fsync(fd)
        finally:
            os.close(fd)


def build_b(a: Path, target: Path, size: int) -> None:
    """B is a sparse copy of A, loop-mounted, changed through the file system, unmounted."""
    partial = target.with_suffix(".partial")
    run("cp", "--sparse=always", a, partial)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix="mnt-") as mnt:
        run("mount", "-o", "loop", partial, mnt)
        try:
            install_package(Path(mnt))
            rewrite_data(Path(mnt) / "srv" / "bench-data", int(size * CHANGE_SHARE))
        finally:
            run("umount", mnt)
    partial.rename(target)


def changed_ranges(a: Path, b: Path, block: int = BLOCK) -> list[list[int]]:
    """Compare two equal-sized images block by block; adjacent changed blocks merge."""
    if a.stat().st_size != b.stat().st_size:
        raise BenchError(f"{a} and {b} differ in size: rebuild them with --force")
    ranges: list[list[int]] = []
    step = block * 128
    with a.open("rb") as fa, b.open("rb") as fb:
        offset = 0
        while True:
            da, db = fa.read(step), fb.read(step)
            if not da:
                break
            if da != db:
                for i in range(0, len(da), block):
                    if da[i : i + block] == db[i : i + block]:
                        continue
                    start, length = offset + i, min(block, len(da) - i)
                    if ranges and ranges[-1][0] + ranges[-1][1] == start:
                        ranges[-1][1] += length
                    else:
                        ranges.append([start, length])
            offset += len(da)
    return ranges


def build(size: int, work: Path = WORK, force: bool = False) -> ImagePair:
    """Return the cached pair for `size`, building whatever is missing."""
    if size < MIN_SIZE or size % BLOCK:
        raise BenchError("image size must be a multiple of 64 KiB and at least 512M")
    folder = work / f"images-{size_label(size)}"
    manifest = folder / "manifest.json"
    if manifest.exists() and not force:
        data = json.loads(manifest.read_text())
        return ImagePair(
            **{**data, "a": Path(data["a"]), "b": Path(data["b"]), "changed": Path(data["changed"])}
        )
    if os.geteuid() != 0:
        raise BenchError("building images needs root (debootstrap, mount, chroot): run as root")
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    a, b, changed = folder / "A.img", folder / "B.img", folder / "changed-AB.json"
    print(f"building image A ({size_label(size)}) ...", flush=True)
    build_a(rootfs(work), a, size)
    print(f"building image B (install {PACKAGE}, rewrite data) ...", flush=True)
    build_b(a, b, size)
    ranges = changed_ranges(a, b)
    changed.write_text(json.dumps(ranges))
    pair = ImagePair(a, b, changed, size, sum(n for _, n in ranges), PACKAGE)
    manifest.write_text(
        json.dumps(
            {k: str(v) if isinstance(v, Path) else v for k, v in asdict(pair).items()}, indent=2
        )
    )
    return pair


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="2G", help="image size, e.g. 2G or 512M (default 2G)")
    parser.add_argument("--force", action="store_true", help="rebuild even if cached")
    args = parser.parse_args()
    try:
        pair = build(parse_size(args.size), force=args.force)
    except BenchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(
        f"A: {pair.a}\nB: {pair.b}\nchanged ranges: {pair.changed} "
        f"({pair.changed_bytes / 2**20:.1f} MiB differ in 64 KiB blocks)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
