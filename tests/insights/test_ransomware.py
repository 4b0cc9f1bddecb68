"""Ransomware detection on real ext4 images changed through a loop mount, as a machine changes.

One image goes through the churn a server sees (a package upgrade, log rotation, a database
rewritten, a compressed archive created, a random-data file rewritten in place): none of
those points may be flagged, neither by the cheap path every backup takes nor by the full
file scan. Then files are encrypted in place (some keeping their mtime), others encrypted
and renamed to one extension, and a ransom note is dropped: that point must be flagged,
kept by retention and alerted on; so must encrypted copies written to free blocks with the
originals deleted.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import shutil
import sqlite3
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from cairn.alerts import AlertStore
from cairn.insights.ransomware import examine
from cairn.store.repository import Repository
from tests.cli.test_cli import ok
from tests.insights.images import loop_mounted, make_ext4
from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3

WORDS = ["invoice", "customer", "order", "total", "shipping", "address", "account",
         "balance", "payment", "report", "quarter", "revenue", "meeting", "notes", "project",
         "schedule", "budget", "contract"]
LOGS = ("syslog", "auth.log", "kern.log", "daemon.log", "messages", "user.log")


def prose(rnd: random.Random, size: int) -> bytes:
    out = []
    while sum(map(len, out)) < size:
        out.append(" ".join(rnd.choice(WORDS) for _ in range(12)) + f" {rnd.randrange(10**6)}\n")
    return "".join(out).encode()[:size]


def binary_like(rnd: random.Random, size: int, version: int) -> bytes:
    """Structured, compressible bytes: what libraries and executables look like to zlib."""
    record = bytes(rnd.randrange(64) for _ in range(64)) + version.to_bytes(4, "little")
    return (record * (size // len(record) + 1))[:size]


def build_tree(root: Path) -> None:
    rnd = random.Random(7)
    for sub in ("docs", "var/log", "var/lib", "usr/lib/pkg", "usr/share/doc/pkg", "data",
                "many"):
        (root / sub).mkdir(parents=True)
    for i in range(60):
        (root / "docs" / f"report-{i:02}.txt").write_bytes(prose(rnd, 48 * 1024))
    for name in LOGS:
        (root / "var/log" / name).write_bytes(prose(rnd, 20 * 1024))
    for i in range(30):
        (root / "usr/lib/pkg" / f"lib{i}.so").write_bytes(binary_like(rnd, 40 * 1024, 1))
    (root / "usr/share/doc/pkg/changelog.gz").write_bytes(gzip.compress(prose(rnd, 200_000)))
    (root / "data/random.bin").write_bytes(rnd.randbytes(2 << 20))
    for i in range(300):
        (root / "many" / f"note-{i:03}.txt").write_bytes(prose(rnd, 2000))
    db = sqlite3.connect(root / "var/lib/app.db")
    db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
    db.executemany("INSERT INTO t(body) VALUES(?)",
                   [(prose(rnd, 300).decode(),) for _ in range(3000)])
    db.commit()
    db.close()


def package_upgrade(mnt: Path) -> None:
    """As dpkg does: each file written beside its old self, then renamed over it."""
    rnd = random.Random(2)
    for i in range(30):
        target = mnt / "usr/lib/pkg" / f"lib{i}.so"
        tmp = target.with_name(target.name + ".dpkg-new")
        tmp.write_bytes(binary_like(rnd, 44 * 1024, 2))
        tmp.rename(target)
    (mnt / "usr/share/doc/pkg/changelog.gz").write_bytes(gzip.compress(prose(rnd, 210_000)))
    (mnt / "usr/lib/pkg/lib29.so").unlink()
    (mnt / "usr/lib/pkg/libnew.so").write_bytes(binary_like(rnd, 40 * 1024, 3))


def log_rotation(mnt: Path) -> None:
    rnd = random.Random(3)
    for name in LOGS:
        log = mnt / "var/log" / name
        log.rename(log.with_name(name + ".1"))
        log.write_bytes(prose(rnd, 4096))
    for name in LOGS:  # a second rotation: .1 compressed to .2.gz
        one = mnt / "var/log" / f"{name}.1"
        (mnt / "var/log" / f"{name}.2.gz").write_bytes(gzip.compress(one.read_bytes()))
        (mnt / "var/log" / name).rename(one)
        (mnt / "var/log" / name).write_bytes(prose(rnd, 4096))


def database_rewrite(mnt: Path) -> None:
    rnd = random.Random(4)
    db = sqlite3.connect(mnt / "var/lib/app.db")
    db.execute("DELETE FROM t WHERE id % 3 = 0")
    db.executemany("INSERT INTO t(body) VALUES(?)",
                   [(prose(rnd, 300).decode(),) for _ in range(1500)])
    db.commit()
    db.execute("VACUUM")
    db.close()


def archive_created(mnt: Path) -> None:
    with tarfile.open(mnt / "data/docs-backup.tar.gz", "w:gz") as tar:
        tar.add(mnt / "docs", arcname="docs")


def random_rewritten(mnt: Path) -> None:
    with open(mnt / "data/random.bin", "r+b") as f:
        f.write(random.Random(5).randbytes(2 << 20))


def encrypt(path: Path, key: bytes) -> None:
    """In place, the way ransomware does it: same file, same size, ciphertext."""
    data = path.read_bytes()
    enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
    with open(path, "r+b") as f:
        f.write(enc.update(data) + enc.finalize())


def ransomware(mnt: Path) -> None:
    key = bytes(range(32))
    docs = sorted((mnt / "docs").iterdir())
    for i, path in enumerate(docs[:40]):
        before = path.stat()
        encrypt(path, key)
        if i % 2:  # half of them keep their old times, as careful ransomware does
            os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    for path in docs[40:52]:
        encrypt(path, key)
        path.rename(path.with_name(path.name + ".locked"))
    (mnt / "docs/HOW_TO_DECRYPT.txt").write_text("Your files are encrypted. Pay 1 BTC.\n")


def encrypted_copies(mnt: Path) -> None:
    """The other way ransomware works: encrypted copies written to free blocks under a new
    extension, then the originals deleted; no block that held a file is rewritten."""
    key = bytes(range(32))
    for path in sorted((mnt / "docs").iterdir())[:40]:
        enc = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        copy = path.with_name(path.name + ".crypt")
        copy.write_bytes(enc.update(path.read_bytes()) + enc.finalize())
        path.unlink()


def mass_deletion(mnt: Path) -> None:
    for path in sorted((mnt / "many").iterdir())[:260]:
        path.unlink()


CHURN: list[Callable[[Path], None]] = [package_upgrade, log_rotation, database_rewrite,
                                       archive_created, random_rewritten]


@pytest.fixture
def machine(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(repository, image, mountpoint) with a first point of the untouched image."""
    tree = tmp_path / "tree"
    build_tree(tree)
    image = make_ext4(tree, tmp_path / "disk.img", 64 * 1024 * 1024)
    shutil.rmtree(tree)
    repo = tmp_path / "repo"
    ok("init", "--repo", repo)
    backup(repo, image)
    return repo, image, tmp_path / "mnt"


def backup(repo: Path, image: Path) -> dict[str, object]:
    return dict(json.loads(ok("backup", "--repo", repo, "--volume", "srv-sda", image,
                              "--json")))


def test_normal_churn_is_not_flagged(machine: tuple[Path, Path, Path]) -> None:
    repo, image, mnt = machine
    made = {}
    for change in CHURN:
        with loop_mounted(image, mnt):
            change(mnt)
        made[change.__name__] = backup(repo, image)
        assert made[change.__name__]["flagged"] is False, made[change.__name__]
    assert not any(p["flagged"] for p in json.loads(ok("points", "--repo", repo, "--json")))
    store = Repository.open(repo)
    try:
        for name, point in made.items():  # the full file scan of each agrees
            finding = examine(store, store.resolve(str(point["point"])), deep=True)
            assert finding.scanned and finding.reasons == [], (name, finding.reasons)
    finally:
        store.close()


def test_encryption_in_place_renames_and_a_note_are_flagged_kept_and_alerted(
        machine: tuple[Path, Path, Path]) -> None:
    repo, image, mnt = machine
    with loop_mounted(image, mnt):
        log_rotation(mnt)
    backup(repo, image)
    with loop_mounted(image, mnt):
        ransomware(mnt)
    made = backup(repo, image)
    assert made["flagged"] is True
    reasons = " | ".join(map(str, made["flag_reasons"]))  # type: ignore[call-overload]
    assert "changed blocks turned incompressible" in reasons
    assert "files rewritten in place with high-entropy content" in reasons
    assert "renamed to the new extension .locked" in reasons
    assert "HOW_TO_DECRYPT.txt" in reasons
    listed = {p["id"]: p for p in json.loads(ok("points", "--repo", repo, "--json"))}
    assert listed[made["point"]]["flagged"] is True
    assert listed[made["point"]]["flag_reasons"] == made["flag_reasons"]

    backup(repo, image)  # the machine keeps running (encrypted): later points come
    pruned = json.loads(ok("prune", "--repo", repo, "--volume", "srv-sda", "--keep-last", "1",
                           "--json"))
    assert {"id": made["point"], "rules": ["flagged"]} in pruned["kept"]
    alerts = AlertStore(repo / "appliance.db")
    try:
        found = alerts.alerts(kind="ransomware")
    finally:
        alerts.close()
    assert [a.subject for a in found] == [made["point"]]
    assert found[0].severity == "critical" and "looks like ransomware" in found[0].message


def test_encrypted_copies_in_free_blocks_then_deleted_originals_are_flagged(
        machine: tuple[Path, Path, Path]) -> None:
    """No block turns incompressible (the copies land on empty blocks), so the block signal
    that opens the file scan is the share of changed blocks that are new incompressible data,
    against the volume's history; the scan then sees every original reappear encrypted
    under one new extension."""
    repo, image, mnt = machine
    with loop_mounted(image, mnt):
        log_rotation(mnt)
    backup(repo, image)
    with loop_mounted(image, mnt):
        encrypted_copies(mnt)
    made = backup(repo, image)
    assert made["flagged"] is True, made
    reasons = " | ".join(map(str, made["flag_reasons"]))  # type: ignore[call-overload]
    assert "changed blocks are new incompressible data" in reasons
    assert "40 files renamed to the new extension .crypt" in reasons


def test_mass_deletion_is_found_by_the_file_scan(machine: tuple[Path, Path, Path]) -> None:
    repo, image, mnt = machine
    with loop_mounted(image, mnt):
        mass_deletion(mnt)
    made = backup(repo, image)
    store = Repository.open(repo)
    try:
        finding = examine(store, store.resolve(str(made["point"])), deep=True)
    finally:
        store.close()
    assert any(r.startswith("mass deletion: 260 files removed") for r in finding.reasons)


def test_a_point_backed_up_straight_into_a_cloud_repository_is_examined_too(
        s3_server: SeaweedS3, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    build_tree(tree)
    image = make_ext4(tree, tmp_path / "disk.img", 64 * 1024 * 1024)
    shutil.rmtree(tree)
    cli = Cli(s3_server, tmp_path / "cache")
    url = f"s3://{s3_server.bucket}/ransomware-{tmp_path.name}"
    cli.ok("init", "--repo", url)
    cli.ok("backup", "--repo", url, "--volume", "srv-sda", image)
    with loop_mounted(image, tmp_path / "mnt"):
        ransomware(tmp_path / "mnt")
    made = cli.json("backup", "--repo", url, "--volume", "srv-sda", image)
    assert isinstance(made, dict) and made["flagged"] is True
    assert "HOW_TO_DECRYPT.txt" in " | ".join(made["flag_reasons"])
    listed = Cli(s3_server, tmp_path / "other-node").json("points", "--repo", url)
    assert isinstance(listed, list)
    assert [p["id"] for p in listed if p["flagged"]] == [made["point"]]  # in the bucket
