"""A repository holds every byte of every machine: only its owner can read it, whatever
the umask it was made under."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cairn.store.repository import Repository
from tests.store.helpers import backup, make_image


def test_repository_is_private_under_an_open_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        repo = Repository.init(tmp_path / "repo")
        img = tmp_path / "img"
        make_image(img, 1024 * 1024, seed=3)
        backup(repo, "vol", img)
        repo.close()
    finally:
        os.umask(old)
    root = tmp_path / "repo"
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    exposed = [str(p) for p in root.rglob("*")
               if p.is_file() and stat.S_IMODE(p.stat().st_mode) & 0o077]
    assert not exposed, exposed
