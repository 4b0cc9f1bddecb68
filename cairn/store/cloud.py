"""Cloud repositories: a bucket holds the truth, the local catalog is only a cache of it.

Layout in the bucket (under its prefix)::

    config.json                      the repository config (a key *id*, never a key)
    points/<volume>/<point id>.json  one immutable object per point: it exists = committed
    chunks/abc/<hash>                chunks, as in a local repository
    locks/<random>.json              writers' locks: {exclusive, host, pid, command, time}

Nothing on local disk is needed to use the bucket: the cache folder
(``$CAIRN_CACHE`` or ``~/.cache/cairn``, one folder per repository id) holds a catalog that
`Cloud.sync` rebuilds from the ``points/`` objects (reference counts are recomputed by the
run rule, see `runs`), plus this node's clones. Any node can be lost and another rebuilds.

Writers (restic's scheme): each takes a lock object; a replication takes it *shared*, a
delete or prune *exclusive*. An exclusive holder is alone, so it can sync, unpublish points
and unlink the chunks they alone held knowing no other node counts on them. A lock not
refreshed for 30 minutes is stale and ignored; holders refresh every 5 minutes.

How this maps elsewhere: AWS S3 and Ceph RGW give the same strong read-after-write and
atomic single PUTs that SeaweedFS gives, which is all this needs; a bucket lifecycle rule
must not expire ``points/`` or ``chunks/`` objects, and versioning (or object lock) on the
bucket adds protection against a stolen credential deleting points.
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cairn.errors import Locked, NotARepository, RepositoryExists
from cairn.store import runs
from cairn.store.backend import Backend
from cairn.store.blockmap import NodeCache
from cairn.store.catalog import RecoveryPoint
from cairn.store.chunks import chunk_name, key_id
from cairn.store.repository import (
    DEFAULT_BLOCK_SIZE,
    Repository,
    RepositoryConfig,
    check_block_size,
    load_key,
    read_key,
)
from cairn.store.verify import expected_refs

SWEEP_MARKER = "sweep-needed"
STALE_AFTER = 30 * 60
REFRESH_EVERY = 5 * 60
LOCK_WAIT = 60.0

POINT_FIELDS = ("id", "volume", "created", "size", "allocated", "bytes_read", "bytes_stored",
                "seconds", "source")


def cache_root() -> Path:
    return Path(os.environ.get("CAIRN_CACHE") or Path.home() / ".cache" / "cairn")


def point_object(point: RecoveryPoint) -> str:
    return f"points/{point.volume}/{point.id}.json"


class RemoteLock:
    """One writer's lock object in the bucket, refreshed while held."""

    def __init__(self, backend: Backend, exclusive: bool, where: str) -> None:
        self.backend = backend
        self.exclusive = exclusive
        self.where = where
        self.name = f"locks/{os.urandom(8).hex()}.json"
        self._stop = threading.Event()
        self._refresher: threading.Thread | None = None

    def _write(self) -> None:
        self.backend.put(self.name, json.dumps({
            "exclusive": self.exclusive, "host": os.uname().nodename, "pid": os.getpid(),
            "command": " ".join(os.path.basename(a) if i == 0 else a
                                for i, a in enumerate(sys.argv))[:200],
            "time": time.time()}).encode())

    def _conflicts(self) -> list[dict[str, object]]:
        found = []
        for name in self.backend.list("locks"):
            if name == self.name:
                continue
            try:
                info = json.loads(self.backend.get(name))
            except (KeyError, ValueError):
                continue  # released meanwhile, or not ours to read
            if time.time() - float(info.get("time", 0)) > STALE_AFTER:
                continue
            if self.exclusive or info.get("exclusive"):
                found.append(info)
        return found

    def acquire(self, wait: float = LOCK_WAIT) -> RemoteLock:
        deadline = time.monotonic() + wait
        while True:
            self._write()
            conflicts = self._conflicts()
            if not conflicts:
                break
            self.backend.delete(self.name)
            if time.monotonic() > deadline:
                holder = conflicts[0]
                kind = "exclusively" if holder.get("exclusive") else "for writing"
                raise Locked(f"cloud repository {self.where} is locked {kind} by pid "
                             f"{holder.get('pid')} on {holder.get('host')} "
                             f"({holder.get('command')}): wait for it to finish, or remove a "
                             "dead holder's object under locks/ after 30 minutes")
            time.sleep(random.uniform(0.2, 1.0))
        self._refresher = threading.Thread(target=self._refresh, daemon=True)
        self._refresher.start()
        return self

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_EVERY):
            self._write()

    def release(self) -> None:
        self._stop.set()
        if self._refresher is not None:
            self._refresher.join()
        self.backend.delete(self.name)


class Cloud:
    """The `Remote` of a repository kept in a bucket."""

    def __init__(self, backend: Backend, where: str) -> None:
        self.backend = backend
        self.where = where
        self._exclusive = 0

    @property
    def exclusive_held(self) -> bool:
        return self._exclusive > 0

    @contextmanager
    def lock(self, repo: Repository, exclusive: bool) -> Iterator[RemoteLock]:
        """Hold the writers' lock with the cache synced.

        An exclusive holder also leaves ``SWEEP_MARKER`` in the bucket while it works: if it
        dies midway (after unpublishing points, before unlinking their chunks), the next
        exclusive holder finds the marker and sweeps the chunks no point counts.
        """
        lock = RemoteLock(self.backend, exclusive, self.where).acquire()
        self._exclusive += exclusive
        try:
            self.sync(repo)
            if exclusive:
                if self.backend.exists(SWEEP_MARKER):
                    self.sweep(repo)
                self.backend.put(SWEEP_MARKER, b"an exclusive writer is at work\n")
            yield lock
            if exclusive:
                self.backend.delete(SWEEP_MARKER)
        finally:
            self._exclusive -= exclusive
            lock.release()

    def sweep(self, repo: Repository) -> int:
        """Delete chunk objects that no point counts; only under the exclusive lock, with the
        cache just synced, so nothing any node relies on can be among them. A listing error
        raises and deletes nothing."""
        assert self.exclusive_held
        known = {chunk_name(h) for h in repo.catalog.chunk_refs()}
        stray = [name for name in list(self.backend.list("chunks")) if name not in known]
        for name in stray:
            self.backend.delete(name)
        return len(stray)

    def publish(self, point: RecoveryPoint) -> None:
        record = {f: getattr(point, f) for f in POINT_FIELDS}
        record["root"] = point.root.hex()
        self.backend.put(point_object(point), json.dumps(record, indent=1).encode())

    def unpublish(self, point: RecoveryPoint) -> None:
        self.backend.delete(point_object(point))

    def sync(self, repo: Repository) -> None:
        """Bring the cache catalog to the bucket's set of points.

        Points new to the cache enter by the delete rule reversed, in creation order, so
        every reference count ends as if this node had seen every change itself. Points gone
        from the bucket were deleted by another node, which may already have removed the
        nodes of their block maps: the counts are then recounted from the remaining points
        (`verify.expected_refs`), and chunks no longer counted are queued for an exclusive
        holder to unlink (the deleting node may have died before it could).
        """
        with repo.catalog.transaction():
            self._apply(repo)

    def _apply(self, repo: Repository) -> None:
        """The sync itself; the listing is taken inside the catalog's write lock, so a
        point another local process is publishing is either seen or added by it later."""
        remote: dict[str, str] = {}
        for name in self.backend.list("points"):
            parts = name.split("/")
            if len(parts) == 3 and parts[2].endswith(".json"):
                remote[parts[2][: -len(".json")]] = name
        local = {p.id: p for p in repo.catalog.points()}
        gone = local.keys() - remote.keys()
        if gone:
            repo.catalog.forget_points(gone)
            repo.catalog.recount(expected_refs(repo, repo.nodes))
        arrivals = []
        for point_id in remote.keys() - local.keys():
            try:
                record = json.loads(self.backend.get(remote[point_id]))
            except KeyError:
                continue  # deleted since the listing
            arrivals.append(record)
        for record in sorted(arrivals, key=lambda r: r["created"]):
            self.learn(repo, record)

    def learn(self, repo: Repository, record: dict[str, object]) -> RecoveryPoint:
        """Add one published point to the cache catalog with its runs."""
        volume = repo.catalog.ensure_volume(str(record["volume"]))
        point = RecoveryPoint(
            id=str(record["id"]), volume=volume.name, volume_id=volume.id, seq=0,
            created=float(record["created"]),  # type: ignore[arg-type]
            size=int(record["size"]),  # type: ignore[call-overload]
            root=bytes.fromhex(str(record["root"])),
            allocated=int(record["allocated"]),  # type: ignore[call-overload]
            bytes_read=int(record["bytes_read"]),  # type: ignore[call-overload]
            bytes_stored=int(record["bytes_stored"]),  # type: ignore[call-overload]
            seconds=float(record["seconds"]),  # type: ignore[arg-type]
            source=str(record["source"]))
        return self.insert(repo, point, {})

    @staticmethod
    def insert(repo: Repository, point: RecoveryPoint,
               written: dict[bytes, tuple[int, int]]) -> RecoveryPoint:
        """Put ``point`` in its place by creation time; its runs are the delete rule reversed.

        One transaction from reading the neighbours to the commit: another process sharing
        this cache (a second replication, a sync) cannot slip a point in between, and a
        point it already added is not added twice.
        """
        with repo.catalog.transaction():
            committed = repo.catalog.point(point.id)
            if committed is not None:
                return committed
            placed = RecoveryPoint(**{**point.__dict__, "seq": int(point.created * 1_000_000)})
            prev, nxt = repo.catalog.neighbours(placed)
            increments = runs.delete_decrements(
                repo.nodes, repo.tree(prev) if prev else None, repo.tree(placed),
                repo.tree(nxt) if nxt else None)
            repo.catalog.commit_point(None, placed, increments, written, append=False)
            committed = repo.catalog.point(point.id)
        assert committed is not None
        return committed


def _open_backend(url: str, endpoint: str | None) -> Backend:
    from cairn.store.backends.s3 import open_s3_url

    return open_s3_url(url, endpoint)


class NodeFiles:
    """Block-map nodes kept on local disk once fetched: every point walk, sync and browse
    of a cloud repository reads them again, and they never change. Each is checked against
    its hash when read back, like any chunk."""

    def __init__(self, folder: Path, repo: Repository) -> None:
        self.folder = folder
        self.repo = repo
        folder.mkdir(exist_ok=True)

    def __call__(self, digest: bytes) -> bytes:
        path = self.folder / digest.hex()
        try:
            node = path.read_bytes()
            if self.repo.chunks.hash(node) == digest:
                return node
        except FileNotFoundError:
            pass
        node = self.repo.chunks.get(digest)
        tmp = path.with_suffix(f".{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_bytes(node)
        tmp.rename(path)
        return node


def _repository(url: str, backend: Backend, config: RepositoryConfig,
                key: bytes | None) -> Repository:
    folder = cache_root() / config.id
    folder.mkdir(parents=True, exist_ok=True)
    cloud = Cloud(backend, url)
    repo = Repository(url, folder, config, backend, key, cloud)
    repo.nodes = NodeCache(NodeFiles(folder / "nodes", repo))
    cloud.sync(repo)
    return repo


def init_cloud(url: str, endpoint: str | None, block_size: int = DEFAULT_BLOCK_SIZE,
               key_file: Path | None = None) -> Repository:
    """A new repository in a bucket; with ``key_file`` its chunks are encrypted by that key
    (normally the local repository's, so replication sends chunks as they are)."""
    backend = _open_backend(url, endpoint)
    check_block_size(block_size)
    if backend.exists("config.json"):
        raise RepositoryExists(url)
    key = read_key(key_file) if key_file is not None else None
    config = RepositoryConfig(id=os.urandom(16).hex(), block_size=block_size,
                              key_id=key_id(key) if key is not None else None)
    backend.put("config.json", config.to_json().encode())
    return _repository(url, backend, config, key)


def open_cloud(url: str, endpoint: str | None, key_file: Path | None = None) -> Repository:
    backend = _open_backend(url, endpoint)
    try:
        raw = json.loads(backend.get("config.json"))
    except KeyError:
        raise NotARepository(url) from None
    except ValueError:
        raise NotARepository(url) from None
    config = RepositoryConfig.from_json(raw, url)
    return _repository(url, backend, config, load_key(config, key_file, url))
