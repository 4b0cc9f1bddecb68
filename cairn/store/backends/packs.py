"""Chunks packed into large append-only files, on a local file system.

One file per 64 KiB chunk costs a create, a rename and a directory entry per chunk, and a
cold restore or delete then pays a directory and an inode lookup per chunk. Here a process
appends chunks to a *pack* (``packs/<pid>-<random>.pack``, rolled over at 256 MiB and sealed
at every ``sync``), so a backup writes a few files sequentially and a restore of a point
reads them mostly in order. An index (SQLite, ``packs.db``) maps each object name to its
pack, offset and length.

Promises (as `cairn.store.backend` asks): an object is visible to this process as soon as
``put`` returns and durable, for every process, after ``sync`` (packs fsynced, then the
index rows committed). ``delete`` punches a hole over the object (``fallocate``
PUNCH_HOLE: the space returns at once, nothing else moves) and drops its index row at the
next ``sync``; a sealed pack whose objects are all deleted is unlinked. A crash before
``sync`` leaves a pack that no index row names: `recover` unlinks it once its writer's
process is gone.

Two writers may store the same object at once (two backups of different volumes meeting
the same new chunk). The first index commit wins; the later writer's copy is a spare that
no row names, punched only *after* its own commit. An indexed copy is never punched by a
writer that merely wrote the object again: a committed point may read it, and a reader may
have looked it up already. Only ``put(..., replace=True)`` (healing a copy known to be
damaged) and `relocate` (a repack, `cairn.store.repack`, moving a good copy next to the
other chunks of a point) move the row to the new copy, and the old bytes go after that
commit too. A reader that looked up the old copy just before reads a hole or a pack that
is gone: `ChunkStore` and `get_many` then look the object up again and read its new copy.
Copies no row names any more are listed in ``retired`` by the commit that unnamed them and
struck off once punched, so a crash between the two costs no space: `recover` punches them.
"""

from __future__ import annotations

import bisect
import contextlib
import ctypes
import errno
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from cairn import pids
from cairn.errors import StorageFull
from cairn.store import sqlite
from cairn.store.backend import T

PACK_LIMIT = 256 * 1024 * 1024
READ_GAP = 128 * 1024
READ_LIMIT = 4 * 1024 * 1024
READERS = max(2, min(8, os.cpu_count() or 2))
_FALLOC_FL_KEEP_SIZE = 1
_FALLOC_FL_PUNCH_HOLE = 2
_FS_BLOCK = 4096  # ext4's and XFS's block size; a larger one only frees less per punch
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects(
    name TEXT PRIMARY KEY, pack TEXT NOT NULL, offset INTEGER NOT NULL,
    length INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS packs(
    name TEXT PRIMARY KEY, live INTEGER NOT NULL, sealed INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS retired(
    pack TEXT NOT NULL, offset INTEGER NOT NULL, length INTEGER NOT NULL);
"""

Location = tuple[str, int, int]
_PACK_NAME = re.compile(r"^[0-9]{1,10}-[0-9a-f]{12}\.pack$")


def _sound(loc: Location) -> bool:
    """Whether an index row names bytes a writer here could have appended: a pack of this
    folder (a name, never a path: a row naming ``../x`` made a delete punch holes in a
    file beside the repository) and a range no larger than a pack. `packs.db` is read like
    any stored bytes: an altered row reads as a missing object and is never punched."""
    pack, offset, length = loc
    return (isinstance(pack, str) and _PACK_NAME.match(pack) is not None
            and isinstance(offset, int) and isinstance(length, int)
            and 0 <= offset <= 1 << 48 and 0 <= length <= PACK_LIMIT)


def _punch(fd: int, offset: int, length: int) -> None:
    """Give back the file-system blocks wholly inside ``[offset, offset+length)``.

    Only whole blocks: a partial block at either end is shared with a neighbouring object
    and cannot be freed anyway, and asking for it makes the file system read it (cold, from
    disk) to zero part of it, a third of a cold delete's punching time.
    """
    start = -(-offset // _FS_BLOCK) * _FS_BLOCK
    end = (offset + length) // _FS_BLOCK * _FS_BLOCK
    if end > start and _libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                       start, end - start):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _runs(locations: Iterable[Location]) -> list[Location]:
    """Merge byte ranges that touch, per pack."""
    merged: list[Location] = []
    for pack, offset, length in sorted(locations):
        if merged and merged[-1][0] == pack and merged[-1][1] + merged[-1][2] == offset:
            merged[-1] = (pack, merged[-1][1], merged[-1][2] + length)
        else:
            merged.append((pack, offset, length))
    return merged


def batches(found: dict[str, Location], gap: int = READ_GAP, limit: int = READ_LIMIT
            ) -> Iterator[list[tuple[str, Location]]]:
    """Objects grouped into reads of one pack: in order, reading across gaps of up to
    ``gap`` (a punched hole, an object not asked for) rather than paying another request,
    and up to ``limit`` bytes each. The cloud's packs are read the same way, with ranged
    GETs (`cloud_packs`)."""
    batch: list[tuple[str, Location]] = []
    end = 0  # where the batch's bytes end (its objects may overlap: the furthest end)
    for name, loc in sorted(found.items(), key=lambda item: item[1]):
        if batch:
            pack, start = batch[0][1][0], batch[0][1][1]
            if loc[0] != pack or loc[1] - end > gap or loc[1] + loc[2] - start > limit:
                yield batch
                batch, end = [], 0
        batch.append((name, loc))
        end = max(end, loc[1] + loc[2])
    if batch:
        yield batch


class _Writer:
    """The pack being appended to."""

    def __init__(self, folder: Path) -> None:
        self.name = f"{os.getpid()}-{os.urandom(6).hex()}.pack"
        self.fd = os.open(folder / self.name, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                          | os.O_CLOEXEC, 0o600)
        self.size = 0


class PackBackend:
    def __init__(self, root: Path, read_only: bool = False) -> None:
        """``read_only``: open nothing for writing (a repository on read-only media)."""
        self.root = root
        self.folder = root / "packs"
        self.read_only = read_only
        if read_only:
            self._db = sqlite.connect_read_only(root / "packs.db")
        else:
            self.folder.mkdir(exist_ok=True)
            self._db = sqlite.connect(root / "packs.db")
            self._db.execute("PRAGMA synchronous=FULL")  # `_free` relies on a durable COMMIT
            self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()
        self._db_lock = threading.Lock()
        self._writer: _Writer | None = None
        self._writers: list[_Writer] = []
        self._pending: dict[str, Location] = {}
        self._deleted: list[str] = []
        self._replacing: dict[str, Location | None] = {}
        """Names whose next commit supersedes the indexed copy: any (None, a
        ``replace`` put) or only the one at this location (`relocate`)."""
        self._readers: dict[str, int] = {}

    # -- writing -------------------------------------------------------------------------

    def put(self, name: str, data: bytes, replace: bool = False) -> None:
        """Append to the current pack. Appends are serialised (each is a short copy into
        the page cache; compression, the real work, happened before, in parallel).

        With ``replace`` this copy supersedes an indexed one at the next `sync` (the old
        one is damaged); otherwise an indexed copy, if any, is kept and this one dropped.
        """
        with self._lock:
            self._pending[name] = self._append(data)
            if replace:
                self._replacing[name] = None
            else:
                self._replacing.pop(name, None)

    def relocate(self, name: str, data: bytes, was: Location) -> None:
        """Store a second copy of ``name``, whose indexed copy is at ``was`` and holds
        ``data`` (the caller checked it): at the next `sync` the row moves here and the
        copy at ``was`` is punched. Should the row name anything else by then (a copy
        healed meanwhile, or the object deleted), this copy is the spare and goes instead:
        a move never brings back a deleted object nor undoes a repair."""
        with self._lock:
            self._pending[name] = self._append(data)
            self._replacing[name] = was

    def _append(self, data: bytes) -> Location:
        """Write ``data`` at the end of the current pack (call with ``_lock`` held)."""
        try:
            writer = self._writer
            if writer is None or writer.size >= PACK_LIMIT:
                writer = self._writer = _Writer(self.folder)
                self._writers.append(writer)
            offset = writer.size
            view = memoryview(data)
            while view:
                view = view[os.write(writer.fd, view):]
            writer.size += len(data)
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFull(str(self.root)) from exc
            raise
        return writer.name, offset, len(data)

    def sync(self) -> None:
        """Make every put durable and seal the packs written so far: the next put starts a
        new pack, so no pack is ever left open by a process that ends without closing."""
        with self._lock:
            writers, self._writers, self._writer = self._writers, [], None
            pending, self._pending = self._pending, {}
            deleted, self._deleted = self._deleted, []
            replacing, self._replacing = self._replacing, {}
        sealed = [w.name for w in writers]
        for writer in writers:
            os.fsync(writer.fd)
            os.close(writer.fd)
        if writers:  # new pack files: their directory entries must be durable too
            fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        if not (pending or deleted or sealed):
            return
        with self._db_lock:
            empty, unneeded = self._commit(pending, deleted, sealed, replacing)
        self._free(unneeded)
        self._strike(unneeded)
        for pack in empty:
            with contextlib.suppress(FileNotFoundError):
                (self.folder / pack).unlink()

    def _commit(self, pending: dict[str, Location], deleted: list[str], sealed: list[str],
                replacing: dict[str, Location | None]) -> tuple[list[str], list[Location]]:
        """Index what `sync` made durable, in one transaction.

        Returns the packs now empty and sealed, and the copies no row names any more (a
        spare copy of an object indexed elsewhere, or a copy a ``replace`` put or a
        `relocate` superseded): the caller punches those only after this commit, see
        `_free`, and the commit lists them in ``retired`` until then.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._forget(deleted)
            unneeded, superseded = self._settle(pending, replacing)
            self._db.executemany("DELETE FROM objects WHERE name=?", ((n,) for n in superseded))
            self._count(superseded.values(), -1)
            self._db.executemany("INSERT INTO objects VALUES(?, ?, ?, ?)",
                                 ((n, *loc) for n, loc in pending.items()))
            self._count(pending.values(), +1)
            self._db.executemany("INSERT INTO retired VALUES(?, ?, ?)",
                                 (loc for loc in unneeded if _sound(loc)))
            self._db.executemany("UPDATE packs SET sealed = 1 WHERE name=?",
                                 ((p,) for p in sealed))
            empty = [r[0] for r in self._db.execute(
                "SELECT name FROM packs WHERE live <= 0 AND sealed = 1")]
            self._db.executemany("DELETE FROM packs WHERE name=?", ((p,) for p in empty))
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return empty, unneeded

    def _settle(self, pending: dict[str, Location], replacing: dict[str, Location | None]
                ) -> tuple[list[Location], dict[str, Location]]:
        """Which new copies `_commit` indexes (those left in ``pending``), which it drops
        as spares, and which indexed copies they supersede: returns (unneeded copies,
        superseded rows). A `relocate` whose row no longer names the copy it moved (or no
        longer exists) is a spare, like a put of an object indexed already."""
        indexed = self._lookup(list(pending))
        unneeded: list[Location] = []
        superseded: dict[str, Location] = {}
        for name in list(pending):
            loc = indexed.get(name)
            moves = name in replacing and replacing[name] in (None, loc)
            if loc is not None and moves:
                superseded[name] = loc
            elif loc is not None or replacing.get(name) is not None:
                unneeded.append(pending.pop(name))
        return unneeded + list(superseded.values()), superseded

    def _free(self, unneeded: list[Location]) -> None:
        """Punch copies no committed point needs, after the commit that made it so.

        Two callers, two commits. A spare or superseded copy (`_commit`): a committed
        point needs an object through its index row, and before the index commit that row,
        which a point (or a reader that looked it up) follows, still names the old copy;
        punching it then and crashing, or being killed, before the commit leaves that row
        naming zeros: a committed point loses a chunk. After the commit (``synchronous=
        FULL``: durable when COMMIT returns) no row names these bytes. A deleted object
        (`delete`, `delete_many`): the catalog's durable commit took its last reference,
        and `Repository.reclaim` deletes only chunks still unreferenced and unpinned under
        the exclusive chunk lock, so no backup can be reusing it; its index row goes at the
        next ``sync``, and a crash before that leaves a row no point follows, deleted again
        by the next reclaim. Either way a crash from here on loses no data; the space of
        a copy `_commit` unnamed is punched by `recover` (it is listed in ``retired``),
        and a deleted object's by its next reclaim. A pack already gone (damage, or
        emptied by a repack) has nothing left to punch.
        """
        for pack, offset, length in _runs(loc for loc in unneeded if _sound(loc)):
            with contextlib.suppress(FileNotFoundError):
                _punch(self._reader(pack), offset, length)

    def _strike(self, punched: list[Location]) -> None:
        """Strike copies `_free` punched off the ``retired`` list `_commit` put them on."""
        if not punched:
            return
        with self._db_lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM retired WHERE pack=? AND offset=? AND length=?",
                                 punched)
            self._db.execute("COMMIT")

    def _lookup(self, names: list[str]) -> dict[str, Location]:
        """The index rows of ``names``, in a few queries rather than one per name."""
        found: dict[str, Location] = {}
        for start in range(0, len(names), 500):
            part = names[start : start + 500]
            rows = self._db.execute(
                f"SELECT name, pack, offset, length FROM objects WHERE name IN "
                f"({','.join('?' * len(part))})", part)
            found.update((r[0], (r[1], r[2], r[3])) for r in rows)
        return found

    def _forget(self, names: list[str]) -> None:
        """Drop the index rows of ``names`` (inside `sync`'s transaction), counting their
        bytes out of their packs; `delete` punched their bytes already, after the
        catalog's durable commit made them unneeded."""
        rows = self._lookup(names)
        self._db.executemany("DELETE FROM objects WHERE name=?", ((n,) for n in rows))
        self._count(rows.values(), -1)

    def _count(self, locations: Iterable[Location], sign: int) -> None:
        """Add (``sign`` +1) or take away (-1) the bytes of ``locations`` from their packs."""
        per_pack: dict[str, int] = {}
        for pack, _offset, length in locations:
            per_pack[pack] = per_pack.get(pack, 0) + sign * length
        self._db.executemany(
            "INSERT INTO packs VALUES(?, ?, 0) ON CONFLICT(name) DO UPDATE SET "
            "live = live + excluded.live", per_pack.items())

    def unindexed(self) -> list[Path]:
        """Pack files that no index row knows, other than those this process is writing:
        what writers that died before their commit left (`recover` removes them)."""
        with self._db_lock:
            known = {r[0] for r in self._db.execute("SELECT name FROM packs")}
        with self._lock:
            known |= {w.name for w in self._writers}
        return [path for path in self.folder.glob("*.pack") if path.name not in known]

    def recover(self) -> None:
        """Unlink packs that no index row knows and whose writing process is gone (a file
        not named as a writer names its pack is none of cairn's), and punch the retired
        copies a process killed between its commit and its punching left (no row names
        them, nor ever will: a pack is append-only, so a place is never reused)."""
        with self._db_lock:
            retired = [(r[0], r[1], r[2]) for r in
                       self._db.execute("SELECT pack, offset, length FROM retired")]
        if retired:
            self._free(self._unnamed(retired))
            self._strike(retired)
        for path in self.unindexed():
            if not _PACK_NAME.match(path.name):
                continue
            pid = int(path.name.split("-", 1)[0])
            if pid == os.getpid() or pids.running(pid):
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _unnamed(self, places: list[Location]) -> list[Location]:
        """``places`` that overlap no indexed object: a ``retired`` row is read like any
        stored bytes, and one altered to name a live object's bytes is not punched."""
        live: dict[str, list[tuple[int, int]]] = {}
        for _name, (pack, offset, length) in self.objects_in({p for p, _o, _n in places}):
            live.setdefault(pack, []).append((offset, offset + length))
        for spans in live.values():
            spans.sort()  # objects never overlap: their ends are in order too

        def clear(pack: str, offset: int, length: int) -> bool:
            spans = live.get(pack, [])
            before = bisect.bisect_left(spans, (offset + length,))  # spans starting before
            return before == 0 or spans[before - 1][1] <= offset

        return [place for place in places if clear(*place)]

    def close(self) -> None:
        self.sync()
        with self._lock:
            for fd in self._readers.values():
                os.close(fd)
            self._readers.clear()

    # -- reading -------------------------------------------------------------------------

    def _where(self, name: str) -> Location | None:
        with self._lock:
            loc = self._pending.get(name)
        if loc is not None:
            return loc
        with self._db_lock:  # one connection, many reader threads (restore, NBD)
            row = self._db.execute("SELECT pack, offset, length FROM objects WHERE name=?",
                                   (name,)).fetchone()
        return (row[0], row[1], row[2]) if row else None

    def _reader(self, pack: str) -> int:
        with self._lock:
            fd = self._readers.get(pack)
            if fd is None:
                mode = os.O_RDONLY if self.read_only else os.O_RDWR
                fd = self._readers[pack] = os.open(self.folder / pack, mode | os.O_CLOEXEC)
            return fd

    def get(self, name: str) -> bytes:
        loc = self._where(name)
        if loc is None or not _sound(loc):
            raise KeyError(name)
        try:
            return os.pread(self._reader(loc[0]), loc[2], loc[1])
        except FileNotFoundError:
            return self._moved(name, loc)

    def _moved(self, name: str, loc: Location) -> bytes:
        """``name``'s bytes when the pack its row named (``loc``) is gone: a repack moved
        every object out of it after this reader looked ``name`` up; the object is
        missing only when its row still names that pack (damage) or went."""
        now = self._where(name)
        if now is None or now == loc or not _sound(now):
            raise KeyError(name)
        try:
            return os.pread(self._reader(now[0]), now[2], now[1])
        except FileNotFoundError:
            raise KeyError(name) from None

    def get_many(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        """Objects in pack order, neighbours in one read: a point's blocks were written by
        many backups into many packs, and reading them in disk order rather than block
        order keeps a restore of the newest point as fast as one of the oldest.

        Up to READ_LIMIT bytes in all (one NBD request, a few blocks of a file) are read on
        the calling thread: its caller is already one of many (an NBD server's readers),
        and starting a thread pool would cost more than the reads it could overlap."""
        return self._get_many(names, each, apart=False)

    def get_apart(self, names: list[str], each: Callable[[str, bytes], T]) -> Iterator[T]:
        """`get_many`, each object read on its own into bytes of its own (a read a
        neighbour, in pack order): a caller may keep part of one (a cache keeps a block
        stored as is) without keeping its neighbours' bytes in memory with it. All on the
        calling thread, whatever the size: the caller (a cache's read-ahead) is one of a
        pool already, and a pool started per read-ahead of 64 blocks (just over
        READ_LIMIT with the chunks' headers) cost two new threads each."""
        return self._get_many(names, each, apart=True)

    def _get_many(self, names: list[str], each: Callable[[str, bytes], T], apart: bool
                  ) -> Iterator[T]:
        with self._lock:
            found = {n: self._pending[n] for n in names if n in self._pending}
        with self._db_lock:
            found.update(self._lookup([n for n in names if n not in found]))
        for name in names:
            if name not in found or not _sound(found[name]):
                raise KeyError(name)

        def read(batch: list[tuple[str, Location]]) -> list[T]:
            pack, start = batch[0][1][0], batch[0][1][1]
            end = batch[-1][1][1] + batch[-1][1][2]
            try:
                fd = self._reader(pack)
                if apart:
                    return [each(name, os.pread(fd, length, offset))
                            for name, (_pack, offset, length) in batch]
                data = os.pread(fd, end - start, start)
            except FileNotFoundError:
                return [each(name, self._moved(name, loc)) for name, loc in batch]
            view = memoryview(data)  # each object's bytes without a copy of its own
            return [each(name, view[offset - start : offset - start + length])
                    for name, (_pack, offset, length) in batch]

        if apart or sum(length for _pack, _offset, length in found.values()) <= READ_LIMIT:
            for batch in batches(found):
                yield from read(batch)
            return
        from cairn.store.parallel import bounded_map  # only bulk reads pay for a thread pool

        for results in bounded_map(read, batches(found), READERS):
            yield from results

    def reads(self, names: list[str]) -> list[list[tuple[str, Location]]]:
        """The reads a `get_many` of ``names`` makes, each the objects it carries with
        their places (objects not indexed are left out): what `cairn.store.repack`
        judges a point's layout by."""
        with self._lock:
            found = {n: self._pending[n] for n in names if n in self._pending}
        with self._db_lock:
            found.update(self._lookup([n for n in names if n not in found]))
        return list(batches({n: loc for n, loc in found.items() if _sound(loc)}))

    def usage(self, packs: Iterable[str]) -> dict[str, tuple[int, int]]:
        """``(live bytes, file size)`` of each of ``packs`` still indexed and on disk."""
        out: dict[str, tuple[int, int]] = {}
        for pack in packs:
            with self._db_lock:
                row = self._db.execute("SELECT live FROM packs WHERE name=?", (pack,)).fetchone()
            with contextlib.suppress(FileNotFoundError):
                if row is not None:
                    out[pack] = (row[0], (self.folder / pack).stat().st_size)
        return out

    def objects_in(self, packs: set[str]) -> list[tuple[str, Location]]:
        """The objects indexed in ``packs``: one pass over the index (it has no index by
        pack; a repack asks once, at its end)."""
        with self._db_lock:
            rows = self._db.execute("SELECT name, pack, offset, length FROM objects").fetchall()
        return [(r[0], (r[1], r[2], r[3])) for r in rows if r[1] in packs]

    def written(self, pack: str) -> int:
        """When ``pack`` was last written (ns; 0 if it is gone): packs by age."""
        try:
            return (self.folder / pack).stat().st_mtime_ns
        except FileNotFoundError:
            return 0

    def exists(self, name: str) -> bool:
        return self._where(name) is not None

    def short_objects(self) -> list[str]:
        """Indexed objects whose bytes are not all in their pack file (a pack deleted or
        truncated behind cairn's back): what a quick verify reports without reading data."""
        with self._db_lock:
            ends = self._db.execute(
                "SELECT pack, MAX(offset + length) FROM objects GROUP BY pack").fetchall()
        short: list[str] = []
        for pack, end in ends:
            try:
                size = (self.folder / pack).stat().st_size
            except FileNotFoundError:
                size = -1
            if size < end:
                with self._db_lock:
                    short += [r[0] for r in self._db.execute(
                        "SELECT name FROM objects WHERE pack = ? AND offset + length > ?",
                        (pack, max(size, 0)))]
        return short

    def delete(self, name: str) -> None:
        loc = self._where(name)
        if loc is None:
            return
        self._free([loc])
        with self._lock:
            self._pending.pop(name, None)
            self._deleted.append(name)

    def delete_many(self, names: list[str]) -> None:
        """Look the names up in one pass and punch each run of neighbours at once: the
        chunks a point alone held were mostly appended together, so they sit side by side."""
        found: dict[str, Location] = {}
        with self._lock:
            for name in names:
                if name in self._pending:
                    found[name] = self._pending[name]
        with self._db_lock:
            found.update(self._lookup([n for n in names if n not in found]))
        self._free(list(found.values()))
        with self._lock:
            for name in found:
                self._pending.pop(name, None)
            self._deleted.extend(found)

    def list(self, prefix: str) -> Iterator[str]:
        """Names under the folder ``prefix`` (``chunks`` does not match ``chunksX/...``)."""
        folder = prefix.rstrip("/") + "/" if prefix.strip("/") else ""
        with self._lock:
            pending = [n for n in self._pending if n.startswith(folder)]
        with self._db_lock:
            rows = self._db.execute("SELECT name FROM objects WHERE name >= ? AND name < ?",
                                    (folder, folder + "\uffff")).fetchall()
        yield from sorted({r[0] for r in rows} | set(pending))
