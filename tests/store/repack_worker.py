"""Child process of the repack tests: one repack, paused and killed on cue.

``python -m tests.store.repack_worker REPO GATE KILL_AT``: the repack copies its first
group of chunks, creates ``GATE.ready`` before committing them and waits for ``GATE.go``;
from then on it counts each storage step and SIGKILLs itself just before step ``KILL_AT``
(0: never), as `crash_worker` does for a backup. Groups are small (256 KiB), so a repack of
a few MiB commits several times. Prints the chunks moved and the steps taken.
"""

from __future__ import annotations

import sys
from pathlib import Path

from cairn.store import repack
from cairn.store.repository import Repository
from tests.store import crash_worker


def main(repo_path: str, gate: str, kill_at: int) -> None:
    crash_worker.instrument(Path(gate), kill_at)
    repack.SYNC_BYTES = 256 * 1024
    with Repository.open(Path(repo_path)) as repo:
        result = repack.repack(repo)
    print(result.moved_chunks, crash_worker.steps())


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
