"""The NBD transmission phase: one connection's request loop over a `BlockDevice`.

Reads and block-status queries run in parallel on a few threads per connection and are
answered as each finishes, out of order (each reply carries its request's cookie, as the
protocol allows), so a client with many requests in flight (QEMU, nbdcopy) keeps the store's
reads and decompression busy. At most `MAX_INFLIGHT_BYTES` of read replies are in flight per
connection, so a client cannot make the server buffer more. A read the device already holds
(a point's verified decoded blocks, `PiecewiseDevice`), or is reading ahead already, skips
the pool: it is answered on the connection's thread (after waiting for that read-ahead), its
blocks sent as they are held (``sendmsg`` of views, no copy), and several such replies go
out in one call while more requests wait in the receive buffer.
Writes, trims, zeroes and flushes run on the connection's own thread in order; a flush
therefore covers every write answered before it. Every range is checked before the device
sees it, so the device contract (offsets inside ``[0, size)``) holds whatever a client sends.
A device exception becomes an NBD error reply (EIO unless a clearer errno applies) and the
connection keeps serving: a client must see read errors, never a silently short or stale
answer.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from cairn.virt import nbd_protocol as p
from cairn.virt.device import PiecewiseDevice
from cairn.virt.nbd_handshake import META_CONTEXT_ID, Export, Session

log = logging.getLogger(__name__)

T = TypeVar("T")

_ALLOWED_FLAGS = {
    p.CMD_READ: p.CMD_FLAG_FUA,
    p.CMD_WRITE: p.CMD_FLAG_FUA,
    p.CMD_DISC: p.CMD_FLAG_FUA,
    p.CMD_FLUSH: p.CMD_FLAG_FUA,
    p.CMD_TRIM: p.CMD_FLAG_FUA,
    p.CMD_WRITE_ZEROES: p.CMD_FLAG_FUA | p.CMD_FLAG_NO_HOLE,
    p.CMD_BLOCK_STATUS: p.CMD_FLAG_FUA | p.CMD_FLAG_REQ_ONE,
}
_ZERO_PIECE = 1024 * 1024
READ_WORKERS = 4
MAX_INFLIGHT_BYTES = 64 * 1024 * 1024
HELD_BATCH = 8 * 1024 * 1024
"""Held replies gathered into one send while more requests wait, at most about this many
bytes (more would only delay the first of them)."""


class _DeviceFailed(Exception):
    def __init__(self, error: int) -> None:
        super().__init__(error)
        self.error = error


class Transmission:
    """Serve requests on a negotiated connection until NBD_CMD_DISC or the peer goes away."""

    def __init__(
        self,
        sock: socket.socket,
        export: Export,
        session: Session,
        lock: contextlib.AbstractContextManager[object],
    ) -> None:
        self.sock = sock
        self.export = export
        self.device = export.device
        self.session = session
        self.lock = lock
        self._send_lock = threading.Lock()
        self._receiver = p.Receiver(sock)
        self._held: list[bytes | memoryview] = []  # replies of held reads not yet sent
        self._held_bytes = 0
        self._budget = threading.Condition()
        self._inflight = 0
        self._pieces = self.device.read_pieces if isinstance(self.device, PiecewiseDevice) \
            else None

    def run(self) -> None:
        """Return on NBD_CMD_DISC; raise `Disconnected` when the stream breaks.

        Replies still being read are sent before this returns, or dropped if the peer left.
        """
        with ThreadPoolExecutor(READ_WORKERS, thread_name_prefix="nbd-read") as pool:
            self._serve(pool)

    def _serve(self, pool: ThreadPoolExecutor) -> None:
        while True:
            header = self._next_request()
            magic, flags, command, cookie, offset, length = p.REQUEST.unpack(header)
            if magic != p.REQUEST_MAGIC:
                raise p.Disconnected(f"bad request magic {magic:#x}")
            if command == p.CMD_READ and self._answer_held(flags, cookie, offset, length):
                continue
            self._flush_held()
            if command == p.CMD_DISC:
                return
            if command == p.CMD_WRITE:
                self._write(flags, cookie, offset, length)
                continue
            if command not in _ALLOWED_FLAGS or flags & ~_ALLOWED_FLAGS[command]:
                self._error(cookie, p.NBD_EINVAL, "unsupported command or flag")
                continue
            if command in (p.CMD_READ, p.CMD_BLOCK_STATUS):
                self._reserve(length if command == p.CMD_READ else 0)
                pool.submit(self._parallel, command, flags, cookie, offset, length)
                continue
            try:
                self._dispatch(command, flags, cookie, offset, length)
            except _DeviceFailed as exc:
                self._error(cookie, exc.error, "device error")

    def _next_request(self) -> bytes | bytearray:
        """The next request's header. Held replies gathered so far go out first, unless
        the next request is here already: a client streaming reads gets several replies
        in one ``sendmsg``."""
        if not self._receiver.holds(p.REQUEST.size):
            self._flush_held()
        return self._receiver.exact(p.REQUEST.size)

    def _answer_held(self, flags: int, cookie: int, offset: int, length: int) -> bool:
        """Answer a read the device holds already (a point's cached blocks) here, on the
        connection's thread: handing it to a pool costs more than sending it. The reply
        joins the held ones to send (see `_next_request`).

        A read whose missing blocks the device is reading ahead already (a stream: a disk
        copied, a file read) waits for them here, the replies gathered so far sent first:
        the next reads of the stream are then held, and go out together. A cold copy of
        a 2 GiB point sent two thirds of its reads through the pool, each a hand-off and
        a wake-up more, for data that came no sooner. False (and nothing sent) when it is
        not all held or read ahead, or is not a plain in-range read: the pool then reads
        it, and reports any error."""
        if self._pieces is None or flags & ~p.CMD_FLAG_FUA or not 0 < length <= p.MAX_PAYLOAD \
                or offset + length > self.device.size:
            return False
        try:
            with self.lock:
                pieces = self._pieces(offset, length, False)
            if pieces is None:
                self._flush_held()
                with self.lock:
                    pieces = self._pieces(offset, length, False, True)
        except Exception:  # a block-map read failed: the pool's read reports it
            return False
        if pieces is None:
            return False
        self._held += self._reply_parts(cookie, offset, length, pieces)
        self._held_bytes += length
        if self._held_bytes >= HELD_BATCH:
            self._flush_held()
        return True

    def _flush_held(self) -> None:
        if self._held:
            held, self._held, self._held_bytes = self._held, [], 0
            self._send(*held)

    def _reserve(self, length: int) -> None:
        """Wait until ``length`` more reply bytes fit the budget (one oversized read alone
        always fits, so a 32 MiB read never waits forever)."""
        length = min(length, MAX_INFLIGHT_BYTES)
        with self._budget:
            self._budget.wait_for(lambda: self._inflight + length <= MAX_INFLIGHT_BYTES)
            self._inflight += length

    def _parallel(self, command: int, flags: int, cookie: int, offset: int, length: int
                  ) -> None:
        """One read or block-status request on a pool thread; its reply goes out when done."""
        try:
            self._dispatch(command, flags, cookie, offset, length)
        except _DeviceFailed as exc:
            with contextlib.suppress(p.Disconnected):
                self._error(cookie, exc.error, "device error")
        except p.Disconnected:
            pass  # the peer left; the connection's thread sees it too
        except Exception:
            log.exception("NBD request failed")
        finally:
            with self._budget:
                self._inflight -= min(length, MAX_INFLIGHT_BYTES) if command == p.CMD_READ \
                    else 0
                self._budget.notify_all()

    def _send(self, *parts: bytes | memoryview) -> None:
        """Replies from several threads never interleave: each is sent whole, under a lock."""
        with self._send_lock:
            p.send_all(self.sock, *parts)

    def _dispatch(self, command: int, flags: int, cookie: int, offset: int, length: int) -> None:
        in_range = offset + length <= self.device.size
        if command == p.CMD_READ:
            self._cmd_read(cookie, offset, length, in_range)
        elif command == p.CMD_BLOCK_STATUS:
            self._cmd_block_status(flags, cookie, offset, length, in_range)
        elif command == p.CMD_FLUSH:
            if not self.device.read_only:
                self._call(self.device.flush)
            self._ok(cookie)
        elif self.device.read_only:
            self._error(cookie, p.NBD_EPERM, "export is read-only")
        elif not in_range:
            error = p.NBD_ENOSPC if command == p.CMD_WRITE_ZEROES else p.NBD_EINVAL
            self._error(cookie, error, "range past the end of the export")
        else:
            self._cmd_zero(command, flags, offset, length)
            self._ok(cookie)

    def _cmd_read(self, cookie: int, offset: int, length: int, in_range: bool) -> None:
        if length > p.MAX_PAYLOAD or not in_range:
            self._error(cookie, p.NBD_EINVAL, "read out of range")
        else:
            self._read(cookie, offset, length)

    def _cmd_block_status(self, flags: int, cookie: int, offset: int, length: int,
                          in_range: bool) -> None:
        if not self.session.block_status:
            self._error(cookie, p.NBD_EINVAL, "base:allocation not negotiated")
        elif length == 0 or not in_range:
            self._error(cookie, p.NBD_EINVAL, "block status out of range")
        else:
            self._block_status(cookie, offset, length, bool(flags & p.CMD_FLAG_REQ_ONE))

    def _cmd_zero(self, command: int, flags: int, offset: int, length: int) -> None:
        """TRIM and WRITE_ZEROES of an in-range, writable export (a device error raises)."""
        if length:
            if command == p.CMD_TRIM:
                self._call(self.device.trim, offset, length)
            elif flags & p.CMD_FLAG_NO_HOLE:
                self._write_zero_bytes(offset, length)
            else:
                self._call(self.device.write_zeroes, offset, length)
            if flags & p.CMD_FLAG_FUA:
                self._call(self.device.flush)

    def _write(self, flags: int, cookie: int, offset: int, length: int) -> None:
        if length > p.MAX_PAYLOAD:
            self._error(cookie, p.NBD_EINVAL, "write larger than the maximum payload")
            raise p.Disconnected(f"write payload of {length} bytes refused")
        data = bytes(self._receiver.exact(length))
        if flags & ~_ALLOWED_FLAGS[p.CMD_WRITE]:
            return self._error(cookie, p.NBD_EINVAL, "unsupported flag")
        if self.device.read_only:
            return self._error(cookie, p.NBD_EPERM, "export is read-only")
        if offset + length > self.device.size:
            return self._error(cookie, p.NBD_ENOSPC, "write past the end of the export")
        try:
            if length:
                self._call(self.device.write, offset, data)
            if flags & p.CMD_FLAG_FUA:
                self._call(self.device.flush)
        except _DeviceFailed as exc:
            return self._error(cookie, exc.error, "device error")
        self._ok(cookie)

    def _write_zero_bytes(self, offset: int, length: int) -> None:
        """NBD_CMD_FLAG_NO_HOLE: the client wants the zeros allocated, so write them."""
        end = offset + length
        while offset < end:
            piece = min(_ZERO_PIECE, end - offset)
            self._call(self.device.write, offset, bytes(piece))
            offset += piece

    def _read(self, cookie: int, offset: int, length: int) -> None:
        pieces = self._call(self._read_all, offset, length) if length else []
        got = sum(map(len, pieces))
        if got != length:
            log.error("device returned %d bytes for a %d-byte read", got, length)
            raise _DeviceFailed(p.NBD_EIO)
        self._reply_data(cookie, offset, length, pieces)

    def _read_all(self, offset: int, length: int) -> list[bytes | memoryview]:
        if self._pieces is not None:
            return self._pieces(offset, length, True) or []
        return [self.device.read(offset, length)]

    def _reply_data(self, cookie: int, offset: int, length: int,
                    pieces: list[bytes | memoryview]) -> None:
        if self.session.structured and not length:
            return self._ok(cookie)
        self._send(*self._reply_parts(cookie, offset, length, pieces))

    def _reply_parts(self, cookie: int, offset: int, length: int,
                     pieces: list[bytes | memoryview]) -> list[bytes | memoryview]:
        """A read's reply: its header, then the pieces as they are (see `p.send_all`)."""
        if not self.session.structured:
            return [p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie), *pieces]
        return [p.OFFSET_DATA_HEADER.pack(p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE,
                                          p.REPLY_TYPE_OFFSET_DATA, cookie, 8 + length, offset),
                *pieces]

    def _block_status(self, cookie: int, offset: int, length: int, req_one: bool) -> None:
        runs = self._call(self.device.extents, offset, length)
        descriptors = block_status_descriptors(runs, length, req_one)
        payload = struct.pack(">I", META_CONTEXT_ID) + b"".join(
            struct.pack(">II", run, flags) for run, flags in descriptors
        )
        self._chunk(cookie, p.REPLY_TYPE_BLOCK_STATUS, payload)

    def _call(self, method: Callable[..., T], *args: object) -> T:
        try:
            with self.lock:
                return method(*args)
        except Exception as exc:
            log.warning("NBD device %s%r failed: %s", method.__name__, args[:1], exc)
            raise _DeviceFailed(p.nbd_error_for(exc)) from exc

    def _ok(self, cookie: int) -> None:
        if self.session.structured:
            return self._chunk(cookie, p.REPLY_TYPE_NONE, b"")
        self._send(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, 0, cookie))

    def _error(self, cookie: int, error: int, message: str) -> None:
        if not self.session.structured:
            return self._send(p.SIMPLE_REPLY.pack(p.SIMPLE_REPLY_MAGIC, error, cookie))
        text = message.encode()
        self._chunk(cookie, p.REPLY_TYPE_ERROR, struct.pack(">IH", error, len(text)) + text)

    def _chunk(self, cookie: int, reply_type: int, payload: bytes) -> None:
        header = p.CHUNK_HEADER.pack(
            p.STRUCTURED_REPLY_MAGIC, p.REPLY_FLAG_DONE, reply_type, cookie, len(payload)
        )
        self._send(header + payload)


def block_status_descriptors(
    runs: list[tuple[int, bool]], length: int, req_one: bool
) -> list[tuple[int, int]]:
    """Turn device runs into ``(length, NBD_STATE_*)`` descriptors a client can trust.

    Runs are clipped to the request, merged when their state repeats and capped in number;
    a device that answers nothing usable is reported as data, which is never wrong.
    """
    out: list[tuple[int, int]] = []
    covered = 0
    for run_length, hole in runs:
        run = min(run_length, length - covered)
        if run <= 0:
            break
        state = p.STATE_HOLE | p.STATE_ZERO if hole else 0
        if out and out[-1][1] == state:
            out[-1] = (out[-1][0] + run, state)
        elif len(out) < p.MAX_BLOCK_STATUS_DESCRIPTORS:
            out.append((run, state))
        else:
            break
        covered += run
    if not out:
        out.append((length, 0))
    return out[:1] if req_one else out
