"""Private temporary folders (sockets, logs, overlays, a key link) that a SIGKILL cannot
leave behind for long.

A process removes its folders when it ends, but a SIGKILL (a host's OOM killer, a test, an
admin) gives it no chance, and nothing else knows them. So each folder is named for the
process that made it (``PREFIX<pid>-XXXXXXXX``), and whoever makes the next one of that kind
first removes those whose process is dead: a killed VM's QEMU folder goes at the next VM,
a killed export's at the next export. An appliance that owns the process (a managed VM's
runner, an export) also names its folders in the process's status and removes them as soon
as it finds it gone (`remove`).

Every temporary folder cairn makes comes from here (`folder` for one removed when its work
ends, `make` for one that lives as long as its process), so none escapes the sweep; the one
exception is an appliance export's TMPDIR, made for a process that outlives its maker and
removed through its spec (`remove`). Folders too big for the temporary directory (a
converted image, a copy of the appliance's database) are made ``under`` the repository,
and swept there the same way.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cairn import pids


def make(prefix: str, under: Path | None = None) -> Path:
    """A new folder (mode 0700) of this process in ``under`` (default: the temporary
    directory), after sweeping dead ones of ``prefix`` there."""
    sweep(prefix, under)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=under))


@contextlib.contextmanager
def folder(prefix: str, under: Path | None = None) -> Iterator[Path]:
    """`make`, removed when the block ends; a SIGKILL leaves it to the next sweep."""
    made = make(prefix, under)
    try:
        yield made
    finally:
        shutil.rmtree(made, ignore_errors=True)


def sweep(prefix: str, under: Path | None = None) -> None:
    """Remove this user's folders of ``prefix`` in ``under`` whose process is dead."""
    named = re.compile(re.escape(prefix) + r"(\d+)-\w+")
    for left in Path(under or tempfile.gettempdir()).glob(f"{prefix}*"):
        found = named.fullmatch(left.name)
        if found and not pids.running(int(found.group(1))) and _ours(left):
            shutil.rmtree(left, ignore_errors=True)


def remove(folders: object, prefix: str) -> None:
    """Remove a dead owned process's folders, as its status names them. Only folders of
    the temporary directory whose names start with ``prefix``: a status file says which,
    but is no licence to remove anything else."""
    if not isinstance(folders, list):
        return
    tmp = os.path.realpath(tempfile.gettempdir())
    for named in map(Path, map(str, folders)):
        if os.path.realpath(named.parent) == tmp and named.name.startswith(prefix) \
                and not named.is_symlink():
            shutil.rmtree(named, ignore_errors=True)


def _ours(path: Path) -> bool:
    try:
        return not path.is_symlink() and path.stat().st_uid == os.getuid()
    except OSError:
        return False
