"""Child process of the torture test: random backups, deletes and prunes, until killed.

Every backup reads a fresh, never-modified state file, and the point records that path as
its source, so after a kill the parent knows what each committed point must restore to.
It says ``ready`` once the repository is open and ``committed`` after its first backup, so
the parent's random delay runs from there, not from an interpreter start that a loaded
machine can stretch past the whole delay.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from cairn.store.delete import delete_points
from cairn.store.repository import Repository
from cairn.store.retention import Policy, select
from tests.store.helpers import backup, make_image, mutate


def main(repo_path: str, work: str, seed: int) -> None:
    rnd = random.Random(seed)
    repo = Repository.open(Path(repo_path))
    folder = Path(work)
    images: dict[str, bytearray] = {}
    print("ready", flush=True)
    for step in range(10_000):
        op = rnd.random()
        volume = rnd.choice(["alpha", "beta"])
        if op < 0.6 or volume not in images:
            state = folder / f"{volume}-{seed}-{step}.img"
            if volume not in images:
                images[volume] = make_image(state, rnd.choice([1, 2]) * 1024 * 1024 + 4096,
                                            seed=rnd.randrange(1 << 30))
            else:
                mutate(state, images[volume], seed=rnd.randrange(1 << 30),
                       writes=rnd.randrange(1, 8))
            backup(repo, volume, state)
            if step == 0:
                print("committed", flush=True)
        elif op < 0.85:
            points = repo.catalog.points()
            if points:
                delete_points(repo, [rnd.choice(points)])
        else:
            found = repo.catalog.volume(volume)
            if found is not None:
                points = repo.catalog.points(found.id)
                keep = select(points, Policy(last=rnd.randrange(1, 4)))
                delete_points(repo, [p for p in points if p.id not in keep])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
