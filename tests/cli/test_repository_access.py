"""Recovery from whatever is left: every command over a repository on read-only media, one
this user may only read, one it may not read at all, a missing one and a full one.

Reading commands work wherever the repository can be read; every failure is one line naming
the problem and the fix, never "internal error", and an unreadable repository is never
called "not a cairn repository" (whose fix, `cairn init`, would start a second history).
The sweep runs each condition's commands in one process (`tests.cli.cli_batch`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn import scratch
from tests.cli.test_cli import ROOT, ok

NOBODY = 65534
READERS = 13
"""How many commands `readers` runs; `writers` follow them in a sweep."""


@dataclass
class Setup:
    base: Path
    repo: Path
    image: Path
    first: str
    out: Path


def batch(argvs: list[list[str | Path]], unprivileged: bool = False,
          env: dict[str, str] | None = None) -> list[dict[str, object]]:
    """Run ``argvs`` in one process (with ``env`` as its environment when given);
    ``unprivileged``: as root without the capabilities that override file permissions, so
    a repository owned by another user is read with that user's permission bits, as any
    other user would (the test runs as root)."""
    drop = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search,-fowner", "--"]
    result = subprocess.run(
        [*(drop if unprivileged else []), sys.executable, "-m", "tests.cli.cli_batch"],
        capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
        input=json.dumps([[str(a) for a in argv] for argv in argvs]), env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _image(path: Path, folder: Path, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / "hello.txt").write_text(text)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", folder, path, "4M"], check=True)


@dataclass
class Template:
    repo: Path
    image: Path
    first: str


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    """A repository of two points of a small ext4 image, copied by each test."""
    folder = tmp_path_factory.mktemp("access")
    repo, image = folder / "repo", folder / "disk.img"
    ok("init", "--repo", repo)
    _image(image, folder / "files", "first\n")
    first = json.loads(ok("backup", "--repo", repo, "--volume", "v", image, "--json"))
    _image(image, folder / "files", "second\n")
    ok("backup", "--repo", repo, "--volume", "v", image)
    return Template(repo, image, first["point"])


@pytest.fixture
def setup(template: Template) -> Iterator[Setup]:
    """The template's repository in a folder other users may reach (a test's own
    ``tmp_path`` is not), on a small tmpfs so that it can also be filled."""
    base = scratch.make("cairn-access-")
    os.chmod(base, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m,mode=0755", "tmpfs", base],
                   check=True)
    try:
        shutil.copytree(template.repo, base / "repo",
                        ignore=shutil.ignore_patterns("reserve"))  # sized for its disk
        yield Setup(base, base / "repo", template.image, template.first, base / "out")
    finally:
        subprocess.run(["umount", "-R", "-l", base], check=False)
        shutil.rmtree(base, ignore_errors=True)


def readers(s: Setup, repo: Path, out: Path) -> list[list[str | Path]]:
    """The reading commands, writing what they restore into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    return [["points", "--repo", repo, "--json"], ["points", "--repo", repo],
            ["stats", "--repo", repo], ["verify", "--repo", repo, "--read-data"],
            ["ls", "--repo", repo, "v@latest", "/"],
            ["cat", "--repo", repo, "v@latest", "/hello.txt"],
            ["restore", "--repo", repo, "v@latest", out / "v.img"],
            ["restore-files", "--repo", repo, s.first, "/hello.txt", "--to", out / "files"],
            ["diff", "--repo", repo, s.first, "v@latest", "--json"],
            ["clones", "--repo", repo, "--json"],
            ["delete", "--repo", repo, s.first, "--dry-run", "--json"],
            ["prune", "--repo", repo, "--volume", "v", "--keep-last", "1", "--dry-run"],
            ["rollback", "--repo", repo, s.first, "--to", _copy(s.image, out / "rb.img")]]


def _copy(image: Path, dest: Path) -> Path:
    shutil.copyfile(image, dest)
    return dest


def writers(s: Setup, repo: Path) -> list[list[str | Path]]:
    return [["backup", "--repo", repo, "--volume", "v", s.image],
            ["delete", "--repo", repo, s.first],
            ["prune", "--repo", repo, "--volume", "v", "--keep-last", "1"],
            ["clone", "--repo", repo, "v@latest"],
            ["lock", "--repo", repo, s.first, "--until", "1d"],
            ["unlock", "--repo", repo, s.first], ["undelete", "--repo", repo, s.first],
            ["clone-rm", "--repo", repo, "nosuchclone"]]


def one_line(result: dict[str, object], *words: str) -> str:
    assert result["code"] in (1, 2), result
    lines = str(result["stderr"]).strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cairn: error: "), result
    assert "internal error" not in lines[0]
    for word in words:
        assert word in lines[0], result
    return lines[0]


def check_reads(s: Setup, results: list[dict[str, object]], out: Path) -> None:
    for result in results:
        assert result["code"] == 0, result
    assert len(json.loads(str(results[0]["stdout"]))) == 2
    assert "no problems found" in str(results[3]["stdout"])
    assert results[5]["stdout"] == "second\n"
    assert (out / "v.img").read_bytes() == s.image.read_bytes()
    assert (out / "files" / "hello.txt").read_text() == "first\n"
    assert "hello.txt" in str(results[8]["stdout"])


def test_read_only_media(setup: Setup) -> None:
    """A read-only mount (a USB disk, a snapshot): reading works, writing says why not."""
    ro = setup.base / "ro"
    ro.mkdir()
    subprocess.run(["mount", "--bind", setup.repo, ro], check=True)
    subprocess.run(["mount", "-o", "remount,ro,bind", ro], check=True)
    results = batch([*readers(setup, ro, setup.out), *writers(setup, ro),
                     ["init", "--repo", ro / "new"]])
    check_reads(setup, results[:READERS], setup.out)
    for result in results[READERS:-1]:
        one_line(result, "cannot write the repository", "read-only file system")
    one_line(results[-1], "read-only file system", "writable")


def test_read_permission_only(setup: Setup) -> None:
    """Read permission only (a repository of another user, opened to others): reading
    works, writing says why not, and `init` in a folder it may not write names that."""
    subprocess.run(["chmod", "-R", "go+rX", setup.repo], check=True)
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", setup.repo], check=True)
    locked = setup.base / "locked"
    locked.mkdir()
    os.chown(locked, NOBODY, NOBODY)
    results = batch([*readers(setup, setup.repo, setup.out), *writers(setup, setup.repo),
                     ["init", "--repo", locked / "new"]], unprivileged=True)
    check_reads(setup, results[:READERS], setup.out)
    for result in results[READERS:-1]:
        one_line(result, "cannot write the repository", "may not write")
    one_line(results[-1], "permission denied", str(locked / "new"))


def test_unreadable_and_missing(setup: Setup) -> None:
    """No read permission: named as such, never "create one"; a missing path is no
    repository, whose fix is `cairn init`."""
    subprocess.run(["chown", "-R", f"{NOBODY}:{NOBODY}", setup.repo], check=True)
    commands = [*readers(setup, setup.repo, setup.out), *writers(setup, setup.repo)]
    for result in batch(commands, unprivileged=True):
        line = one_line(result, "cannot read the repository", "permission")
        assert "init" not in line and "not a cairn repository" not in line
    missing = setup.base / "missing"
    for result in batch([*readers(setup, missing, setup.out), *writers(setup, missing)]):
        one_line(result, "not a cairn repository")


def test_full_disk_reads_and_refuses_backup(setup: Setup, tmp_path: Path) -> None:
    """No byte free (`tests/store/test_full_disk.py` shows delete and prune then work)."""
    fd = os.open(setup.base / "filler", os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1024 * 1024, 4096):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, bytes(size))
    finally:
        os.close(fd)
    results = batch([*readers(setup, setup.repo, tmp_path / "out"),
                     writers(setup, setup.repo)[0]])
    check_reads(setup, results[:READERS], tmp_path / "out")
    one_line(results[READERS], "no space left", "free at least")
