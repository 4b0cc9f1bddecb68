"""The NBD server against the real clients people use: qemu-img, nbdinfo and nbdcopy."""

from __future__ import annotations

import json
import os
import random
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from nbd_client import NbdClient
from nbd_devices import FailingDevice, FileDevice, MemoryDevice

from cairn.virt.nbd import NbdServer
from cairn.virt.nbd_protocol import Disconnected

MiB = 1024 * 1024
SIZE = 8 * MiB
# (offset, length) of the data runs in the test image; everything else is a hole.
DATA_RUNS = [(0, 1 * MiB), (3 * MiB, 512 * 1024), (7 * MiB, 64 * 1024)]

Serve = Callable[..., NbdServer]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=check)


def url(server: NbdServer, name: str = "") -> str:
    return f"nbd://127.0.0.1:{server.port}/{name}"


@pytest.fixture
def image(tmp_path: Path) -> Path:
    """A sparse raw image: random data runs with real holes between them."""
    rng = random.Random(7)
    path = tmp_path / "image.raw"
    with path.open("wb") as f:
        f.truncate(SIZE)
        for offset, length in DATA_RUNS:
            f.seek(offset)
            f.write(rng.randbytes(length))
    return path


@pytest.fixture
def image_device(image: Path) -> Iterator[FileDevice]:
    device = FileDevice(str(image), read_only=True)
    yield device
    device.close()


def test_qemu_img_convert_and_compare_read_the_image_bit_for_bit(
    serve: Serve, image: Path, image_device: FileDevice, tmp_path: Path
) -> None:
    server = serve(image_device)
    out = tmp_path / "copy.raw"
    run("qemu-img", "convert", "-f", "raw", "-O", "raw", url(server), str(out))
    assert out.read_bytes() == image.read_bytes()
    run("qemu-img", "compare", "-f", "raw", "-F", "raw", url(server), str(image))


def test_qemu_img_writes_an_image_into_a_writable_export(
    serve: Serve, image: Path, tmp_path: Path
) -> None:
    device = MemoryDevice(SIZE, data=b"\xff" * SIZE)
    server = serve(device)
    run("qemu-img", "convert", "-n", "-f", "raw", "-O", "raw", str(image), url(server))
    assert device.read(0, SIZE) == image.read_bytes()


def test_nbdinfo_reports_size_flags_block_sizes_and_context(
    serve: Serve, image_device: FileDevice
) -> None:
    server = serve(image_device, export_name="point-1", preferred_block=65536)
    info = json.loads(run("nbdinfo", "--json", url(server, "point-1")).stdout)
    export = info["exports"][0]
    assert export["export-size"] == SIZE
    assert export["is_read_only"] is True
    assert export["can_multi_conn"] is True
    assert export["block_size_minimum"] == 1
    assert export["block_size_preferred"] == 65536
    assert export["block_size_maximum"] == 32 * MiB
    assert "base:allocation" in export["contexts"]
    assert info["protocol"] == "newstyle-fixed"


def test_nbdinfo_map_reports_holes_as_hole_and_zero(serve: Serve, image_device: FileDevice) -> None:
    server = serve(image_device)
    extents = json.loads(run("nbdinfo", "--map", "--json", url(server)).stdout)
    data = [(e["offset"], e["length"]) for e in extents if e["type"] == 0]
    holes = [(e["offset"], e["length"]) for e in extents if e["type"] == 3]
    assert data == DATA_RUNS
    assert sum(length for _, length in data + holes) == SIZE
    assert {e["type"] for e in extents} == {0, 3}


def test_a_named_export_is_never_listed_and_an_unknown_name_is_refused(
    serve: Serve, image_device: FileDevice
) -> None:
    server = serve(image_device, export_name="point-1")
    listing = json.loads(run("nbdinfo", "--list", "--json", url(server)).stdout)
    assert listing["exports"] == []  # the name is the secret: a client must know it
    assert json.loads(run("nbdinfo", "--json", url(server, "point-1")).stdout)["exports"]
    refused = run("nbdinfo", url(server, "nope"), check=False)
    assert refused.returncode != 0
    default = serve(image_device)
    listing = json.loads(run("nbdinfo", "--list", "--json", url(default)).stdout)
    assert [e["export-name"] for e in listing["exports"]] == [""]


def test_nbdcopy_reads_and_writes(serve: Serve, image: Path, tmp_path: Path) -> None:
    source = FileDevice(str(image), read_only=True)
    try:
        reader = serve(source)
        out = tmp_path / "copy.raw"
        run("nbdcopy", url(reader), str(out))
        assert out.read_bytes() == image.read_bytes()
    finally:
        source.close()
    target = MemoryDevice(SIZE, data=os.urandom(SIZE))
    writer = serve(target)
    run("nbdcopy", "--flush", str(image), url(writer))
    assert target.read(0, SIZE) == image.read_bytes()
    assert target.flushes >= 1


def test_a_read_only_export_refuses_writes_from_a_real_client(serve: Serve, image: Path) -> None:
    device = MemoryDevice(SIZE, read_only=True)
    server = serve(device)
    result = run("nbdcopy", str(image), url(server), check=False)
    assert result.returncode != 0
    assert device.blocks == {}


def test_a_device_error_reaches_the_client_as_an_io_error(serve: Serve, tmp_path: Path) -> None:
    device = FailingDevice(SIZE, bad_offset=5 * MiB, bad_length=4096, data=os.urandom(SIZE))
    server = serve(device)
    result = run(
        "qemu-img", "convert", "-O", "raw", url(server), str(tmp_path / "x.raw"), check=False
    )
    assert result.returncode != 0
    assert "Input/output error" in result.stderr
    result = run("nbdcopy", url(server), str(tmp_path / "y.raw"), check=False)
    assert result.returncode != 0


def test_many_clients_at_once(serve: Serve, image: Path, image_device: FileDevice) -> None:
    server = serve(image_device)
    procs = [
        subprocess.Popen(["qemu-img", "compare", "-f", "raw", "-F", "raw", url(server), str(image)])
        for _ in range(6)
    ]
    expected = image.read_bytes()
    failures: list[str] = []

    def read_all() -> None:
        with NbdClient(server.port) as client:
            for offset in range(0, SIZE, MiB):
                if client.read(offset, MiB) != expected[offset : offset + MiB]:
                    failures.append(f"mismatch at {offset}")

    threads = [threading.Thread(target=read_all) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert [proc.wait(timeout=60) for proc in procs] == [0] * 6
    assert failures == []


def test_close_disconnects_connected_clients(serve: Serve) -> None:
    server = serve(MemoryDevice(SIZE))
    client = NbdClient(server.port)
    client.write(0, b"abc")
    closer = threading.Thread(target=server.close)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive()
    with pytest.raises((OSError, Disconnected)):
        client.read(0, 3)
    client.sock.close()


def test_qemu_block_layer_writes_zeroes_discards_and_flushes(serve: Serve) -> None:
    device = MemoryDevice(SIZE, data=b"\x11" * SIZE)
    server = serve(device)
    commands = [
        "write -P 0xab 0 64k",
        "write -f -P 0xcd 1M 4k",
        "write -z 2M 64k",
        "discard 3M 1M",
        "flush",
        "read -P 0xab 0 64k",
        "read -P 0 2M 64k",
    ]
    args = [arg for command in commands for arg in ("-c", command)]
    result = run("qemu-io", "-f", "raw", *args, url(server))
    assert "Pattern verification failed" not in result.stdout
    expected = bytearray(b"\x11" * SIZE)
    expected[0 : 64 * 1024] = b"\xab" * 64 * 1024
    expected[MiB : MiB + 4096] = b"\xcd" * 4096
    expected[2 * MiB : 2 * MiB + 64 * 1024] = bytes(64 * 1024)
    expected[3 * MiB : 4 * MiB] = bytes(MiB)
    assert device.read(0, SIZE) == bytes(expected)
    assert device.flushes >= 2
