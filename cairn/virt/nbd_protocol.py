"""NBD wire constants, struct layouts and the socket helper both phases share.

The numbers come from the NBD protocol document (``doc/proto.md`` in the NBD project); they
are gathered here so the handshake and the transmission code name them instead of repeating
magic numbers, and so tests can speak the protocol with the very same layouts. Every integer
on the wire is big-endian. The full wire format this server implements is described in the
docstring of `cairn.virt.nbd`.
"""

from __future__ import annotations

import errno
import socket
import ssl
import struct

from cairn.errors import StorageFull

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT", also the magic of every client option
OPTION_REPLY_MAGIC = 0x0003E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668E33EF

# Handshake flags (server) and client flags.
FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
CLIENT_FLAGS_KNOWN = FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES

# Options.
OPT_EXPORT_NAME = 1
OPT_ABORT = 2
OPT_LIST = 3
OPT_STARTTLS = 5
OPT_INFO = 6
OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_LIST_META_CONTEXT = 9
OPT_SET_META_CONTEXT = 10

# Option reply types.
REP_ACK = 1
REP_SERVER = 2
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
REP_ERR_UNSUP = REP_FLAG_ERROR | 1
REP_ERR_POLICY = REP_FLAG_ERROR | 2
REP_ERR_INVALID = REP_FLAG_ERROR | 3
REP_ERR_TLS_REQD = REP_FLAG_ERROR | 5
REP_ERR_UNKNOWN = REP_FLAG_ERROR | 6
REP_ERR_TOO_BIG = REP_FLAG_ERROR | 9

# NBD_REP_INFO item types.
INFO_EXPORT = 0
INFO_NAME = 1
INFO_DESCRIPTION = 2
INFO_BLOCK_SIZE = 3

# Transmission flags.
TFLAG_HAS_FLAGS = 1 << 0
TFLAG_READ_ONLY = 1 << 1
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_TRIM = 1 << 5
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TFLAG_CAN_MULTI_CONN = 1 << 8

# Commands and command flags.
CMD_READ = 0
CMD_WRITE = 1
CMD_DISC = 2
CMD_FLUSH = 3
CMD_TRIM = 4
CMD_WRITE_ZEROES = 6
CMD_BLOCK_STATUS = 7
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
CMD_FLAG_REQ_ONE = 1 << 3

# Structured reply chunks.
REPLY_FLAG_DONE = 1 << 0
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) | 1

# Errors (NBD numbers, which happen to match Linux errno).
NBD_EPERM = 1
NBD_EIO = 5
NBD_ENOMEM = 12
NBD_EINVAL = 22
NBD_ENOSPC = 28
NBD_ENOTSUP = 95
NBD_ESHUTDOWN = 108

# base:allocation.
BASE_ALLOCATION = "base:allocation"
STATE_HOLE = 1 << 0
STATE_ZERO = 1 << 1

# Bounds. Strings are capped at 4 KiB by the protocol; an option never needs more than a
# name, a few queries and their lengths, so anything bigger is refused without being read.
MAX_STRING = 4096
MAX_OPTION_LENGTH = 16 * 1024
MAX_PAYLOAD = 32 * 1024 * 1024
MAX_BLOCK_STATUS_DESCRIPTORS = 1 << 16

SERVER_GREETING = struct.Struct(">QQH")  # NBDMAGIC, IHAVEOPT, handshake flags
CLIENT_FLAGS = struct.Struct(">I")
OPTION_HEADER = struct.Struct(">QII")  # IHAVEOPT, option, length
OPTION_REPLY = struct.Struct(">QIII")  # magic, option, reply type, length
EXPORT_NAME_REPLY = struct.Struct(">QH")  # size, transmission flags (then 124 zero bytes)
REQUEST = struct.Struct(">IHHQQI")  # magic, command flags, type, cookie, offset, length
SIMPLE_REPLY = struct.Struct(">IIQ")  # magic, error, cookie
CHUNK_HEADER = struct.Struct(">IHHQI")  # magic, flags, type, cookie, payload length
OFFSET_DATA_HEADER = struct.Struct(">IHHQIQ")  # CHUNK_HEADER, then OFFSET_DATA's offset
IOV_BATCH = 512  # buffers per sendmsg, well under Linux's IOV_MAX of 1024


class Disconnected(Exception):
    """The peer closed the connection or broke the protocol; the session simply ends."""


def recv_exact(sock: socket.socket, length: int) -> bytearray:
    """Read exactly ``length`` bytes or raise `Disconnected` (never returns short)."""
    buf = bytearray(length)
    _recv_into(sock, memoryview(buf))
    return buf


def _recv_into(sock: socket.socket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        try:
            n = sock.recv_into(view[got:])
        except OSError as exc:
            raise Disconnected(str(exc)) from exc
        if n == 0:
            raise Disconnected("peer closed the connection")
        got += n


class Receiver:
    """A connection's incoming bytes through a buffer: a client with many requests in
    flight sends their headers together, and one ``recv`` then takes them all instead of a
    system call per request. What does not fit the buffer (a large write's payload) goes
    straight into its own bytes."""

    def __init__(self, sock: socket.socket, size: int = 64 * 1024) -> None:
        self.sock = sock
        self.size = size
        self._buffer = bytearray()

    def holds(self, length: int) -> bool:
        """Whether ``length`` bytes are buffered already (reading them will not wait)."""
        return len(self._buffer) >= length

    def exact(self, length: int) -> bytes | bytearray:
        """Exactly ``length`` bytes, or `Disconnected`."""
        buf = self._buffer
        if length - len(buf) > self.size:
            out = bytearray(length)
            have = len(buf)
            out[:have] = buf
            buf.clear()
            _recv_into(self.sock, memoryview(out)[have:])
            return out
        while len(buf) < length:
            try:
                chunk = self.sock.recv(self.size)
            except OSError as exc:
                raise Disconnected(str(exc)) from exc
            if not chunk:
                raise Disconnected("peer closed the connection")
            buf += chunk
        out = bytes(buf[:length])
        del buf[:length]
        return out


def send_all(sock: socket.socket, *parts: bytes | memoryview) -> None:
    """Send the parts back to back or raise `Disconnected`.

    On a plain socket they go out with `socket.sendmsg` as they are (a read reply's header
    and the views of its cached blocks: no copy in this process, a syscall per
    `IOV_BATCH` parts unless the socket takes less); TLS has no ``sendmsg``, so there they
    are joined.
    """
    try:
        if isinstance(sock, ssl.SSLSocket):
            sock.sendall(parts[0] if len(parts) == 1 else b"".join(parts))
            return
        pending = list(parts)
        while pending:
            sent = sock.sendmsg(pending[:IOV_BATCH])
            done = 0
            while done < len(pending) and sent >= len(pending[done]):
                sent -= len(pending[done])
                done += 1
            del pending[:done]
            if sent:
                pending[0] = memoryview(pending[0])[sent:]
    except OSError as exc:
        raise Disconnected(str(exc)) from exc


def nbd_error_for(exc: BaseException) -> int:
    """Map a device failure to the NBD error a client can act on (EIO unless it is clearer)."""
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            return NBD_ENOSPC
        if exc.errno in (errno.EPERM, errno.EACCES, errno.EROFS):
            return NBD_EPERM
    if isinstance(exc, StorageFull):
        return NBD_ENOSPC
    if isinstance(exc, MemoryError):
        return NBD_ENOMEM
    return NBD_EIO
