"""`cairn export` and clones, checked with real NBD clients (qemu-img, qemu-io, nbdinfo)."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.cli.test_cli import ROOT, ok
from tests.store.helpers import make_image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def exported(repo: Path, target: str, *extra: str) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                             target, "--nbd", f"127.0.0.1:{port}", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "exporting" in line, line + (proc.stderr.read() if proc.stderr else "")
        yield f"nbd://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)


def test_point_export_is_read_only_and_identical(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    img = tmp_path / "disk.img"
    make_image(img, 3 * 1024 * 1024, seed=1, fill=0.5)
    ok("backup", "--repo", repo, "--volume", "v", img)
    with exported(repo, "v@latest") as url:
        assert run("qemu-img", "compare", "-f", "raw", img, url).returncode == 0
        info = run("nbdinfo", "--map", url)
        assert info.returncode == 0 and "hole" in info.stdout
        write = run("qemu-io", "-f", "raw", "-c", "write -P 1 0 4096", url)
        assert write.returncode != 0 or "not permitted" in write.stdout
        assert "Permission denied" in write.stderr or "not permitted" in write.stdout


def test_clone_export_takes_writes_and_point_stays(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    img = tmp_path / "disk.img"
    data = make_image(img, 2 * 1024 * 1024, seed=2, fill=0.7)
    ok("backup", "--repo", repo, "--volume", "v", img)
    ok("clone", "--repo", repo, "v@latest", "--name", "sandbox")
    with exported(repo, "sandbox") as url:
        assert run("qemu-io", "-f", "raw", "-c", "write -P 0x55 1000 70000", url).returncode == 0
        changed = bytearray(data)
        changed[1000:71000] = b"\x55" * 70000
        (tmp_path / "want.img").write_bytes(changed)
        assert run("qemu-img", "compare", "-f", "raw", "-F", "raw", tmp_path / "want.img",
                   url).returncode == 0
    out = tmp_path / "point.img"
    ok("restore", "--repo", repo, "v@latest", out)
    assert out.read_bytes() == bytes(data)
    ok("clone-rm", "--repo", repo, "sandbox")
    assert "sandbox" not in ok("clones", "--repo", repo)
