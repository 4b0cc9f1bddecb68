"""`cairn serve --recover-from s3://B/P`: a new appliance from its bucket alone.

Given an empty repository folder and the key that opens the bucket (the repository key, or
the integrity key of an unencrypted one), recovery reads the appliance state the old
appliance kept in the bucket (`state_backup`), and writes:
- a local repository with the same block size and, when encrypted, the same key (so
  replication to the bucket goes on sending chunks as they are);
- ``appliance.db`` as it was (machines, agent token hashes, schedules, offsite, verification
  and alert settings), with uploads in flight dropped and running jobs requeued by `serve`;
- the TLS key and certificate, so agents keep their pinned certificate and their tokens;
- the ``admin-token`` file, so the admin token (and every ``cairn tokens add`` token, whose
  hashes are in ``appliance.db``) works as before;
- the newest point of each volume, pulled from the bucket (`replication.pull`), so each
  agent's next backup finds its parent and sends only what changed.
Every point the bucket holds stays readable there (restore, verify, boot with ``--repo
s3://...``). Nothing is written unless the state opens with the key given.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
from pathlib import Path

from cairn import logs
from cairn.appliance.state import State
from cairn.appliance.state_backup import FILES, fetch, unseal
from cairn.errors import UsageError
from cairn.replication.pull import pull_point
from cairn.store.keys import integrity_key_path, read_key_file
from cairn.store.repository import Repository


def recover(repo: Path, url: str, endpoint: str | None, key_file: Path | None) -> int:
    """Build the appliance in ``repo`` from ``url``; returns the number of points pulled."""
    from cairn.store.cloud import open_cloud

    if repo.exists() and any(repo.iterdir()):
        raise UsageError(f"{repo} is not empty: recover into a new or empty folder")
    with open_cloud(url, endpoint, key_file) as cloud:
        blob = fetch(url, endpoint)
        key_path = key_file or integrity_key_path(cloud.config.id)
        key = read_key_file(key_path)
        state = unseal(blob, key.secret, url)
        with Repository.init(repo, state["block_size"],
                             key_file=key_path if key.encrypts else None) as local:
            _write_files(repo, state["files"])
            with contextlib.closing(State(repo / "appliance.db")) as appliance:
                appliance.abort_open_uploads()
            pulled = 0
            for volume in cloud.catalog.volumes():
                newest = cloud.catalog.latest(volume.id)
                if newest is not None:
                    pull_point(cloud, local, newest)
                    pulled += 1
        if not key.encrypts and key_file is not None:
            target = integrity_key_path(cloud.config.id)
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(key_file, target)
                os.chmod(target, 0o600)
    logs.event("appliance.recovered", source=url, points=pulled)
    return pulled


def _write_files(repo: Path, files: dict[str, str]) -> None:
    for name, data in files.items():
        if name not in ("appliance.db", *FILES):
            continue  # only what recovery knows; a bundle cannot write elsewhere
        path = repo / name
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64decode(data))
