"""Drive cairn, restic and borg through one small interface, the way their users would.

Why: the benchmark compares tools, so each tool's quirks (how a snapshot id is learnt, where
a restored file lands, what "delete and get the space back" takes) live here and nowhere
else. Every driver keeps its repository, caches and configuration under one run folder, so a
run never touches the caller's home and a rerun starts clean.

Settings, chosen to be comparable and stated in the results:
- restic: local repository (format 2), compression `auto` (zstd at its default speed), always
  encrypted (restic cannot turn encryption off); restore has no sparse option in 0.14.
- borg: `init -e none` (no encryption, like a default cairn repository), `-C zstd,1`, default
  buzhash chunker; restore with `extract --sparse`; delete is `delete` then `compact`.
- cairn: one volume per repository, defaults of the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from images import BenchError

T = TypeVar("T")
CAIRN = Path(__file__).resolve().parent.parent / ".venv" / "bin" / "cairn"


def call(argv: list[str | Path], env: dict[str, str] | None = None, cwd: Path | None = None) -> str:
    """Run one tool command and return its stdout; a failure names the command and its words."""
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        tail = " | ".join((done.stderr or done.stdout).strip().splitlines()[-3:])
        raise BenchError(f"`{' '.join(str(a) for a in argv[:3])}` exit {done.returncode}: {tail}")
    return done.stdout


def drop_caches() -> None:
    """Write back dirty pages and empty the page cache, so each phase starts cold."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def tree_bytes(path: Path) -> int:
    """Disk space every file under `path` takes (allocated blocks): what a repository costs.

    Allocated, not apparent, size: a repository that frees space by punching holes in its
    files (cairn's packs) really gives that space back, and this counts it.
    """
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_blocks * 512
    return total


def timed(action: Callable[[], T], cold: bool = True) -> tuple[T, float]:
    """Time `action()` plus the `sync` that makes its writes durable; cold cache by default."""
    if cold:
        drop_caches()
    start = time.perf_counter()
    result = action()
    os.sync()
    return result, time.perf_counter() - start


class Tool(Protocol):
    """What the benchmark needs from a backup tool; points are the tool's own ids."""

    name: str

    def init(self) -> None: ...
    def backup(self, source: Path, changed: Path | None = None) -> str: ...
    def restore(self, point: str, dest: Path) -> None: ...
    def delete(self, point: str) -> None: ...
    def stored_bytes(self) -> int: ...


class Cairn:
    """cairn through its CLI, one volume per repository."""

    def __init__(self, run: Path, name: str = "cairn", volume: str = "vol") -> None:
        self.name = name
        self.repo = run / name
        self.volume = volume
        self.last: dict[str, object] = {}

    def init(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        call([CAIRN, "init", "--repo", self.repo])

    def backup(self, source: Path, changed: Path | None = None) -> str:
        argv: list[str | Path] = [
            CAIRN,
            "backup",
            "--repo",
            self.repo,
            "--volume",
            self.volume,
            source,
            "--json",
        ]
        if changed is not None:
            argv += ["--changed-ranges", changed]
        self.last = json.loads(call(argv))
        return str(self.last["point"])

    def restore(self, point: str, dest: Path) -> None:
        dest.unlink(missing_ok=True)
        call([CAIRN, "restore", "--repo", self.repo, point, dest, "--format", "raw"])

    def delete(self, point: str) -> None:
        call([CAIRN, "delete", "--repo", self.repo, "--now", point])

    def stored_bytes(self) -> int:
        return tree_bytes(self.repo)

    def stats(self) -> object:
        return json.loads(call([CAIRN, "stats", "--repo", self.repo, "--json"]))

    def points(self) -> list[dict[str, object]]:
        argv = [CAIRN, "points", "--repo", self.repo, "--volume", self.volume, "--json"]
        return json.loads(call(argv))  # type: ignore[no-any-return]


class _FileSource:
    """A stable path (`src/vol.img`) hard-linked to each image in turn, as a user's disk file.

    restic and borg then see one file that changed between backups, as they would in use.
    """

    def __init__(self, run: Path, name: str) -> None:
        self.folder = run / f"{name}-src"
        self.path = self.folder / "vol.img"

    def link(self, source: Path) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path.unlink(missing_ok=True)
        os.link(source, self.path)
        return self.path


class Restic:
    """restic 0.14 on a local repository."""

    def __init__(self, run: Path) -> None:
        self.name = "restic"
        self.repo = run / "restic"
        self.source = _FileSource(run, "restic")
        self.restore_root = run / "restic-restore"
        self.env = {
            **os.environ,
            "RESTIC_PASSWORD": "bench",
            "RESTIC_REPOSITORY": str(self.repo),
            "RESTIC_CACHE_DIR": str(run / "restic-cache"),
            "RESTIC_PROGRESS_FPS": "0.1",
        }

    def init(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        call(["restic", "init"], self.env)

    def backup(self, source: Path, changed: Path | None = None) -> str:
        path = self.source.link(source)
        out = call(["restic", "backup", "--json", "--host", "bench", path], self.env)
        summary = [json.loads(line) for line in out.splitlines() if '"summary"' in line]
        return str(summary[-1]["snapshot_id"])

    def restore(self, point: str, dest: Path) -> None:
        shutil.rmtree(self.restore_root, ignore_errors=True)
        call(["restic", "restore", point, "--target", self.restore_root], self.env)
        restored = self.restore_root / self.source.path.relative_to("/")
        dest.unlink(missing_ok=True)
        restored.rename(dest)
        shutil.rmtree(self.restore_root)

    def delete(self, point: str) -> None:
        call(["restic", "forget", "--prune", point], self.env)

    def stored_bytes(self) -> int:
        return tree_bytes(self.repo)


class Borg:
    """borg 1.2, unencrypted repository, zstd level 1."""

    def __init__(self, run: Path, compression: str = "zstd,1") -> None:
        self.name = "borg"
        self.repo = run / "borg"
        self.source = _FileSource(run, "borg")
        self.restore_root = run / "borg-restore"
        self.compression = compression
        self.count = 0
        self.env = {
            **os.environ,
            "BORG_REPO": str(self.repo),
            "BORG_PASSPHRASE": "",
            "BORG_BASE_DIR": str(run / "borg-home"),
            "BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK": "yes",
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes",
        }

    def init(self) -> None:
        shutil.rmtree(self.repo, ignore_errors=True)
        shutil.rmtree(self.env["BORG_BASE_DIR"], ignore_errors=True)
        call(["borg", "init", "-e", "none"], self.env)

    def backup(self, source: Path, changed: Path | None = None) -> str:
        self.source.link(source)
        self.count += 1
        name = f"p{self.count:04d}"
        call(
            ["borg", "create", "-C", self.compression, f"::{name}", "vol.img"],
            self.env,
            cwd=self.source.folder,
        )
        return name

    def restore(self, point: str, dest: Path) -> None:
        shutil.rmtree(self.restore_root, ignore_errors=True)
        self.restore_root.mkdir(parents=True)
        call(["borg", "extract", "--sparse", f"::{point}"], self.env, cwd=self.restore_root)
        dest.unlink(missing_ok=True)
        (self.restore_root / "vol.img").rename(dest)
        shutil.rmtree(self.restore_root)

    def delete(self, point: str) -> None:
        call(["borg", "delete", f"::{point}"], self.env)
        call(["borg", "compact"], self.env)

    def stored_bytes(self) -> int:
        return tree_bytes(self.repo)


def same_bytes(a: Path, b: Path) -> bool:
    """Byte equality of two images (cmp stops at the first difference)."""
    return subprocess.run(["cmp", "-s", str(a), str(b)], check=False).returncode == 0
