"""The NBD option haggling phase: from the greeting to the first transmission request.

Everything a client sends here is untrusted: every length is checked against what is left
of the option and against `MAX_STRING`, an option longer than `MAX_OPTION_LENGTH` is refused
without being read, and anything that leaves the stream out of step (a bad magic, unknown
client flags, an unknown name with ``NBD_OPT_EXPORT_NAME``) ends the session by raising
`Disconnected`, which the server treats as a normal end of connection.

An export with a name is a secret: ``NBD_OPT_LIST`` never reveals it (only the unnamed
default export is listed). With a TLS context, ``NBD_OPT_STARTTLS`` upgrades the socket and
every other option before it is answered ``NBD_REP_ERR_TLS_REQD`` (``NBD_OPT_EXPORT_NAME``,
which cannot carry an error, closes): no byte of the export and not even its size is sent
in the clear.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass

from cairn.virt import nbd_protocol as p
from cairn.virt.device import BlockDevice

META_CONTEXT_ID = 1


@dataclass(frozen=True)
class Export:
    """What one NBD export offers: a device under a name, and its advertised block sizes."""

    name: str
    device: BlockDevice
    preferred_block: int = 4096
    tls: ssl.SSLContext | None = None

    @property
    def flags(self) -> int:
        flags = p.TFLAG_HAS_FLAGS | p.TFLAG_CAN_MULTI_CONN
        if self.device.read_only:
            return flags | p.TFLAG_READ_ONLY
        return (
            flags
            | p.TFLAG_SEND_FLUSH
            | p.TFLAG_SEND_FUA
            | p.TFLAG_SEND_TRIM
            | p.TFLAG_SEND_WRITE_ZEROES
        )


@dataclass
class Session:
    """What the client negotiated; the transmission phase obeys it."""

    structured: bool = False
    meta_export: str | None = None  # export name base:allocation was selected for, if any
    tls: bool = False

    @property
    def block_status(self) -> bool:
        return self.structured and self.meta_export is not None


class _Invalid(Exception):
    """The option payload is malformed; answered with NBD_REP_ERR_INVALID."""


class _Reader:
    """Bounds-checked cursor over one option payload."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, length: int) -> bytes:
        if length < 0 or self.pos + length > len(self.data):
            raise _Invalid("length runs past the end of the option")
        chunk = self.data[self.pos : self.pos + length]
        self.pos += length
        return bytes(chunk)

    def u16(self) -> int:
        return int(struct.unpack(">H", self.take(2))[0])

    def u32(self) -> int:
        return int(struct.unpack(">I", self.take(4))[0])

    def string(self) -> str:
        length = self.u32()
        if length > p.MAX_STRING:
            raise _Invalid("string longer than 4096 bytes")
        try:
            return self.take(length).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid("string is not UTF-8") from exc

    def end(self) -> None:
        if self.pos != len(self.data):
            raise _Invalid("trailing bytes after the option")


def _reply(sock: socket.socket, option: int, reply: int, data: bytes = b"") -> None:
    p.send_all(sock, p.OPTION_REPLY.pack(p.OPTION_REPLY_MAGIC, option, reply, len(data)) + data)


def negotiate(sock: socket.socket, export: Export) -> tuple[Session | None, socket.socket]:
    """Run the fixed newstyle handshake; return the session (None if the client aborted)
    and the socket to go on with (a TLS one after ``NBD_OPT_STARTTLS``)."""
    p.send_all(sock, p.SERVER_GREETING.pack(p.NBDMAGIC, p.IHAVEOPT, p.CLIENT_FLAGS_KNOWN))
    (client_flags,) = p.CLIENT_FLAGS.unpack(p.recv_exact(sock, p.CLIENT_FLAGS.size))
    if client_flags & ~p.CLIENT_FLAGS_KNOWN:
        raise p.Disconnected(f"unknown client flags {client_flags:#x}")
    no_zeroes = bool(client_flags & p.FLAG_NO_ZEROES)
    session = Session()
    while True:
        option, data = _read_option(sock)
        if option == p.OPT_ABORT:
            _reply(sock, option, p.REP_ACK)
            return None, sock
        if option == p.OPT_STARTTLS:
            sock = _starttls(sock, export, session, data)
            continue
        if export.tls is not None and not session.tls:
            if option == p.OPT_EXPORT_NAME:
                raise p.Disconnected("NBD_OPT_EXPORT_NAME before STARTTLS")
            _reply(sock, option, p.REP_ERR_TLS_REQD, b"this export needs TLS: use STARTTLS")
            continue
        if option == p.OPT_EXPORT_NAME:
            _export_name(sock, export, data, no_zeroes)
            return session, sock
        try:
            done = _option(sock, export, session, option, data)
        except _Invalid as exc:
            _reply(sock, option, p.REP_ERR_INVALID, str(exc).encode())
            continue
        if done:
            return session, sock


def _read_option(sock: socket.socket) -> tuple[int, bytes]:
    """One option and its payload; an option claiming too many bytes is never read."""
    magic, option, length = p.OPTION_HEADER.unpack(p.recv_exact(sock, p.OPTION_HEADER.size))
    if magic != p.IHAVEOPT:
        raise p.Disconnected(f"bad option magic {magic:#x}")
    if length > p.MAX_OPTION_LENGTH:
        if option != p.OPT_EXPORT_NAME:
            _reply(sock, option, p.REP_ERR_TOO_BIG)
        raise p.Disconnected(f"option {option} claims {length} bytes")
    return option, bytes(p.recv_exact(sock, length))


def _starttls(sock: socket.socket, export: Export, session: Session, data: bytes
              ) -> socket.socket:
    """Upgrade to TLS once; a bad handshake ends the connection (`Disconnected`)."""
    if export.tls is None:
        _reply(sock, p.OPT_STARTTLS, p.REP_ERR_UNSUP, b"this export does not offer TLS")
        return sock
    if data or session.tls:
        _reply(sock, p.OPT_STARTTLS, p.REP_ERR_INVALID, b"STARTTLS takes no data, once")
        return sock
    _reply(sock, p.OPT_STARTTLS, p.REP_ACK)
    try:
        tls = export.tls.wrap_socket(sock, server_side=True)
    except (ssl.SSLError, OSError) as exc:
        raise p.Disconnected(f"TLS handshake failed: {exc}") from exc
    session.tls = True
    return tls


def _export_name(sock: socket.socket, export: Export, data: bytes, no_zeroes: bool) -> None:
    """Old-style selection: no way to report an error, so a wrong name closes the connection."""
    try:
        name = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise p.Disconnected("export name is not UTF-8") from exc
    if name != export.name:
        raise p.Disconnected(f"unknown export {name!r}")
    reply = p.EXPORT_NAME_REPLY.pack(export.device.size, export.flags)
    p.send_all(sock, reply if no_zeroes else reply + bytes(124))


def _option(
    sock: socket.socket, export: Export, session: Session, option: int, data: bytes
) -> bool:
    """Answer one option; True when the handshake is over (a successful NBD_OPT_GO)."""
    if option == p.OPT_LIST:
        if data:
            raise _Invalid("NBD_OPT_LIST takes no data")
        if not export.name:
            _reply(sock, option, p.REP_SERVER, struct.pack(">I", 0))
        _reply(sock, option, p.REP_ACK)
    elif option in (p.OPT_INFO, p.OPT_GO):
        return _info_or_go(sock, export, session, option, data)
    elif option == p.OPT_STRUCTURED_REPLY:
        if data:
            raise _Invalid("NBD_OPT_STRUCTURED_REPLY takes no data")
        session.structured = True
        _reply(sock, option, p.REP_ACK)
    elif option in (p.OPT_LIST_META_CONTEXT, p.OPT_SET_META_CONTEXT):
        _meta_context(sock, export, session, option, data)
    else:
        _reply(sock, option, p.REP_ERR_UNSUP)
    return False


def _info_or_go(
    sock: socket.socket, export: Export, session: Session, option: int, data: bytes
) -> bool:
    reader = _Reader(data)
    name = reader.string()
    requests = [reader.u16() for _ in range(reader.u16())]
    reader.end()
    if name != export.name:
        _reply(sock, option, p.REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
        return False
    info = struct.pack(">HQH", p.INFO_EXPORT, export.device.size, export.flags)
    _reply(sock, option, p.REP_INFO, info)
    sizes = struct.pack(">HIII", p.INFO_BLOCK_SIZE, 1, export.preferred_block, p.MAX_PAYLOAD)
    _reply(sock, option, p.REP_INFO, sizes)
    if p.INFO_NAME in requests:
        _reply(sock, option, p.REP_INFO, struct.pack(">H", p.INFO_NAME) + name.encode())
    _reply(sock, option, p.REP_ACK)
    if option != p.OPT_GO:
        return False
    if session.meta_export != name:
        session.meta_export = None
    return True


def _meta_context(
    sock: socket.socket, export: Export, session: Session, option: int, data: bytes
) -> None:
    reader = _Reader(data)
    name = reader.string()
    count = reader.u32()
    if count > p.MAX_OPTION_LENGTH // 4:
        raise _Invalid("too many meta context queries")
    queries = [reader.string() for _ in range(count)]
    reader.end()
    setting = option == p.OPT_SET_META_CONTEXT
    if setting and not session.structured:
        raise _Invalid("negotiate NBD_OPT_STRUCTURED_REPLY before NBD_OPT_SET_META_CONTEXT")
    if name != export.name:
        _reply(sock, option, p.REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
        return
    if setting:
        selected = p.BASE_ALLOCATION in queries
        session.meta_export = name if selected else None
    else:
        selected = not queries or any(q in ("base:", p.BASE_ALLOCATION) for q in queries)
    if selected:
        context_id = META_CONTEXT_ID if setting else 0
        reply = struct.pack(">I", context_id) + p.BASE_ALLOCATION.encode()
        _reply(sock, option, p.REP_META_CONTEXT, reply)
    _reply(sock, option, p.REP_ACK)
