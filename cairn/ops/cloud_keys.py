"""Keys of cloud repositories handed to the appliance with a request.

A VM of a point in a bucket whose key this node does not hold (an encrypted repository made
elsewhere, or an unencrypted one whose integrity key stayed on another node) is started
with that key: ``cairn vm start s3://B/P POINT --key-file K``, or ``key`` in
``POST /api/v1/vms``. The key travels as its file's line over the admin connection, never
as a path, since the CLI may run on another machine than the appliance. The appliance keeps
it in ``REPO/cloud-keys/`` (folder 0700, files 0600) under the key's id: the VM's runner
opens the bucket itself, and so do the stop that removes the VM's clones and a later start
of its kept clone. Keys are never uploaded.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import UsageError
from cairn.ops.offsite import local_key
from cairn.store.keys import key_text, parse_key

FOLDER = "cloud-keys"


@contextlib.contextmanager
def cloud_key(appliance_repo: Path, text: str | None, keep: bool = True
              ) -> Iterator[Path | None]:
    """The key file a cloud repository is opened with for a request: the key ``text``
    given (kept as above), else the appliance's own (``REPO/key``), else None (this node's
    integrity key of the repository). A key first kept here is taken back if the block
    fails (it did not open the repository, or the request was refused), or when it ends
    without ``keep`` (a request that only reads, such as listing the points)."""
    if text is None:
        yield local_key(appliance_repo)
        return
    path, new = _keep(appliance_repo, text)
    try:
        yield path
    except UsageError as exc:
        if new:
            path.unlink(missing_ok=True)
        if str(path) in str(exc):  # the kept file means nothing to whoever sent the line
            raise UsageError(str(exc).replace(str(path), "the key given")) from None
        raise
    except BaseException:
        if new:
            path.unlink(missing_ok=True)
        raise
    if new and not keep:
        path.unlink(missing_ok=True)


def _keep(appliance_repo: Path, text: str) -> tuple[Path, bool]:
    """Where the key in ``text`` is kept (a `UsageError` if it is none), and whether this
    call wrote it."""
    key = parse_key(text, "the key given")
    folder = appliance_repo / FOLDER
    folder.mkdir(mode=0o700, exist_ok=True)
    path = folder / f"{key.id}.key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path, False
    with os.fdopen(fd, "w") as f:
        f.write(key_text(key))
    return path, True
