"""A tiny blocking NBD client for tests: it speaks the wire directly, so tests can also
send what no well-behaved client would (see the raw helpers at the top)."""

from __future__ import annotations

import contextlib
import socket
import struct

from cairn.virt import nbd_protocol as p


class NbdError(Exception):
    def __init__(self, error: int) -> None:
        super().__init__(f"NBD error {error}")
        self.error = error


def connect_raw(port: int, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exact(sock: socket.socket, length: int) -> bytes:
    return bytes(p.recv_exact(sock, length))


def greet(sock: socket.socket, client_flags: int = p.CLIENT_FLAGS_KNOWN) -> None:
    magic, opt_magic, _ = p.SERVER_GREETING.unpack(recv_exact(sock, p.SERVER_GREETING.size))
    assert (magic, opt_magic) == (p.NBDMAGIC, p.IHAVEOPT)
    sock.sendall(p.CLIENT_FLAGS.pack(client_flags))


def send_option(sock: socket.socket, option: int, data: bytes = b"", length: int = -1) -> None:
    size = len(data) if length < 0 else length
    sock.sendall(p.OPTION_HEADER.pack(p.IHAVEOPT, option, size) + data)


def read_option_reply(sock: socket.socket) -> tuple[int, int, bytes]:
    magic, option, reply, length = p.OPTION_REPLY.unpack(recv_exact(sock, p.OPTION_REPLY.size))
    assert magic == p.OPTION_REPLY_MAGIC
    assert length <= 64 * 1024
    return option, reply, recv_exact(sock, length)


def go_payload(name: str, infos: tuple[int, ...] = ()) -> bytes:
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + struct.pack(f">H{len(infos)}H", len(infos), *infos)


def meta_payload(name: str, queries: list[str]) -> bytes:
    raw = name.encode()
    out = struct.pack(">I", len(raw)) + raw + struct.pack(">I", len(queries))
    for query in queries:
        out += struct.pack(">I", len(query.encode())) + query.encode()
    return out


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends before it closes; a socket timeout if it never closes."""
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        pass
    return out


class NbdClient:
    """Negotiates with NBD_OPT_GO and then issues one request at a time."""

    def __init__(self, port: int, export: str = "", structured: bool = True) -> None:
        self.sock = connect_raw(port)
        self.structured = structured
        self.cookie = 0
        greet(self.sock)
        if structured:
            send_option(self.sock, p.OPT_STRUCTURED_REPLY)
            assert read_option_reply(self.sock)[1] == p.REP_ACK
            send_option(
                self.sock, p.OPT_SET_META_CONTEXT, meta_payload(export, ["base:allocation"])
            )
            while read_option_reply(self.sock)[1] != p.REP_ACK:
                pass
        send_option(self.sock, p.OPT_GO, go_payload(export))
        self.size = self.flags = -1
        while True:
            _, reply, data = read_option_reply(self.sock)
            if reply == p.REP_ACK:
                break
            if reply & p.REP_FLAG_ERROR:
                raise NbdError(reply)
            if struct.unpack(">H", data[:2])[0] == p.INFO_EXPORT:
                self.size, self.flags = struct.unpack(">QH", data[2:])

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.sendall(p.REQUEST.pack(p.REQUEST_MAGIC, 0, p.CMD_DISC, 0, 0, 0))
        self.sock.close()

    def __enter__(self) -> NbdClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(
        self, command: int, offset: int, length: int, flags: int = 0, payload: bytes = b""
    ) -> bytes:
        """Send one request and return the read data or block-status payload; raise NbdError."""
        self.cookie += 1
        header = p.REQUEST.pack(p.REQUEST_MAGIC, flags, command, self.cookie, offset, length)
        self.sock.sendall(header + payload)
        return self.reply(self.cookie, length if command == p.CMD_READ else 0)

    def reply(self, cookie: int, read_length: int) -> bytes:
        if not self.structured:
            magic, error, got = p.SIMPLE_REPLY.unpack(recv_exact(self.sock, p.SIMPLE_REPLY.size))
            assert (magic, got) == (p.SIMPLE_REPLY_MAGIC, cookie)
            if error:
                raise NbdError(error)
            return recv_exact(self.sock, read_length)
        out = b""
        error = 0
        while True:
            header = recv_exact(self.sock, p.CHUNK_HEADER.size)
            magic, flags, kind, got, length = p.CHUNK_HEADER.unpack(header)
            assert (magic, got) == (p.STRUCTURED_REPLY_MAGIC, cookie)
            payload = recv_exact(self.sock, length)
            if kind == p.REPLY_TYPE_ERROR:
                error = struct.unpack(">I", payload[:4])[0]
            elif kind == p.REPLY_TYPE_OFFSET_DATA:
                out += payload[8:]
            elif kind == p.REPLY_TYPE_BLOCK_STATUS:
                out += payload
            if flags & p.REPLY_FLAG_DONE:
                break
        if error:
            raise NbdError(error)
        return out

    def read(self, offset: int, length: int) -> bytes:
        return self.request(p.CMD_READ, offset, length)

    def write(self, offset: int, data: bytes, fua: bool = False) -> None:
        self.request(p.CMD_WRITE, offset, len(data), p.CMD_FLAG_FUA if fua else 0, data)

    def trim(self, offset: int, length: int) -> None:
        self.request(p.CMD_TRIM, offset, length)

    def write_zeroes(self, offset: int, length: int, no_hole: bool = False) -> None:
        self.request(p.CMD_WRITE_ZEROES, offset, length, p.CMD_FLAG_NO_HOLE if no_hole else 0)

    def flush(self) -> None:
        self.request(p.CMD_FLUSH, 0, 0)

    def block_status(self, offset: int, length: int, flags: int = 0) -> list[tuple[int, int]]:
        payload = self.request(p.CMD_BLOCK_STATUS, offset, length, flags)
        assert struct.unpack(">I", payload[:4])[0] != 0
        body = payload[4:]
        return [struct.unpack(">II", body[i : i + 8]) for i in range(0, len(body), 8)]
