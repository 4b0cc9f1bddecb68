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
