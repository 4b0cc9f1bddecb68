"""Hostile input on the NBD wire: each past NBD-server CVE class is a regression test here.

Every test ends by checking the server still serves a fresh client and leaks no connection,
and no test may hang: sockets carry timeouts, so a server that stops answering fails the test.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import pytest
from nbd_client import (
    NbdClient,
    NbdError,
    connect_raw,
    go_payload,
    greet,
    meta_payload,
    read_option_reply,
    read_until_closed,
    recv_exact,
    send_option,
)
from nbd_devices import FailingDevice, MemoryDevice

from cairn.errors import ListenError
from cairn.virt import nbd_protocol as p
from cairn.virt.nbd import NbdServer
from cairn.virt.nbd_transmission import block_status_descriptors

MiB = 1024 * 1024
SIZE = 4 * MiB

Serve = Callable[..., NbdServer]


@pytest.fixture
def server(serve: Serve, caplog: pytest.LogCaptureFixture) -> Iterator[NbdServer]:
    """A writable 4 MiB export; at teardown it must still work and have logged no bug."""
    caplog.set_level(logging.WARNING, logger="cairn.virt")
    srv = serve(MemoryDevice(SIZE, data=bytes(range(256)) * 16))
    yield srv
    assert_healthy(srv)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def assert_healthy(server: NbdServer) -> None:
    with NbdClient(server.port) as client:
        assert client.read(0, 4096) == server.export.device.read(0, 4096)
    deadline = time.monotonic() + 5
    while server.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.connections == 0


def negotiated(port: int, structured: bool = True) -> socket.socket:
    return NbdClient(port, structured=structured).sock


def request(
    command: int, offset: int = 0, length: int = 0, flags: int = 0, cookie: int = 1
) -> bytes:
    return p.REQUEST.pack(p.REQUEST_MAGIC, flags, command, cookie, offset, length)


def simple_error(sock: socket.socket, cookie: int = 1) -> int:
    magic, error, got = p.SIMPLE_REPLY.unpack(recv_exact(sock, p.SIMPLE_REPLY.size))
    assert (magic, got) == (p.SIMPLE_REPLY_MAGIC, cookie)
    return int(error)


# --- handshake -------------------------------------------------------------------------------


def test_option_payload_claiming_gigabytes_is_refused_without_reading(server: NbdServer) -> None:
    sock = connect_raw(server.port, timeout=5)
    greet(sock)
    send_option(sock, p.OPT_GO, length=0xFFFFFFFF)
    assert read_option_reply(sock)[1] == p.REP_ERR_TOO_BIG
    assert read_until_closed(sock) == b""
    sock.close()


@pytest.mark.parametrize("option", [p.OPT_EXPORT_NAME, p.OPT_INFO, 0xDEAD])
def test_oversized_option_of_any_kind_closes_the_connection(server: NbdServer, option: int) -> None:
    sock = connect_raw(server.port, timeout=5)
    greet(sock)
    send_option(sock, option, b"a" * (p.MAX_OPTION_LENGTH + 1))
    read_until_closed(sock)
    sock.close()


def test_export_name_longer_than_allowed_is_invalid_and_the_session_goes_on(
    server: NbdServer,
) -> None:
    sock = connect_raw(server.port)
    greet(sock)
    send_option(sock, p.OPT_GO, go_payload("n" * (p.MAX_STRING + 1)))
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    send_option(sock, p.OPT_INFO, go_payload(""))
    replies = [read_option_reply(sock)[1] for _ in range(3)]
    assert replies == [p.REP_INFO, p.REP_INFO, p.REP_ACK]
    sock.close()


@pytest.mark.parametrize("name_length", [0xFFFFFFFF, 0x80000000, 5, 1000])
def test_info_with_a_name_length_past_the_payload_is_invalid(
    server: NbdServer, name_length: int
) -> None:
    sock = connect_raw(server.port)
    greet(sock)
    send_option(sock, p.OPT_INFO, struct.pack(">I", name_length) + b"ab\x00\x00")
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    send_option(sock, p.OPT_INFO, go_payload("") + b"junk")
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    send_option(sock, p.OPT_ABORT)
    assert read_option_reply(sock)[1] == p.REP_ACK
    assert read_until_closed(sock) == b""
    sock.close()


def test_old_style_export_name_and_unknown_names(server: NbdServer) -> None:
    sock = connect_raw(server.port)
    greet(sock, p.FLAG_FIXED_NEWSTYLE)
    send_option(sock, p.OPT_EXPORT_NAME, b"")
    size, flags = p.EXPORT_NAME_REPLY.unpack(recv_exact(sock, p.EXPORT_NAME_REPLY.size))
    assert (size, recv_exact(sock, 124)) == (SIZE, bytes(124))
    assert flags & p.TFLAG_SEND_TRIM and not flags & p.TFLAG_READ_ONLY
    sock.sendall(request(p.CMD_READ, 256, 4))
    assert simple_error(sock) == 0 and recv_exact(sock, 4) == bytes([0, 1, 2, 3])
    sock.close()
    sock = connect_raw(server.port, timeout=5)
    greet(sock)
    send_option(sock, p.OPT_GO, go_payload("other"))
    assert read_option_reply(sock)[1] == p.REP_ERR_UNKNOWN
    send_option(sock, p.OPT_EXPORT_NAME, b"other")
    assert read_until_closed(sock) == b""
    sock.close()


def test_options_out_of_order_and_unknown_get_protocol_errors(server: NbdServer) -> None:
    sock = connect_raw(server.port)
    greet(sock)
    send_option(sock, p.OPT_SET_META_CONTEXT, meta_payload("", ["base:allocation"]))
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    for option in (0xDEAD, p.OPT_STARTTLS, 4):
        send_option(sock, option)
        assert read_option_reply(sock)[1] == p.REP_ERR_UNSUP
    send_option(sock, p.OPT_STRUCTURED_REPLY, b"x")
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    send_option(sock, p.OPT_LIST, b"x")
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    send_option(sock, p.OPT_LIST_META_CONTEXT, meta_payload("", []))
    _, reply, data = read_option_reply(sock)
    assert (reply, data[4:]) == (p.REP_META_CONTEXT, b"base:allocation")
    assert read_option_reply(sock)[1] == p.REP_ACK
    send_option(sock, p.OPT_LIST_META_CONTEXT, meta_payload("", ["qemu:dirty-bitmap:x"]))
    assert read_option_reply(sock)[1] == p.REP_ACK
    send_option(sock, p.OPT_LIST_META_CONTEXT, meta_payload("", ["a"]) + b"trailing")
    assert read_option_reply(sock)[1] == p.REP_ERR_INVALID
    sock.close()


def test_a_transmission_request_during_the_handshake_closes(server: NbdServer) -> None:
    sock = connect_raw(server.port, timeout=5)
    greet(sock)
    sock.sendall(request(p.CMD_READ, 0, 512))
    assert read_until_closed(sock) == b""
    sock.close()


def test_unknown_client_flags_close(server: NbdServer) -> None:
    sock = connect_raw(server.port, timeout=5)
    greet(sock, 0x80)
    assert read_until_closed(sock) == b""
    sock.close()


def test_a_silent_client_is_dropped_after_the_handshake_timeout(serve: Serve) -> None:
    srv = serve(MemoryDevice(SIZE), handshake_timeout=0.3)
    sock = connect_raw(srv.port, timeout=5)
    recv_exact(sock, p.SERVER_GREETING.size)
    assert read_until_closed(sock) == b""
    sock.close()


def test_a_trickling_client_is_dropped_at_the_total_handshake_deadline(serve: Serve) -> None:
    """Issue 14: each byte within the per-read timeout must not stretch the handshake."""
    srv = serve(MemoryDevice(SIZE), handshake_timeout=1.0)
    sock = connect_raw(srv.port, timeout=5)
    greet(sock)
    started = time.monotonic()
    trickle = p.OPTION_HEADER.pack(p.IHAVEOPT, p.OPT_GO, 100) + bytes(100)
    with pytest.raises(OSError):
        for byte in trickle:
            sock.sendall(bytes([byte]))
            time.sleep(0.1)
        recv_exact(sock, 1)
    assert time.monotonic() - started < 4
    sock.close()
    deadline = time.monotonic() + 5
    while srv.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.connections == 0


def test_an_idle_client_is_closed_after_the_idle_timeout(serve: Serve) -> None:
    srv = serve(MemoryDevice(SIZE), idle_timeout=0.5)
    with NbdClient(srv.port) as client:
        assert client.read(0, 512) == bytes(512)
        client.sock.settimeout(5)
        assert read_until_closed(client.sock) == b""
    assert srv.connections == 0


class SlowStart(MemoryDevice):
    """Reads of the first block wait until a later read has been served."""

    def __init__(self, size: int) -> None:
        super().__init__(size, data=bytes(range(256)) * 16)
        self.later_served = threading.Event()

    def read(self, offset: int, length: int) -> bytes:
        if offset == 0:
            assert self.later_served.wait(10), "the later read was never served"
        else:
            self.later_served.set()
        return super().read(offset, length)


def test_reads_on_one_connection_run_in_parallel_and_reply_out_of_order(serve: Serve) -> None:
    device = SlowStart(SIZE)
    srv = serve(device, serialize=False)
    sock = negotiated(srv.port)
    sock.sendall(request(p.CMD_READ, 0, 4096, cookie=1) + request(p.CMD_READ, 8192, 4096,
                                                                    cookie=2))
    cookies = []
    for _ in range(2):
        magic, _, kind, cookie, length = p.CHUNK_HEADER.unpack(
            recv_exact(sock, p.CHUNK_HEADER.size))
        assert (magic, kind) == (p.STRUCTURED_REPLY_MAGIC, p.REPLY_TYPE_OFFSET_DATA)
        offset = struct.unpack(">Q", recv_exact(sock, 8))[0]
        assert recv_exact(sock, length - 8) == device.read(offset, 4096)
        cookies.append(cookie)
    assert cookies == [2, 1]  # the second request's reply came first
    sock.close()


def test_connections_beyond_the_limit_are_closed(serve: Serve) -> None:
    srv = serve(MemoryDevice(SIZE), max_clients=2)
    held = [NbdClient(srv.port), NbdClient(srv.port)]
    extra = connect_raw(srv.port, timeout=5)
    assert read_until_closed(extra) == b""
    extra.close()
    for client in held:
        client.close()
    # The server notices the closes on its own threads; until then the slots are taken.
    deadline = time.monotonic() + 5
    while srv.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert_healthy(srv)


def valid_transcript() -> bytes:
    """A whole well-behaved session as the client sends it, to cut and mutate."""

    def option(kind: int, data: bytes = b"") -> bytes:
        return p.OPTION_HEADER.pack(p.IHAVEOPT, kind, len(data)) + data

    return (
        p.CLIENT_FLAGS.pack(p.CLIENT_FLAGS_KNOWN)
        + option(p.OPT_STRUCTURED_REPLY)
        + option(p.OPT_SET_META_CONTEXT, meta_payload("", ["base:allocation"]))
        + option(p.OPT_GO, go_payload(""))
        + request(p.CMD_WRITE, 8192, 4096, cookie=1)
        + os.urandom(4096)
        + request(p.CMD_READ, 0, 4096, cookie=2)
        + request(p.CMD_BLOCK_STATUS, 0, SIZE, cookie=3)
        + request(p.CMD_DISC)
    )


def test_disconnecting_at_every_point_of_a_session_leaks_nothing(server: NbdServer) -> None:
    transcript = valid_transcript()
    cuts = [*range(0, 200), *range(200, len(transcript), 97)]
    for cut in cuts:
        sock = connect_raw(server.port)
        sock.sendall(transcript[:cut])
        sock.close()
    assert_healthy(server)


def test_seeded_mutations_of_a_real_session_never_break_the_server(server: NbdServer) -> None:
    rng = random.Random(1234)
    base = valid_transcript()
    for _ in range(300):
        data = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(data))
            choice = rng.random()
            if choice < 0.6:
                data[pos] ^= 1 << rng.randrange(8)
            elif choice < 0.8:
                data[pos : pos + 4] = rng.randbytes(4)
            else:
                del data[pos : pos + rng.randint(1, 16)]
        sock = connect_raw(server.port)
        sock.settimeout(0.05)
        try:
            sock.sendall(bytes(data))
            while sock.recv(65536):
                pass
        except OSError:
            pass
        finally:
            sock.close()


# --- transmission ----------------------------------------------------------------------------


@pytest.mark.parametrize("structured", [True, False])
def test_ranges_past_the_end_are_rejected_and_the_stream_stays_in_step(
    server: NbdServer, structured: bool
) -> None:
    with NbdClient(server.port, structured=structured) as client:
        cases: list[tuple[Callable[[], object], int]] = [
            (lambda: client.read(SIZE - 1, 2), p.NBD_EINVAL),
            (lambda: client.read(2**64 - 1, 1), p.NBD_EINVAL),
            (lambda: client.read(0, p.MAX_PAYLOAD + 1), p.NBD_EINVAL),
            (lambda: client.write(SIZE - 2, b"abc"), p.NBD_ENOSPC),
            (lambda: client.write(2**63, b"abc"), p.NBD_ENOSPC),
            (lambda: client.write_zeroes(SIZE, 1), p.NBD_ENOSPC),
            (lambda: client.trim(SIZE - 4096, 8192), p.NBD_EINVAL),
            (lambda: client.request(0x42, 0, 0), p.NBD_EINVAL),
            (lambda: client.request(p.CMD_READ, 0, 16, flags=0x8000), p.NBD_EINVAL),
        ]
        for call, error in cases:
            with pytest.raises(NbdError) as info:
                call()
            assert info.value.error == error
        assert client.read(SIZE - 4, 4) == server.export.device.read(SIZE - 4, 4)


def test_block_status_needs_base_allocation(server: NbdServer) -> None:
    with NbdClient(server.port, structured=False) as client:
        with pytest.raises(NbdError) as info:
            client.request(p.CMD_BLOCK_STATUS, 0, 4096)
        assert info.value.error == p.NBD_EINVAL


def test_block_status_of_maximum_size(serve: Serve) -> None:
    device = MemoryDevice(12 * 1024 * MiB)
    device.write(6 * 1024 * MiB, b"x")
    srv = serve(device)
    with NbdClient(srv.port) as client:
        descriptors = client.block_status(0, 0xFFFFFFFF)
        assert descriptors == [(0xFFFFFFFF, 3)]
        assert client.block_status(0, 0xFFFFFFFF, flags=p.CMD_FLAG_REQ_ONE) == descriptors
        near = client.block_status(6 * 1024 * MiB - 4096, 0xFFFFFFFF)
        assert near[:2] == [(4096, 3), (4096, 0)] and sum(n for n, _ in near) == 0xFFFFFFFF
        with pytest.raises(NbdError) as info:
            client.block_status(device.size - 1, 0xFFFFFFFF)
        assert info.value.error == p.NBD_EINVAL
        with pytest.raises(NbdError):
            client.block_status(0, 0)


def test_block_status_descriptors_are_clipped_merged_and_capped() -> None:
    many = [(1, i % 2 == 0) for i in range(3 * p.MAX_BLOCK_STATUS_DESCRIPTORS)]
    out = block_status_descriptors(many, len(many), req_one=False)
    assert len(out) == p.MAX_BLOCK_STATUS_DESCRIPTORS
    assert block_status_descriptors([(10, True), (10, True), (5, False)], 22, False) == [
        (20, 3),
        (2, 0),
    ]
    assert block_status_descriptors([(0, True)], 7, False) == [(7, 0)]
    assert block_status_descriptors([], 7, True) == [(7, 0)]
    assert block_status_descriptors([(-5, True)], 7, False) == [(7, 0)]


def test_oversized_write_is_refused_and_the_connection_closed(server: NbdServer) -> None:
    sock = negotiated(server.port, structured=False)
    sock.settimeout(5)
    sock.sendall(request(p.CMD_WRITE, 0, p.MAX_PAYLOAD + 1))
    assert simple_error(sock) == p.NBD_EINVAL
    assert read_until_closed(sock) == b""
    sock.close()


def test_read_only_export_rejects_every_write_with_eperm(serve: Serve) -> None:
    device = MemoryDevice(SIZE, read_only=True)
    srv = serve(device)
    with NbdClient(srv.port) as client:
        assert client.flags & p.TFLAG_READ_ONLY
        calls: list[Callable[[], object]] = [
            lambda: client.write(0, b"abc"),
            lambda: client.trim(0, 4096),
            lambda: client.write_zeroes(0, 4096),
        ]
        for call in calls:
            with pytest.raises(NbdError) as info:
                call()
            assert info.value.error == p.NBD_EPERM
        client.flush()
        assert client.read(0, 3) == bytes(3)
    assert device.blocks == {}


@pytest.mark.parametrize("structured", [True, False])
def test_a_device_error_is_eio_and_never_silent_data(serve: Serve, structured: bool) -> None:
    data = os.urandom(SIZE)
    srv = serve(FailingDevice(SIZE, bad_offset=MiB, bad_length=1, data=data))
    with NbdClient(srv.port, structured=structured) as client:
        calls: list[Callable[[], object]] = [
            lambda: client.read(MiB - 10, 20),
            lambda: client.write(MiB, b"zz"),
        ]
        if structured:
            calls.append(lambda: client.block_status(0, SIZE))
        for call in calls:
            with pytest.raises(NbdError) as info:
                call()
            assert info.value.error == p.NBD_EIO
        assert client.read(0, MiB) == data[:MiB]


def test_fua_and_flush_reach_the_device(server: NbdServer) -> None:
    device = server.export.device
    assert isinstance(device, MemoryDevice)
    with NbdClient(server.port) as client:
        client.write(0, b"a")
        assert device.flushes == 0
        client.write(0, b"b", fua=True)
        client.flush()
        client.write_zeroes(0, 4096, no_hole=True)
        assert device.flushes == 2
        assert 0 in device.blocks and client.read(0, 4096) == bytes(4096)


def test_close_with_sockets_open_in_every_phase(serve: Serve) -> None:
    srv = serve(MemoryDevice(SIZE))
    mid_handshake = connect_raw(srv.port, timeout=5)
    greet(mid_handshake)
    idle = negotiated(srv.port)
    mid_write = negotiated(srv.port)
    mid_write.sendall(request(p.CMD_WRITE, 0, 65536) + b"x" * 1000)
    deadline = time.monotonic() + 5
    while srv.connections < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    closer = threading.Thread(target=srv.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
    assert srv.connections == 0
    for sock in (mid_handshake, idle, mid_write):
        sock.settimeout(5)
        assert read_until_closed(sock) == b""
        sock.close()
    with pytest.raises(OSError):
        connect_raw(srv.port, timeout=1)


def test_a_taken_port_is_a_clear_error(server: NbdServer) -> None:
    with pytest.raises(ListenError, match=f"127.0.0.1:{server.port}"):
        NbdServer(MemoryDevice(SIZE), "127.0.0.1", server.port).start()
