"""`cairn export` and clones, checked with real NBD clients (qemu-img, qemu-io, nbdinfo)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from cairn.ops.cache_budget import held
from cairn.store.reader import CACHE_BYTES
from tests.cli.test_cli import ROOT, cairn, ok, one_line_error
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
        yield export_url(line)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def export_url(line: str) -> str:
    """The URL `cairn export` prints: its export name is the secret a client needs."""
    found = re.search(r"nbds?://\S+", line)
    assert found is not None, line
    return found.group(0)


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=60)


def test_point_export_is_read_only_and_identical(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    img = tmp_path / "disk.img"
    make_image(img, 3 * 1024 * 1024, seed=1, fill=0.5)
    ok("backup", "--repo", repo, "--volume", "v", img)
    with exported(repo, "v@latest", "--cache", "8M") as url:
        for _ in range(2):  # the second read is served from the decoded-block cache
            assert run("qemu-img", "compare", "-f", "raw", img, url).returncode == 0
        info = run("nbdinfo", "--map", url)
        assert info.returncode == 0 and "hole" in info.stdout
        write = run("qemu-io", "-f", "raw", "-c", "write -P 1 0 4096", url)
        assert write.returncode != 0 or "not permitted" in write.stdout
        assert "Permission denied" in write.stderr or "not permitted" in write.stdout


def test_a_cache_size_that_is_not_a_size_is_refused(tmp_path: Path) -> None:
    bad = subprocess.run([sys.executable, "-m", "cairn", "export", "--repo", str(tmp_path),
                          "v@latest", "--cache", "lots"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert bad.returncode == 2 and "--cache" in bad.stderr and "not a size" in bad.stderr


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


def test_a_clone_read_by_hand_names_its_readers_alive_to_a_writer(tmp_path: Path) -> None:
    """A writer-to-be refused by readers names the one to stop; a SIGKILLed reader is
    neither named nor counted (its name file is found unlocked and removed)."""
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    make_image(tmp_path / "disk.img", 1024 * 1024, seed=3, fill=0.5)
    ok("backup", "--repo", repo, "--volume", "v", tmp_path / "disk.img")
    ok("clone", "--repo", repo, "v@latest", "--name", "sandbox")
    with exported(repo, "sandbox", "--read-only") as first, \
            exported(repo, "sandbox", "--read-only") as second:
        assert first != second
        readers = repo / "clones" / "sandbox" / "readers"
        pids = sorted(json.loads(f.read_text())["holder"].split("pid ")[1].rstrip(")")
                      for f in readers.glob("*.json"))
        both = cairn("clone-rm", "--repo", repo, "sandbox")
        assert both.returncode == 1 and "(and 1 other readers)" in both.stderr, both.stderr
        os.kill(int(pids[0]), signal.SIGKILL)
        one_line_error(cairn("clone-rm", "--repo", repo, "sandbox"), 1,
                       f"clone sandbox is in use by a read-only export (pid {pids[1]}), "
                       "which reads it: stop it first (Ctrl-C stops a `cairn export`")
        assert len(list(readers.glob("*.json"))) == 1  # the killed reader's: removed
    ok("clone-rm", "--repo", repo, "sandbox")


def test_export_needs_its_secret_name_and_tls_when_asked(tmp_path: Path) -> None:
    repo, img = tmp_path / "repo", tmp_path / "v.img"
    ok("init", "--repo", repo)
    make_image(img, 4 * 1024 * 1024, seed=7)
    ok("backup", "--repo", repo, "--volume", "v", img)
    with exported(repo, "v@latest") as url:
        name = url.rsplit("/", 1)[1]
        assert len(name) >= 24  # 18 random bytes: unguessable
        assert run("nbdinfo", url.rsplit("/", 1)[0]).returncode != 0  # the default name
        listing = run("nbdinfo", "--list", "--json", url)
        assert json.loads(listing.stdout)["exports"] == []  # and it is never listed
    with exported(repo, "v@latest", "--tls") as url:
        assert url.startswith("nbds://")
        plain = run("qemu-img", "compare", "-f", "raw", img, "nbd" + url[4:])
        assert plain.returncode != 0 and "TLS" in plain.stderr  # no byte in the clear
        certs = tmp_path / "certs"
        certs.mkdir()
        (certs / "ca-cert.pem").write_bytes((repo / "tls" / "cert.pem").read_bytes())
        secure = f"{url}?tls-certificates={certs}"
        copy = tmp_path / "copy.img"
        assert run("nbdcopy", secure, copy).returncode == 0
        assert copy.read_bytes() == img.read_bytes()


def test_export_off_loopback_without_tls_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    result = subprocess.run([sys.executable, "-m", "cairn", "export", "--repo", str(repo), "x",
                             "--nbd", "0.0.0.0:10809"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2 and "--tls" in result.stderr, result.stderr


def psk_file(path: Path, identity: str, key: bytes) -> Path:
    """A GnuTLS key file, as `psktool -u IDENTITY -p FILE` writes it."""
    path.write_text(f"{identity}:{key.hex()}\n")
    return path


def test_a_pre_shared_key_export_serves_only_clients_with_the_key(tmp_path: Path) -> None:
    repo, img = tmp_path / "repo", tmp_path / "v.img"
    ok("init", "--repo", repo)
    data = make_image(img, 2 * 1024 * 1024, seed=8)
    ok("backup", "--repo", repo, "--volume", "v", img)
    ok("clone", "--repo", repo, "v@latest", "--name", "diskless")
    keys = psk_file(tmp_path / "keys.psk", "pxe01", bytes(range(32)))
    qemu_keys = tmp_path / "qemu"
    qemu_keys.mkdir()
    psk_file(qemu_keys / "keys.psk", "pxe01", bytes(range(32)))
    wrong = psk_file(tmp_path / "wrong.psk", "pxe01", bytes(32))
    with exported(repo, "diskless", "--tls-psk", str(keys)) as url:
        assert url.startswith("nbds://pxe01@127.0.0.1:")
        copy = tmp_path / "copy.img"
        assert run("nbdcopy", f"{url}?tls-psk-file={keys}", copy).returncode == 0
        assert copy.read_bytes() == bytes(data)
        assert run("nbdinfo", f"{url}?tls-psk-file={wrong}").returncode != 0
        plain = run("qemu-img", "compare", "-f", "raw", img, "nbd://" + url.split("@", 1)[1])
        assert plain.returncode != 0 and "TLS" in plain.stderr, plain.stderr  # none in clear
        host_port, name = url.split("@", 1)[1].split("/", 1)
        port = host_port.rsplit(":", 1)[1]
        write = run("qemu-io", "--object", f"tls-creds-psk,id=psk0,endpoint=client,"
                    f"dir={qemu_keys},username=pxe01", "--image-opts",
                    f"driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},"
                    f"export={name},tls-creds=psk0", "-c", "write -P 0x55 1000 70000")
        assert write.returncode == 0, write.stderr
    data[1000:71000] = b"\x55" * 70000
    with exported(repo, "diskless") as url:  # what QEMU wrote stayed in the clone
        assert run("nbdcopy", url, copy).returncode == 0
        assert copy.read_bytes() == bytes(data)


def test_a_killed_pre_shared_key_exports_folder_goes_at_the_next_export(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> None:
    """Nothing can tidy up after a SIGKILL: the next export removes the killed one's
    folder (`cairn.scratch`), which never held a copy of the key, only a link to it."""
    repo, img = tmp_path / "repo", tmp_path / "v.img"
    # A TMPDIR of its own, short: the export's socket lives in it, and a unix socket's
    # path may not pass 107 bytes (pytest-xdist's tmp_path left too few of them).
    tmp = Path(tempfile.mkdtemp(prefix="psk-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(tmp, ignore_errors=True))
    monkeypatch.setenv("TMPDIR", str(tmp))
    ok("init", "--repo", repo)
    make_image(img, 1024 * 1024, seed=6)
    ok("backup", "--repo", repo, "--volume", "v", img)
    keys = psk_file(tmp_path / "keys.psk", "pxe01", bytes(range(32)))
    with exported(repo, "v@latest", "--tls-psk", str(keys)):
        [killed] = tmp.glob("cairn-psk-*")
        assert (killed / "keys.psk").is_symlink()
        assert (killed / "keys.psk").resolve() == keys.resolve()
        os.kill(int(killed.name.split("-")[2]), signal.SIGKILL)
    assert killed.is_dir()  # its process could not remove it
    with exported(repo, "v@latest", "--tls-psk", str(keys)):
        assert [p for p in tmp.glob("cairn-psk-*") if p != killed] != []
        assert not killed.exists()
    assert list(tmp.glob("cairn-psk-*")) == []  # stopped cleanly: removed its own


def test_a_temporary_folder_too_deep_for_a_socket_is_named_with_the_fix(tmp_path: Path) -> None:
    """A psk export serves through a unix socket in its temporary folder, whose path may not
    pass 107 bytes: a deep TMPDIR gets that problem named, not "choose another port"."""
    repo, img = tmp_path / "repo", tmp_path / "v.img"
    ok("init", "--repo", repo)
    make_image(img, 1024 * 1024, seed=4)
    ok("backup", "--repo", repo, "--volume", "v", img)
    keys = psk_file(tmp_path / "keys.psk", "pxe01", bytes(range(32)))
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    result = cairn("export", "--repo", repo, "v@latest", "--nbd", "127.0.0.1:0",
                   "--tls-psk", keys, env={"TMPDIR": str(deep)})
    one_line_error(result, 2, "may not pass 107", "set TMPDIR to a shorter folder")
    assert list(deep.iterdir()) == []  # its folder went with it


def test_a_bad_pre_shared_key_file_is_refused(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    img = tmp_path / "v.img"
    make_image(img, 1024 * 1024, seed=9)
    ok("backup", "--repo", repo, "--volume", "v", img)
    bad = tmp_path / "bad.psk"
    bad.write_text("pxe01 is not a key\n")
    for keys, words in ((bad, "not a pre-shared key file"), (tmp_path / "none", "cannot read")):
        result = subprocess.run([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                                 "v@latest", "--nbd", "0.0.0.0:0", "--tls-psk", str(keys)],
                                cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert result.returncode == 2 and words in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_exports_at_once_hold_their_shares_of_one_budget(tmp_path: Path) -> None:
    """Two real exports under one ledger: by default one holds what its point holds, the
    other what ``--cache`` asks; both shares are in the ledger while they run."""
    repo = tmp_path / "repo"
    ok("init", "--repo", str(repo))
    make_image(tmp_path / "img", 2 * 1024 * 1024, seed=5, fill=0.5)
    ok("backup", "--repo", str(repo), "--volume", "v", str(tmp_path / "img"))
    env = {**os.environ, "CAIRN_RUN_DIR": str(tmp_path / "run")}
    procs = [subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                               "v@latest", "--nbd", f"127.0.0.1:{free_port()}", "--json",
                               *extra], cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
             for extra in ((), ("--cache", "40M"))]
    try:
        shares = [json.loads(proc.stdout.readline())["exports"][0]["cache_bytes"]
                  for proc in procs if proc.stdout is not None]
        allocated = json.loads(ok("points", "--repo", str(repo), "--json"))[0]["allocated"]
        assert shares == [max(allocated, CACHE_BYTES), 40 * 1024 * 1024]
        assert sorted(held(tmp_path / "run" / "export-caches")) == sorted(shares)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)
    assert held(tmp_path / "run" / "export-caches") == []


_SYS_TGKILL = 234  # x86-64; the tests run there (QEMU/KVM)


def test_sigterm_delivered_to_a_server_thread_stops_the_export(tmp_path: Path) -> None:
    """The kernel hands a process's signal to any thread that does not block it; Python
    runs the handler only when the main thread runs. An export whose main thread waited on
    its stop event without a timeout ignored a SIGTERM that landed on a server thread (seen
    under load: `cairn export` never stopped). Here the signal is sent to such a thread."""
    repo, img = tmp_path / "repo", tmp_path / "v.img"
    ok("init", "--repo", repo)
    make_image(img, 1024 * 1024, seed=8)
    ok("backup", "--repo", repo, "--volume", "v", img)
    proc = subprocess.Popen([sys.executable, "-m", "cairn", "export", "--repo", str(repo),
                             "v@latest", "--nbd", f"127.0.0.1:{free_port()}"],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and "exporting" in proc.stdout.readline()
        threads = [int(t) for t in os.listdir(f"/proc/{proc.pid}/task") if int(t) != proc.pid]
        assert threads, "the export serves from threads of its own"
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.syscall(_SYS_TGKILL, proc.pid, threads[0], signal.SIGTERM) == 0
        assert proc.wait(timeout=10) == 0
        assert "export stopped" in proc.stdout.read()
    finally:
        proc.kill()
        proc.wait()
