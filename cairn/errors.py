"""Typed errors: each class is its user message and its exit code at once.

One place (`cairn.cli.main`) turns a `CairnError` into the one-line message and the exit
status; code below the CLI raises these and never prints. `retryable` tells a caller (the
agent, the replication loop) whether trying again can help.
"""

from __future__ import annotations

import errno
import os

USAGE = 2
FAILURE = 1


class CairnError(Exception):
    """Base of every error a user may see; `str()` is the whole one-line message."""

    exit_code = FAILURE
    retryable = False


class UsageError(CairnError):
    """The request itself is wrong: a bad argument, an unknown name."""

    exit_code = USAGE


class NotARepository(UsageError):
    def __init__(self, path: str) -> None:
        super().__init__(
            f"{path} is not a cairn repository: create one with `cairn init --repo {path}`"
        )


class RepositoryUnreadable(CairnError):
    """The repository is there but this user cannot read it: never "create one" (that
    would start a second history beside the first)."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cannot read the repository at {path} ({reason}): run cairn as a "
                         "user who may read it (its owner, or root), or give this user read "
                         "permission on the whole folder")


class ReadOnlyRepository(CairnError):
    """The repository can be read but not written here (read-only media, or read
    permission only); reading commands still work."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"cannot write the repository at {path} ({why}): run this command "
                         "where it is writable (remount it read-write, or run as its owner); "
                         "points, restore, ls, cat, diff, verify and stats need only read "
                         "access")


class HostError(CairnError):
    """The operating system refused an operation (permissions, a read-only or failing
    device): the message names the file and what to do. Made by `from_os_error`."""


_OS_FIXES = {
    errno.EACCES: "run cairn as a user allowed to use it, or change its permissions",
    errno.EPERM: "run cairn as a user allowed to use it, or change its permissions",
    errno.EROFS: "it is on a read-only file system: choose a writable place, or remount "
                 "it read-write",
    errno.ENOENT: "check the path",
    errno.ENOTDIR: "check the path",
    errno.EIO: "the device failed: check it (`dmesg`) and copy what you need elsewhere",
}


def from_os_error(exc: OSError) -> CairnError:
    """One line for an error of the operating system that no code below handled."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return StorageFull(os.path.dirname(str(exc.filename or "")) or "the target")
    where = f" on {exc.filename}" if exc.filename else ""
    fix = _OS_FIXES.get(exc.errno or 0, "check the path and the device, then try again")
    return HostError(f"{(exc.strerror or str(exc)).lower()}{where}: {fix}")


class RepositoryExists(UsageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"{path} already holds a cairn repository: use it, or choose a new path")


class NotKnown(UsageError):
    """The request names an object that does not exist: 404 in the API and the console
    alike (one mapping, `cairn.appliance.errors.STATUS`), exit 2 on the command line."""


class UnknownPoint(UsageError):
    """``where``: the repository's location, when the reader may not know which it was."""

    def __init__(self, point: str, where: str | None = None) -> None:
        self.ref = point
        listing = f"`cairn points --repo {where}`" if where else "`cairn points`"
        super().__init__(
            f"no recovery point {point!r} in {where or 'this repository'}: {listing} lists them"
        )


class UnknownVolume(UsageError):
    def __init__(self, volume: str, where: str | None = None) -> None:
        self.ref = volume
        listing = f"`cairn points --repo {where}`" if where else "`cairn points`"
        super().__init__(f"no volume {volume!r} in {where or 'this repository'}: {listing} "
                         "lists them")


class SourceError(UsageError):
    """The thing to back up cannot be read as a volume."""


class DestinationError(CairnError):
    """The place to restore to cannot take the image."""


class Locked(CairnError):
    """Another process holds a lock we need; it names the holder."""

    retryable = True


class InUse(CairnError):
    """The object is needed by something else (a clone on a point, say)."""


class PointLocked(CairnError):
    """A point is locked (`cairn lock`) and its date has not come."""

    def __init__(self, point: str, until: float) -> None:
        import time

        day = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(until))
        super().__init__(f"point {point} is locked until {day}: it cannot be deleted, pruned "
                         "or unlocked before then")


class Corruption(CairnError):
    """Stored data does not match its hash or the catalog disagrees with the chunk store.
    ``digest`` names the damaged chunk when there is one."""

    digest: bytes | None = None


class MissingChunk(Corruption):
    pass


class DamagedPoint(Corruption):
    """A point's blocks cannot all be read; the message names them."""


class StorageFull(CairnError):
    def __init__(self, where: str, need: int = 0) -> None:
        amount = f"free at least {-(-need // (1024 * 1024))} MiB" if need > 0 else "free space"
        super().__init__(
            f"no space left on the device holding {where}: nothing committed was changed; "
            f"{amount} (`cairn delete` or `cairn prune` work on a full disk) and run the "
            "command again"
        )


class InsightsError(CairnError):
    """A file system inside a point cannot be read as asked."""


class PartitionTableError(InsightsError):
    """The partition table is present but damaged; the message names what failed."""


class UnknownFileSystem(InsightsError):
    """No supported file system signature where one was expected."""


class DamagedFileSystem(InsightsError):
    """A file system signature was found but the file system could not be read."""


class PathNotFound(InsightsError, UsageError):
    def __init__(self, path: str) -> None:
        super().__init__(f"no such file or directory in the point: {path}")


class UnsafePath(InsightsError):
    """Extraction refused a path that would land outside the target directory."""


class ToolMissing(CairnError):
    """A program cairn runs (QEMU, tesseract) is not installed on this host."""

    def __init__(self, program: str, package: str) -> None:
        super().__init__(f"{program} is not installed: install it with `apt-get install {package}`")


class VirtualMachineError(CairnError):
    """QEMU could not start or stopped answering; the message carries QEMU's own words."""


class ListenError(CairnError):
    """A server (the NBD export) could not bind its address."""

    def __init__(self, what: str, host: str, port: int, reason: str) -> None:
        super().__init__(
            f"cannot serve {what} on {host}:{port} ({reason}): choose another port or address"
        )


class ApplianceUnreachable(CairnError):
    """The appliance did not answer (network, restart): the agent retries, the CLI says so."""

    retryable = True


class ApplianceRefused(CairnError):
    """The appliance answered with an error; the message is the appliance's own words."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
        self.retryable = status in (409, 429, 502, 503, 504)


class CertificateMismatch(CairnError):
    """The appliance presented a certificate other than the one pinned at pairing."""


class NotPaired(UsageError):
    def __init__(self, config: str) -> None:
        super().__init__(f"this machine is not paired ({config} has no appliance): run "
                         "`cairn agent pair --appliance URL --token TOKEN` first")


class HookFailed(CairnError):
    """A pre-freeze or post-thaw hook failed or hung; the message carries its output."""


class S3Unreachable(CairnError):
    """No answer from the object store: a network or service problem that may pass."""

    retryable = True

    def __init__(self, endpoint: str, detail: str) -> None:
        super().__init__(
            f"cannot reach the S3 endpoint {endpoint} ({detail}): check the address and that "
            "the service runs, then try again"
        )


class S3AccessDenied(CairnError):
    def __init__(self, endpoint: str, bucket: str, code: str) -> None:
        super().__init__(
            f"{endpoint} refused access to bucket {bucket!r} ({code}): check the key pair "
            "(CAIRN_S3_ACCESS_KEY and CAIRN_S3_SECRET_KEY) and its rights on the bucket"
        )


class S3NoSuchBucket(CairnError):
    def __init__(self, endpoint: str, bucket: str) -> None:
        super().__init__(
            f"bucket {bucket!r} does not exist on {endpoint}: create it with "
            f"`aws --endpoint-url {endpoint} s3 mb s3://{bucket}`"
        )


class S3Error(CairnError):
    """Any other refusal by the object store; retryable when the server itself failed."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class UnknownPartition(InsightsError, UsageError):
    """A path named a partition the point does not have, or needs to name one."""


class MountError(InsightsError):
    """The FUSE mount could not be made or served; the message says why and what to do."""
