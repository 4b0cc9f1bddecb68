"""Space operations the API and the console start: a cloud repository's prune (or a dry
run that says what it would free), its conversion into packs, and a repack of the local
repository, each run as a task (`appliance.tasks`).

The work is the CLI's (`ops.cloud_space`, `ops.repack`); this module only says which
cloud repositories the appliance may touch (those its offsite policies send to, opened
with their endpoint and the local repository's key, as the offsite runs open them) and
starts the task. A cloud repository runs one such task at a time, the local one too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cairn.appliance.errors import NotFound
from cairn.appliance.offsite import OffsiteTable
from cairn.appliance.state import State
from cairn.appliance.tasks import Outcome, Task, Tasks
from cairn.ops.cloud_space import convert_cloud, convert_line, prune_cloud, prune_line
from cairn.ops.offsite import local_key
from cairn.ops.repack import repack_line, repack_repository
from cairn.store.repository import Repository

LOCAL = "repository"
"""the subject of a repack: the appliance's own repository"""


@dataclass(frozen=True)
class Target:
    """A cloud repository an offsite policy sends to."""

    url: str
    endpoint: str | None
    machines: tuple[str, ...]


def targets(state: State) -> list[Target]:
    """Every cloud repository the offsite policies send to, once each."""
    found: dict[tuple[str, str | None], list[str]] = {}
    for policy in OffsiteTable(state).policies():
        found.setdefault((policy.target, policy.endpoint), []).append(policy.machine)
    return [Target(url, endpoint, tuple(sorted(names)))
            for (url, endpoint), names in sorted(found.items(), key=lambda i: (i[0][0],
                                                                             i[0][1] or ""))]


@dataclass(frozen=True)
class Space:
    repo_path: Path
    state: State
    tasks: Tasks

    def target(self, url: str) -> Target:
        """The cloud repository ``url`` if an offsite policy sends there (`NotFound`)."""
        for found in targets(self.state):
            if found.url == url:
                return found
        raise NotFound(f"no offsite policy sends to {url!r}: space tasks run on the cloud "
                       "repositories the offsite policies name (`cairn offsite list`); "
                       "for another, run `cairn cloud prune|convert` on a host with its keys")

    def prune(self, url: str, dry_run: bool, user: str) -> Task:
        """Prune ``url`` (condemn, repack, delete a grace later), or say what it would."""
        target = self.target(url)

        def work(task: Task) -> Outcome:
            with self._open(target) as cloud:
                pruned = prune_cloud(cloud, dry_run, task.counting)
            return Outcome(prune_line(pruned), pruned.json())

        return self.tasks.start("cloud-prune-preview" if dry_run else "cloud-prune",
                                target.url, user, work)

    def convert(self, url: str, user: str) -> Task:
        """Move ``url``'s legacy one-object chunks into packs (resumable)."""
        target = self.target(url)

        def work(task: Task) -> Outcome:
            with self._open(target) as cloud:
                done = convert_cloud(cloud, task.progress)
            return Outcome(convert_line(done), done.json())

        return self.tasks.start("cloud-convert", target.url, user, work)

    def repack(self, volumes: list[str] | None, dry_run: bool, user: str) -> Task:
        """Gather the newest points' scattered blocks in the local repository."""
        def work(task: Task) -> Outcome:
            result = repack_repository(self.repo_path, volumes, dry_run, task.counting)
            return Outcome(repack_line(result, dry_run), result.to_json())

        return self.tasks.start("repack-preview" if dry_run else "repack", LOCAL, user, work)

    def _open(self, target: Target) -> Repository:
        from cairn.store.cloud import open_cloud

        return open_cloud(target.url, target.endpoint, local_key(self.repo_path))
