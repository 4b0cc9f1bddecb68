"""A commit retried after a crash finds its point instead of making a second one.

The appliance names each backup by its upload (``origin``); the store commits that name in
the point's own transaction. Here a real process is SIGKILLed just after the store's commit
(before its caller could record anything), and the retry with the same origin returns the
point that was committed, not a duplicate.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cairn.sources.image import ImageSource
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository
from tests.store.helpers import digest, make_image, restored_digest

ROOT = Path(__file__).resolve().parents[2]
KILLED_AFTER_COMMIT = """
import os, signal, sys
from pathlib import Path
from cairn.sources.image import ImageSource
from cairn.store.catalog import Catalog
from cairn.store.ingest import Ingest
from cairn.store.repository import Repository

def die(self, point_id):
    os.kill(os.getpid(), signal.SIGKILL)

Catalog.point = die  # the first thing after the commit: read the committed point back
repo = Repository.open(Path(sys.argv[1]))
with ImageSource(Path(sys.argv[2])) as src:
    Ingest(repo, "vol", src, origin="upload:7").run()
"""


def test_a_retried_commit_returns_the_committed_point(tmp_path: Path) -> None:
    path = tmp_path / "repo"
    Repository.init(path).close()
    img = tmp_path / "img"
    data = make_image(img, 1024 * 1024, seed=3)
    child = subprocess.run([sys.executable, "-c", KILLED_AFTER_COMMIT, str(path), str(img)],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert child.returncode == -9, child.stderr
    repo = Repository.open(path)
    try:
        [committed] = repo.catalog.points()
        with ImageSource(img) as src:
            again = Ingest(repo, "vol", src, origin="upload:7").run()
        assert again.id == committed.id and len(repo.catalog.points()) == 1
        with ImageSource(img) as src:
            other = Ingest(repo, "vol", src, origin="upload:8").run()
        assert other.id != committed.id and len(repo.catalog.points()) == 2
        assert restored_digest(repo, again, tmp_path / "out") == digest(data)
    finally:
        repo.close()
