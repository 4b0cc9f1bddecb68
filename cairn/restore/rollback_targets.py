"""What a rollback asked for over the network may write on the appliance host.

`cairn rollback` is run by root on the host, who may write anything anyway. The REST API
is reached with an admin token, which must not become root on the host: without limits a
rollback could overwrite ``/etc/shadow``, the repository's own files or the root disk. So
a rollback through the API is confined by a `TargetPolicy`:

- a block device only if it is not mounted, none of its partitions is, nothing holds it
  (device mapper, RAID) and it is not under the appliance's repository or root file system;
- an image file only if it lies in one of the configured ``[rollback] image_dirs`` (none by
  default, so image files are refused until an operator names the folders) and has no
  other hard link (a link could name any file of that file system);
- never anything inside the repository.

The target is judged by what was actually opened (``/proc/self/fd``), after every symlink
is resolved, so a symlink cannot lead the write elsewhere, not even by being swapped
between the check and the open.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from cairn.errors import DestinationError

_MOUNTINFO = Path("/proc/self/mountinfo")
_SYS_DEV = Path("/sys/dev/block")
_SYS_CLASS = Path("/sys/class/block")


@dataclass(frozen=True)
class TargetPolicy:
    """The confinement of an API rollback: the repository it must never write, and the
    folders image files may be rolled back in (empty: image files are refused)."""

    repository: Path
    image_dirs: tuple[Path, ...] = ()


def check_target(target: Path, fd: int, policy: TargetPolicy) -> None:
    """Refuse, with one line, an opened ``target`` that ``policy`` does not allow."""
    check_file(target, Path(os.readlink(f"/proc/self/fd/{fd}")), os.fstat(fd), policy)


def check_file(target: Path, real: Path, st: os.stat_result, policy: TargetPolicy) -> None:
    """Refuse ``target``, the file at ``real`` (no symlink in it) with status ``st``, if
    ``policy`` does not allow it."""
    repo = Path(os.path.realpath(policy.repository))
    if real.is_relative_to(repo):
        raise DestinationError(f"{target} is inside the repository {repo}: a rollback never "
                               "writes the repository; name another disk or image")
    if stat.S_ISBLK(st.st_mode):
        _check_device(target, st.st_rdev, repo)
    else:
        _check_image(target, real, st, policy.image_dirs)


def _check_image(target: Path, real: Path, st: os.stat_result,
                 image_dirs: tuple[Path, ...]) -> None:
    if not image_dirs:
        raise DestinationError(f"{target}: image files are refused over the API until "
                               "[rollback] image_dirs in the appliance config names their "
                               "folders; or run `cairn rollback` on the host")
    dirs = [Path(os.path.realpath(d)) for d in image_dirs]
    if not any(real.is_relative_to(d) for d in dirs):
        raise DestinationError(f"{target} is outside [rollback] image_dirs "
                               f"({', '.join(map(str, dirs))}): move the image into one "
                               "or run `cairn rollback` on the host")
    if st.st_nlink > 1:
        raise DestinationError(f"{target} has {st.st_nlink - 1} other hard link(s), which "
                               "may be outside [rollback] image_dirs: copy it to a file of "
                               "its own")


def _check_device(target: Path, device: int, repo: Path) -> None:
    own = _under({os.stat(repo).st_dev, os.stat("/").st_dev})
    if device in own:
        raise DestinationError(f"{target} holds the appliance's repository or root file "
                               "system: roll back onto another disk")
    if device in _under(_mounted()):
        raise DestinationError(f"{target} is mounted, has a mounted partition or backs a "
                               "mounted device: unmount it first")
    holders = _holders(device)
    if holders:
        raise DestinationError(f"{target} is held by {', '.join(holders)}: stop what holds "
                               "it (device mapper, RAID) first")


def _mounted() -> set[int]:
    """The devices of every mounted file system (``major:minor``, the third field)."""
    devices = set()
    for line in _MOUNTINFO.read_text().splitlines():
        major, minor = line.split()[2].split(":")
        devices.add(os.makedev(int(major), int(minor)))
    return devices


def _under(devices: set[int]) -> set[int]:
    """``devices`` and all they are built on: the devices they sit on (``slaves``) and the
    whole disk of a partition, transitively: writing any of those writes them."""
    seen: set[int] = set()
    todo = list(devices)
    while todo:
        device = todo.pop()
        if device in seen:
            continue
        seen.add(device)
        sysdir = _sysdir(device)
        if sysdir is None:
            continue
        if (sysdir / "partition").exists():
            todo.extend(_devno(sysdir.parent))
        slaves = sysdir / "slaves"
        if slaves.is_dir():
            for name in os.listdir(slaves):
                todo.extend(_devno(_SYS_CLASS / name))
    return seen


def _holders(device: int) -> list[str]:
    sysdir = _sysdir(device)
    holders = sysdir / "holders" if sysdir else None
    return sorted(os.listdir(holders)) if holders and holders.is_dir() else []


def _sysdir(device: int) -> Path | None:
    path = _SYS_DEV / f"{os.major(device)}:{os.minor(device)}"
    return path.resolve() if path.exists() else None


def _devno(sysdir: Path) -> list[int]:
    try:
        major, minor = (sysdir / "dev").read_text().strip().split(":")
    except (OSError, ValueError):
        return []
    return [os.makedev(int(major), int(minor))]
