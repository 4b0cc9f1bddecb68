"""An NBD server that exports one `BlockDevice`, so QEMU, qemu-img and nbdcopy read points.

Reads on one connection are served in parallel and answered out of order (see
`cairn.virt.nbd_transmission`).

A recovery point (read-only) or a writable clone becomes a disk any NBD client can use:
``NbdServer(device, "127.0.0.1", 0)`` listens, a thread serves each connection, and
`close()` ends the listener and every client. The server promises never to crash or hang
on what a client sends: lengths are bounded, ranges are checked, a broken client only ends
its own connection, and a device error reaches the client as an NBD error (EIO).

Wire format (big-endian; "fixed newstyle" of the NBD protocol, doc/proto.md):

Handshake::

    S: u64 "NBDMAGIC"  u64 "IHAVEOPT"  u16 flags = FIXED_NEWSTYLE | NO_ZEROES
    C: u32 client flags (only FIXED_NEWSTYLE | NO_ZEROES; anything else closes)
    C: u64 "IHAVEOPT"  u32 option  u32 length  <length bytes>   (repeated; length <= 16 KiB
       or the server answers NBD_REP_ERR_TOO_BIG and closes)
    S: u64 0x3e889045565a9  u32 option  u32 reply type  u32 length  <length bytes>

Options answered: EXPORT_NAME (1; reply u64 size, u16 transmission flags, 124 zero bytes
unless NO_ZEROES; a wrong name closes), ABORT (2; ACK then close), LIST (3; one REP_SERVER
``u32 len, name`` then ACK), INFO (6) and GO (7) (data ``u32 len, name, u16 n, n x u16
info type``; replies REP_INFO EXPORT ``u16 0, u64 size, u16 flags``, REP_INFO BLOCK_SIZE
``u16 3, u32 min=1, u32 preferred, u32 max=32 MiB``, REP_INFO NAME if asked, then ACK; an
unknown name gets REP_ERR_UNKNOWN), STRUCTURED_REPLY (8), LIST_META_CONTEXT (9) and
SET_META_CONTEXT (10) (data ``u32 len, name, u32 n, n x (u32 len, query)``; the only context
is ``base:allocation``, id 1; REP_META_CONTEXT ``u32 id, name`` then ACK). Malformed data
gets REP_ERR_INVALID, other options REP_ERR_UNSUP.

Transmission flags: HAS_FLAGS, CAN_MULTI_CONN, and READ_ONLY for a read-only device, else
SEND_FLUSH, SEND_FUA, SEND_TRIM, SEND_WRITE_ZEROES.

Transmission::

    C: u32 0x25609513  u16 flags  u16 type  u64 cookie  u64 offset  u32 length  [payload]
    S: simple      u32 0x67446698  u32 error  u64 cookie  [read data]
    S: structured  u32 0x668e33ef  u16 flags=DONE  u16 type  u64 cookie  u32 length  payload

Commands: READ (0), WRITE (1, FUA), DISC (2), FLUSH (3), TRIM (4, FUA), WRITE_ZEROES (6, FUA,
NO_HOLE), BLOCK_STATUS (7, REQ_ONE). Once structured replies are negotiated every reply is a
single chunk: OFFSET_DATA ``u64 offset, data`` for reads, BLOCK_STATUS ``u32 context id,
n x (u32 length, u32 flags)`` with holes as HOLE|ZERO (3) and data as 0, NONE for success,
ERROR ``u32 error, u16 len, message`` for failures. Errors: EPERM (writes to a read-only
export), EINVAL (bad range, length over 32 MiB, unknown command or flag, block status without
``base:allocation``), ENOSPC (writes and write-zeroes past the end), EIO (device failure). A
write payload over 32 MiB is answered with EINVAL and the connection is closed, since the
stream cannot be resynchronised without reading it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import struct
import threading
from pathlib import Path

from cairn.errors import ListenError, UsageError
from cairn.virt import nbd_protocol as p
from cairn.virt.device import BlockDevice
from cairn.virt.nbd_handshake import Export, negotiate
from cairn.virt.nbd_transmission import Transmission

log = logging.getLogger(__name__)

UNIX_PATH_MAX = 107
"""bytes of a unix socket's path at most (``sun_path`` holds 108, the last a NUL)"""


class NbdServer:
    """Serve one device as one NBD export to many clients, a thread per connection.

    ``serialize`` (default True) calls the device from one thread at a time; pass False when
    the device is safe to call concurrently, so several connections read in parallel.
    A client has ``handshake_timeout`` seconds in all to finish negotiating (however slowly
    it trickles bytes), then is closed after ``idle_timeout`` seconds without a request
    (None: never, for a VM's own disk, which may sit idle for hours). Connections beyond
    ``max_clients`` are closed at once. With ``unix_path`` the export listens on a unix
    socket (mode 0600) instead of TCP: reachable only by this user. With ``tls`` (a server
    context) clients must upgrade with STARTTLS before anything else.
    """

    # Keyword-only settings with defaults (PLR0913): callers name the few they change.
    def __init__(  # noqa: PLR0913
        self,
        device: BlockDevice,
        host: str = "127.0.0.1",
        port: int = 0,
        export_name: str = "",
        *,
        serialize: bool = True,
        preferred_block: int = 4096,
        handshake_timeout: float = 30.0,
        idle_timeout: float | None = None,
        max_clients: int = 64,
        unix_path: Path | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.export = Export(export_name, device, preferred_block, tls)
        self.host = host
        self.port = port
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_clients = max_clients
        self.unix_path = unix_path
        self._lock: contextlib.AbstractContextManager[object] = (
            threading.Lock() if serialize else contextlib.nullcontext()
        )
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._clients: dict[int, threading.Thread] = {}  # by file descriptor
        self._state = threading.Lock()
        self._closed = threading.Event()

    @property
    def connections(self) -> int:
        """How many clients are connected right now (for status pages and leak checks)."""
        with self._state:
            return len(self._clients)

    def start(self) -> None:
        """Bind and listen (port 0 picks a free port, then in `port`); accept in a thread.

        Raises `ListenError` when the address cannot be bound (port taken, bad address).
        """
        if self._listener is not None:
            return
        try:
            listener = self._listen()
        except OSError as exc:
            raise ListenError("NBD", self.host, self.port, exc.strerror or str(exc)) from exc
        self._listener = listener
        if self.unix_path is None:
            self.port = listener.getsockname()[1]
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name=f"nbd-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def _listen(self) -> socket.socket:
        if self.unix_path is None:
            family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
            return socket.create_server((self.host, self.port), family=family, backlog=64)
        path = os.fsencode(self.unix_path)
        if len(path) > UNIX_PATH_MAX:
            raise UsageError(
                f"cannot serve NBD on the unix socket {self.unix_path}: its path is "
                f"{len(path)} bytes, and a unix socket's may not pass {UNIX_PATH_MAX}; "
                "set TMPDIR to a shorter folder (such as /tmp)")
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            old = os.umask(0o177)
            try:
                listener.bind(str(self.unix_path))
            finally:
                os.umask(old)
            listener.listen(64)
        except OSError:
            listener.close()
            raise
        return listener

    def close(self) -> None:
        """Stop listening, disconnect every client and wait for their threads to end."""
        self._closed.set()
        if self._listener is not None:
            _shutdown(self._listener)
            self._listener.close()
        if self._accept_thread is not None:
            self._accept_thread.join()
        if self.unix_path is not None:
            self.unix_path.unlink(missing_ok=True)
        with self._state:
            clients = list(self._clients.items())
        for fd, _ in clients:
            _shutdown_fd(fd)
        for _, thread in clients:
            thread.join()

    def __enter__(self) -> NbdServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._closed.is_set():
            try:
                sock, _ = self._listener.accept()
            except OSError:
                if self._closed.wait(0.05):
                    return
                continue
            with self._state:
                if self._closed.is_set() or len(self._clients) >= self.max_clients:
                    sock.close()
                    continue
                thread = threading.Thread(
                    target=self._serve_client, args=(sock,), name="nbd-client", daemon=True
                )
                self._clients[sock.fileno()] = thread
            thread.start()

    def _serve_client(self, sock: socket.socket) -> None:
        """Serve one client; it is tracked by descriptor, which STARTTLS keeps."""
        fd = sock.fileno()
        try:
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.settimeout(self.handshake_timeout)
            deadline = threading.Timer(self.handshake_timeout, _shutdown_fd, (fd,))
            deadline.daemon = True
            deadline.start()
            try:
                session, sock = negotiate(sock, self.export)
            finally:
                deadline.cancel()
            if session is not None:
                _set_idle_timeout(sock, self.idle_timeout)
                Transmission(sock, self.export, session, self._lock).run()
        except p.Disconnected as exc:
            log.debug("NBD client gone: %s", exc)
        except Exception:
            log.exception("NBD connection failed")
        finally:
            with self._state:
                self._clients.pop(fd, None)
            _shutdown(sock)
            sock.close()


def _set_idle_timeout(sock: socket.socket, seconds: float | None) -> None:
    """A plain socket blocks, with the timeout kept by the kernel (SO_RCVTIMEO and
    SO_SNDTIMEO: a call that waits longer fails, and the connection ends): Python's own
    timeout polls before every call, doubling a busy connection's system calls. TLS keeps
    Python's, since its reads would retry on the kernel's timeout."""
    if isinstance(sock, ssl.SSLSocket) or not seconds:
        sock.settimeout(seconds)
        return
    sock.settimeout(None)
    whole = int(seconds)
    value = struct.pack("@ll", whole, max(int((seconds - whole) * 1e6), 0 if whole else 1))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)


def _shutdown_fd(fd: int) -> None:
    """Shut a connection down by descriptor, whatever object (plain or TLS) now owns it."""
    with contextlib.suppress(OSError), socket.socket(fileno=os.dup(fd)) as sock:
        sock.shutdown(socket.SHUT_RDWR)


def _shutdown(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
