"""A repository: a config, a catalog and a chunk store, opened together.

The folder's whole layout (format version 1), each part with its owning module, is the
table "The repository folder" in README.md. A `Repository` is a context manager: every
command opens it in a ``with`` block, so its catalog and backend are closed.

Locking: a writer of a volume (backup, delete, prune) holds that volume's lock, so one
volume never has two writers. Backups also hold the chunk lock shared; unlinking freed
chunks takes it exclusively, so a backup that just decided to reuse a chunk never sees it
vanish. Readers (restore, export) take no lock: a committed point never changes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Protocol

from cairn.errors import (
    Corruption,
    Locked,
    NotARepository,
    ReadOnlyRepository,
    RepositoryExists,
    RepositoryUnreadable,
    UnknownPoint,
    UnknownVolume,
    UsageError,
)
from cairn.store import reserve
from cairn.store.backend import Backend
from cairn.store.backends.local import LocalBackend
from cairn.store.backends.packs import PackBackend
from cairn.store.blockmap import FANOUT, NodeCache, Tree
from cairn.store.catalog import Catalog, RecoveryPoint, Volume
from cairn.store.chunks import HASH_SIZE, ChunkStore, key_id
from cairn.store.keys import read_key_file, write_key_file
from cairn.store.locks import FileLock

MAGIC = "cairn-repository"
VERSION = 1
DEFAULT_BLOCK_SIZE = 64 * 1024
_VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class RepositoryConfig:
    id: str
    block_size: int = DEFAULT_BLOCK_SIZE
    compression_level: int = 1
    magic: str = MAGIC
    version: int = VERSION
    key_id: str | None = None
    integrity_id: str | None = None
    """Id of the integrity key of an unencrypted cloud repository (see `keys`)."""
    layout: str = "files"
    """How a local repository keeps chunks: "packs" (new repositories) or "files"."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, raw: object, where: str) -> RepositoryConfig:
        if not isinstance(raw, dict) or raw.get("magic") != MAGIC:
            raise NotARepository(where)
        if raw.get("version") != VERSION:
            raise UsageError(f"{where} is a cairn repository of format version "
                             f"{raw.get('version')}; this cairn reads version {VERSION}: "
                             "upgrade cairn")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in known})


def local_backend(path: Path, config: RepositoryConfig, read_only: bool = False) -> Backend:
    if config.layout == "packs":
        return PackBackend(path, read_only)
    return LocalBackend(path, read_only)


def read_config(path: Path) -> RepositoryConfig:
    """The config of the repository at ``path``. Only a folder with no config at all is
    "not a repository": one this user cannot read, or whose config is damaged, is said to
    be so, never answered with "create one" (a second history beside the first)."""
    where = str(path)
    try:
        text = (path / "config.json").read_text()
    except (FileNotFoundError, NotADirectoryError):
        raise NotARepository(where) from None
    except OSError as exc:
        raise RepositoryUnreadable(where, exc.strerror or str(exc)) from None
    try:
        raw = json.loads(text)
    except ValueError:
        raise Corruption(f"{where}/config.json is damaged (not JSON): put back a copy of it "
                         "from a replica or backup of the repository; do not run `cairn "
                         "init` over it") from None
    return RepositoryConfig.from_json(raw, where)


def check_access(path: Path, read_only: bool) -> None:
    """Refuse, naming the problem and the fix, a repository this user cannot read, or
    cannot write when the command writes (SQLite would only say "unable to open database
    file" or "attempt to write a readonly database")."""
    files = [path / "catalog.db", *[p for p in (path / "packs.db",) if p.exists()]]
    for f in files:
        if not os.access(f, os.R_OK):
            raise RepositoryUnreadable(str(path), f"permission denied on {f.name}")
    if read_only:
        return
    for f in [path, *files]:
        if not os.access(f, os.W_OK):
            rofs = os.statvfs(path).f_flag & os.ST_RDONLY
            raise ReadOnlyRepository(str(path), "a read-only file system" if rofs
                                     else f"this user may not write {f.name}")


def check_block_size(block_size: int) -> int:
    if block_size < 4096 or block_size & (block_size - 1):
        raise UsageError(f"block size {block_size} must be a power of two of 4096 or more")
    return block_size


def load_key(config: RepositoryConfig, key_file: Path | None, where: str) -> bytes | None:
    """The encryption key from ``key_file``, checked against the config's key id."""
    if config.key_id is None:
        return None
    if key_file is None:
        raise UsageError(f"{where} is encrypted: pass --key-file (or set CAIRN_KEY_FILE) "
                         "to the key it was created with")
    key = read_key(key_file)
    if key_id(key) != config.key_id:
        raise UsageError(f"{key_file} is not the key of {where}: give the key file it was "
                         "created with")
    return key


def read_key(key_file: Path) -> bytes:
    """An encryption key; an integrity key is refused, since nothing would be encrypted."""
    key = read_key_file(key_file)
    if not key.encrypts:
        raise UsageError(f"{key_file} is an integrity key, not an encryption key: give the "
                         "key file `cairn init --encrypt` wrote")
    return key.secret


def max_chunk_size(block_size: int) -> int:
    """The largest plain chunk a repository holds: a block, or a block-map node."""
    return max(block_size, FANOUT * HASH_SIZE)


def private_folder(path: Path) -> None:
    """Create ``path`` readable by its owner only, whatever the umask: a repository holds
    every byte of every protected machine."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def check_volume_name(name: str) -> str:
    if not _VOLUME_NAME.match(name):
        raise UsageError(f"invalid volume name {name!r}: use letters, digits, '.', '_' and '-' "
                         "(up to 128, starting with a letter or digit), e.g. web01-sda")
    return name


class Remote(Protocol):
    """What a repository whose truth lives elsewhere (a cloud bucket) adds to writing.

    The local catalog of such a repository is a cache: ``publish`` makes a point exist
    (before the catalog learns it), ``unpublish`` makes one stop existing, ``prepare``
    brings the cache up to date before a write. No lock is held over the remote, so no
    writer unlinks chunks there: freeing space is the remote's own prune.
    """

    def prepare(self, repo: Repository) -> None: ...

    def sync(self, repo: Repository, full: bool = False) -> bool: ...

    def publish(self, point: RecoveryPoint) -> float | None: ...

    def unpublish(self, point: RecoveryPoint) -> None: ...


def tolerant_nodes(repo: Repository) -> NodeCache:
    """Block-map nodes where a damaged or missing node reads as having no children: for
    walks that must go on past damage (verify naming hurt points, a delete's recount)."""

    def fetch(digest: bytes) -> bytes:
        try:
            return repo.chunks.get(digest)
        except Corruption:
            return b""

    return NodeCache(fetch, tolerant=True)


class Repository:
    """A config, a catalog, a chunk store over a backend, and (for clouds) a `Remote`.

    ``path`` is the local working folder: the repository itself when local, a rebuildable
    cache folder when the chunks live in a bucket.
    """

    def __init__(self, location: str, path: Path, config: RepositoryConfig, backend: Backend,
                 key: bytes | None = None, remote: Remote | None = None) -> None:
        self.location = location
        self.path = path
        self.config = config
        self.block_size = config.block_size
        self.read_only: bool = getattr(backend, "read_only", False)
        """Opened for reading only (`Repository.open`): nothing here is written."""
        if not self.read_only:
            (path / "locks").mkdir(parents=True, exist_ok=True)
        self.catalog = Catalog(path / "catalog.db", self.read_only)
        self.chunks = ChunkStore(backend, level=config.compression_level, key=key,
                                 max_size=max_chunk_size(config.block_size))
        self.chunks.on_damage = self.catalog.note_bad
        self.nodes = NodeCache(self.chunks.get, fetch_many=self.chunks.get_many)
        self.remote = remote
        self.lock_wait = 0.0
        """Seconds a writer waits for a volume held by another (`--wait`); 0: fail at once."""
        self.on_wait: Callable[[str], None] | None = None
        """Told once who a writer is waiting for."""

    @classmethod
    def init(cls, path: Path, block_size: int = DEFAULT_BLOCK_SIZE,
             encrypt: bool = False, key_file: Path | None = None) -> Repository:
        """A new local repository; with ``encrypt`` a new key is written to ``<path>/key``,
        with ``key_file`` that existing encryption key is (an appliance rebuilt from its
        bucket keeps the key its chunks are encrypted with)."""
        if (path / "config.json").exists():
            raise RepositoryExists(str(path))
        if path.exists() and any(path.iterdir()):
            raise UsageError(f"{path} exists and is not empty: give a new or empty directory")
        check_block_size(block_size)
        private_folder(path)
        if key_file is not None:
            key = _adopt_key(key_file, path / "key")
        else:
            key = write_key_file(path / "key", encrypts=True).secret if encrypt else None
        config = RepositoryConfig(id=os.urandom(16).hex(), block_size=block_size,
                                  key_id=key_id(key) if key else None, layout="packs")
        Catalog.create(path / "catalog.db").close()
        tmp = path / "config.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(config.to_json())
        tmp.rename(path / "config.json")
        return cls(str(path), path, config, local_backend(path, config), key)

    @classmethod
    def open(cls, path: Path, key_file: Path | None = None,
             read_only: bool = False) -> Repository:
        """``read_only``: for commands that only read (points, restore, ls, verify): works
        on read-only media and with read permission only, and writes nothing at all."""
        config = read_config(path)
        if not (path / "catalog.db").exists():
            raise NotARepository(str(path))
        check_access(path, read_only)
        if key_file is None and (path / "key").exists():
            key_file = path / "key"
        key = load_key(config, key_file, str(path))
        if not read_only:
            reserve.keep(path)
        return cls(str(path), path, config, local_backend(path, config, read_only), key)

    def publish(self, point: RecoveryPoint) -> None:
        """Called just before ``point`` is committed to the catalog."""
        if self.remote is not None:
            self.remote.publish(point)

    def unpublish(self, point: RecoveryPoint) -> None:
        """Called just before ``point`` is deleted from the catalog."""
        if self.remote is not None:
            self.remote.unpublish(point)

    def close(self) -> None:
        self.record_damage()
        self.chunks.backend.close()
        self.catalog.close()

    def record_damage(self) -> None:
        """Quarantine the damage reads met that could not be recorded when found (the
        catalog was busy, or the disk full); kept for later if it still cannot be."""
        found = self.chunks.take_damage()
        if found and not self.catalog.note_bad(found):
            self.chunks.keep_damage(found)

    def __enter__(self) -> Repository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- names ---------------------------------------------------------------------------

    def tree(self, point: RecoveryPoint) -> Tree:
        return Tree(point.root, -(-point.size // self.block_size))

    def volume(self, name: str) -> Volume:
        volume = self.catalog.volume(name)
        if volume is None:
            raise UnknownVolume(name)
        return volume

    def resolve(self, ref: str) -> RecoveryPoint:
        """A point from its id, a unique id prefix, or ``VOLUME@latest`` (the newest point
        not deleted: a held point is named only by its id)."""
        if ref.endswith("@latest"):
            from cairn.store.marks import live_points

            live = live_points(self, self.volume(ref[: -len("@latest")]).id)
            if not live:
                raise UnknownPoint(ref)
            return max(live, key=lambda p: p.seq)
        point = self.catalog.point(ref)
        if point is not None:
            return point
        matches = self.catalog.points_with_prefix(ref) if len(ref) >= 4 else []
        if len(matches) > 1:
            raise UsageError(f"point prefix {ref!r} is ambiguous ({', '.join(matches[:4])}): "
                             "give more characters")
        if not matches:
            raise UnknownPoint(ref)
        point = self.catalog.point(matches[0])
        assert point is not None
        return point

    @staticmethod
    def new_point_id() -> str:
        return os.urandom(6).hex()

    # -- locks and recovery --------------------------------------------------------------

    def volume_lock(self, volume: Volume) -> ExitStack:
        """The right to write ``volume`` (on this host); a cloud repository's cache is
        brought up to date with the bucket, where no lock is taken (`cloud`)."""
        stack = ExitStack()
        stack.enter_context(FileLock(self.path / "locks" / f"volume-{volume.name}.lock",
                                     f"volume {volume.name}").acquire(
            wait=self.lock_wait, notify=self.on_wait))
        if self.remote is not None:
            try:
                self.remote.prepare(self)
            except BaseException:
                stack.close()
                raise
        return stack

    def chunk_lock(self) -> FileLock:
        """Held shared by backups while they may reuse chunks; see module docstring."""
        return FileLock(self.path / "locks" / "chunks.lock", "chunk store").acquire(
            shared=True, wait=True)

    def recover(self, volume: Volume) -> None:
        """Undo what killed writers of ``volume`` left: their pins become free space.

        Call with the volume's lock held: then no live process has a session on it.
        """
        for session in self.catalog.dead_sessions(volume.id):
            self.drop_session(session)
        self.chunks.backend.recover()
        self.reclaim()

    def drop_session(self, session: int) -> None:
        """Give back what a session that will never commit wrote.

        Its chunk files go first, straight from its pins, and only then the catalog rows:
        when the disk is full the catalog cannot take a transaction until space is freed.
        Call without holding the chunk lock.
        """
        try:
            lock = FileLock(self.path / "locks" / "chunks.lock", "chunk store").acquire()
        except Locked:
            lock = None
        if lock is not None:
            with lock:
                for digest in self.catalog.unclaimed_pins(session):
                    self.chunks.delete(digest)
        self.catalog.abandon_session(session)

    def reclaim(self) -> int:
        """Delete the chunk files the catalog freed; returns how many.

        Runs only when no backup holds the chunk lock (it never waits): what it skips stays
        queued in ``pending_free`` for the next writer, never lost and never leaked. On a
        cloud repository nothing is unlinked and the queue is dropped: another node may be
        about to publish a point that reuses those chunks; the cloud's prune frees them.
        """
        if self.remote is not None:
            with self.catalog.transaction():
                self.catalog.forget_pending(self.catalog.pending_free())
            return 0
        try:
            lock = FileLock(self.path / "locks" / "chunks.lock", "chunk store").acquire()
        except Locked:
            return 0
        with lock:
            pending = self.catalog.pending_free()
            free = self.catalog.still_free(pending)
            self.chunks.delete_many(free)
            if free:
                self.chunks.backend.sync()
            self.catalog.forget_pending(pending)
            return len(free)


def _adopt_key(key_file: Path, dest: Path) -> bytes:
    """Copy an existing encryption key into a new repository (owner-only, never over one)."""
    key = read_key_file(key_file)
    if not key.encrypts:
        raise UsageError(f"{key_file} is an integrity key, not an encryption key")
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.secret.hex() + "\n")
    return key.secret
