"""Guardrails at 3 a.m.: `restore` does not overwrite an existing file unless told to, and
`mount` refuses a folder that is not empty (the mount would hide what is there)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.cli.test_cli import ok
from tests.cli.test_repository_access import batch, one_line


def test_restore_keeps_existing_files_and_mount_wants_an_empty_folder(tmp_path: Path) -> None:
    repo, image = tmp_path / "repo", tmp_path / "disk.img"
    ok("init", "--repo", repo)
    subprocess.run(["mkfs.ext4", "-q", "-F", image, "4M"], check=True)
    ok("backup", "--repo", repo, "--volume", "v", image)
    precious, busy = tmp_path / "precious.img", tmp_path / "busy"
    precious.write_bytes(b"the only copy")
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    results = batch([["restore", "--repo", repo, "v@latest", precious],
                     ["restore", "--repo", repo, "v@latest", busy],
                     ["mount", "--repo", repo, "v@latest", busy],
                     ["restore", "--repo", repo, "v@latest", precious, "--force"]])
    one_line(results[0], "precious.img exists", "does not overwrite", "--force")
    one_line(results[1], "not empty", "--force")
    one_line(results[2], "busy is not empty", "hide")
    assert (busy / "notes.txt").read_text() == "mine"
    assert results[3]["code"] == 0, results[3]
    assert precious.read_bytes() == image.read_bytes()


def test_a_hard_link_named_twice_is_restored_as_one_file(tmp_path: Path) -> None:
    tree, image, repo = tmp_path / "tree", tmp_path / "disk.img", tmp_path / "repo"
    (tree / "a").mkdir(parents=True)
    (tree / "b").mkdir()
    (tree / "a" / "x").write_text("shared")
    (tree / "b" / "y").hardlink_to(tree / "a" / "x")
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", tree, image, "4M"], check=True)
    ok("init", "--repo", repo)
    ok("backup", "--repo", repo, "--volume", "v", image)
    out = tmp_path / "out"
    ok("restore-files", "--repo", repo, "v@latest", "/a/x", "/b/y", "--to", out)
    assert (out / "x").read_text() == "shared"
    assert (out / "x").stat().st_ino == (out / "y").stat().st_ino
