"""Private temporary folders (sockets, logs, overlays, a key link) that a SIGKILL cannot
leave behind for long.

A process removes its folders when it ends, but a SIGKILL (a host's OOM killer, a test, an
admin) gives it no chance, and nothing else knows them. So each folder is named for the
process that made it (``PREFIX<pid>-XXXXXXXX``), and whoever makes the next one of that kind
first removes those whose process is dead: a killed VM's QEMU folder goes at the next VM,
a killed export's at the next export. An appliance that owns the process (a managed VM's
runner, an export) also names its folders in the process's status and removes them as soon
as it finds it gone (`remove`).
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from cairn import pids


def make(prefix: str) -> Path:
    """A new folder (mode 0700) of this process, after sweeping dead ones of ``prefix``."""
    sweep(prefix)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-"))


def sweep(prefix: str) -> None:
    """Remove this user's folders of ``prefix`` whose process is dead."""
    named = re.compile(re.escape(prefix) + r"(\d+)-\w+")
    for folder in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        found = named.fullmatch(folder.name)
        if found and not pids.running(int(found.group(1))) and _ours(folder):
            shutil.rmtree(folder, ignore_errors=True)


def remove(folders: object, prefix: str) -> None:
    """Remove a dead owned process's folders, as its status names them. Only folders of
    the temporary directory whose names start with ``prefix``: a status file says which,
    but is no licence to remove anything else."""
    if not isinstance(folders, list):
        return
    tmp = os.path.realpath(tempfile.gettempdir())
    for folder in map(Path, map(str, folders)):
        if os.path.realpath(folder.parent) == tmp and folder.name.startswith(prefix) \
                and not folder.is_symlink():
            shutil.rmtree(folder, ignore_errors=True)


def _ours(folder: Path) -> bool:
    try:
        return not folder.is_symlink() and folder.stat().st_uid == os.getuid()
    except OSError:
        return False
