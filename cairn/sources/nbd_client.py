"""A blocking NBD client for QEMU's own NBD server: reads and block status over a unix socket.

What it speaks (the NBD protocol document, ``doc/proto.md``; constants in
`cairn.virt.nbd_protocol`)::

    S: NBDMAGIC, IHAVEOPT, handshake flags          C: client flags (fixed newstyle, no zeroes)
    C: OPT_STRUCTURED_REPLY                         S: REP_ACK
    C: OPT_SET_META_CONTEXT export, [contexts]      S: REP_META_CONTEXT id name ..., REP_ACK
    C: OPT_GO export                                S: REP_INFO (size, flags) ..., REP_ACK
    then requests REQUEST(magic, flags, type, cookie, offset, length), each answered by
    structured chunks CHUNK_HEADER(magic, flags, type, cookie, length) + payload until one
    carries REPLY_FLAG_DONE:
      OFFSET_DATA  u64 offset + data          OFFSET_HOLE  u64 offset + u32 length (zeros)
      BLOCK_STATUS u32 context id + (u32 length, u32 flags)*     ERROR u32 error + message

Block status on ``qemu:dirty-bitmap:NAME`` answers flag 1 for extents the bitmap marks dirty;
on ``base:allocation`` flag 2 (``STATE_ZERO``) for extents that read as zeros. One request
covers at most 4 GiB and the server may answer less than asked: callers loop.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import SourceError
from cairn.virt import nbd_protocol as p

REPLY_TYPE_OFFSET_HOLE = 2
DIRTY = 1
MAX_STATUS_LENGTH = 1 << 30
PIECE = 256 * 1024  # nbdcopy's request size


class NbdReadError(SourceError):
    """The NBD server refused a request or broke the protocol."""


class NbdConnection:
    """One negotiated connection to one export; requests go one at a time."""

    def __init__(self, path: Path, export: str, contexts: tuple[str, ...] = (),
                 timeout: float = 60.0) -> None:
        self.export = export
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.cookie = 0
        self.contexts: dict[str, int] = {}
        self.size = 0
        try:
            self.sock.connect(str(path))
            self._handshake(contexts)
        except (OSError, p.Disconnected) as exc:
            self.sock.close()
            raise NbdReadError(f"cannot open NBD export {export!r} at {path}: {exc}") from None
        except BaseException:
            self.sock.close()
            raise

    def _recv(self, length: int) -> bytes:
        return bytes(p.recv_exact(self.sock, length))

    def _option(self, option: int, data: bytes) -> None:
        p.send_all(self.sock, p.OPTION_HEADER.pack(p.IHAVEOPT, option, len(data)), data)

    def _reply(self) -> tuple[int, bytes]:
        magic, _, reply, length = p.OPTION_REPLY.unpack(self._recv(p.OPTION_REPLY.size))
        if magic != p.OPTION_REPLY_MAGIC or length > p.MAX_OPTION_LENGTH:
            raise NbdReadError(f"NBD export {self.export!r}: bad option reply")
        return reply, self._recv(length)

    def _handshake(self, contexts: tuple[str, ...]) -> None:
        magic, opt_magic, _ = p.SERVER_GREETING.unpack(self._recv(p.SERVER_GREETING.size))
        if (magic, opt_magic) != (p.NBDMAGIC, p.IHAVEOPT):
            raise NbdReadError("not an NBD server (no fixed-newstyle greeting)")
        p.send_all(self.sock, p.CLIENT_FLAGS.pack(p.CLIENT_FLAGS_KNOWN))
        self._option(p.OPT_STRUCTURED_REPLY, b"")
        if self._reply()[0] != p.REP_ACK:
            raise NbdReadError("the NBD server has no structured replies")
        name = self.export.encode()
        if contexts:
            queries = b"".join(struct.pack(">I", len(c.encode())) + c.encode() for c in contexts)
            self._option(p.OPT_SET_META_CONTEXT, struct.pack(">I", len(name)) + name
                         + struct.pack(">I", len(contexts)) + queries)
            while (reply := self._reply())[0] == p.REP_META_CONTEXT:
                self.contexts[reply[1][4:].decode()] = struct.unpack(">I", reply[1][:4])[0]
            missing = [c for c in contexts if c not in self.contexts]
            if reply[0] != p.REP_ACK or missing:
                raise NbdReadError(f"NBD export {self.export!r} offers no {missing}")
        self._option(p.OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        while True:
            reply, data = self._reply()
            if reply == p.REP_ACK:
                return
            if reply & p.REP_FLAG_ERROR:
                why = data.decode(errors="replace")
                raise NbdReadError(f"no NBD export {self.export!r} ({why})")
            if reply == p.REP_INFO and struct.unpack(">H", data[:2])[0] == p.INFO_EXPORT:
                self.size = struct.unpack(">Q", data[2:10])[0]

    def _send(self, command: int, offset: int, length: int) -> None:
        self.cookie += 1
        p.send_all(self.sock, p.REQUEST.pack(p.REQUEST_MAGIC, 0, command, self.cookie,
                                             offset, length))

    def _reply_chunk(self, cookies: set[int], offset: int) -> tuple[int, int, int, int]:
        """The next reply chunk's ``(flags, type, payload length, cookie)`` for one of
        ``cookies``; an error chunk raises."""
        magic, flags, kind, cookie, size = p.CHUNK_HEADER.unpack(self._recv(p.CHUNK_HEADER.size))
        if magic != p.STRUCTURED_REPLY_MAGIC or cookie not in cookies:
            raise NbdReadError(f"NBD export {self.export!r}: reply out of order")
        if kind == p.REPLY_TYPE_ERROR:
            payload = self._recv(size)
            error = struct.unpack(">I", payload[:4])[0]
            why = payload[6:].decode(errors="replace")
            raise NbdReadError(f"NBD export {self.export!r} failed a request at offset "
                               f"{offset} (error {error}: {why})")
        return flags, kind, size, cookie

    def _request(self, command: int, offset: int, length: int) -> Iterator[tuple[int, bytes]]:
        """Send one request; yield its reply chunks as ``(type, payload)``."""
        self._send(command, offset, length)
        while True:
            flags, kind, size, _ = self._reply_chunk({self.cookie}, offset)
            payload = self._recv(size)
            if kind != p.REPLY_TYPE_NONE:
                yield kind, payload
            if flags & p.REPLY_FLAG_DONE:
                return

    def read(self, offset: int, length: int) -> bytearray:
        """``length`` bytes at ``offset``; holes the server reports arrive as zeros.

        The range goes out as several requests of at most PIECE bytes at once, so QEMU
        serves them in parallel; replies may come in any order and each data chunk carries
        its offset, so it lands straight in its place in the buffer returned.
        """
        out = bytearray(length)
        view = memoryview(out)
        pending = set()
        for start in range(offset, offset + length, PIECE):
            self._send(p.CMD_READ, start, min(PIECE, offset + length - start))
            pending.add(self.cookie)
        while pending:
            flags, kind, size, cookie = self._reply_chunk(pending, offset)
            if kind == p.REPLY_TYPE_OFFSET_DATA:
                at = struct.unpack(">Q", self._recv(8))[0] - offset
                if at < 0 or at + size - 8 > length:
                    raise NbdReadError(f"NBD export {self.export!r} sent data out of range")
                self._recv_into(view[at : at + size - 8])
            else:
                self._recv(size)  # a hole (already zeros) or nothing
            if flags & p.REPLY_FLAG_DONE:
                pending.discard(cookie)
        return out

    def _recv_into(self, view: memoryview) -> None:
        got = 0
        while got < len(view):
            n = self.sock.recv_into(view[got:])
            if n == 0:
                raise NbdReadError(f"NBD export {self.export!r} closed the connection")
            got += n

    def extents(self, context: str, want: int) -> list[tuple[int, int]]:
        """Sorted ``(offset, length)`` extents whose status has every bit of ``want``."""
        ident = self.contexts[context]
        found: list[tuple[int, int]] = []
        pos = 0
        while pos < self.size:
            length = min(MAX_STATUS_LENGTH, self.size - pos)
            start = pos
            for kind, payload in self._request(p.CMD_BLOCK_STATUS, pos, length):
                if kind != p.REPLY_TYPE_BLOCK_STATUS or payload[:4] != struct.pack(">I", ident):
                    continue
                for i in range(4, len(payload) - 7, 8):
                    size, flags = struct.unpack(">II", payload[i : i + 8])
                    size = min(size, self.size - pos)
                    if flags & want == want and size:
                        if found and found[-1][0] + found[-1][1] == pos:
                            found[-1] = (found[-1][0], found[-1][1] + size)
                        else:
                            found.append((pos, size))
                    pos += size
            if pos == start:
                raise NbdReadError(f"NBD export {self.export!r} answered no block status")
        return found

    def close(self) -> None:
        with contextlib.suppress(OSError, p.Disconnected):
            p.send_all(self.sock, p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0))
        self.sock.close()
