"""Managed VMs (`cairn vm`): owned by the appliance, on real QEMU, reached over real networks.

Every VM a test starts is stopped at teardown (its runner killed if need be), whatever the
test did. Boots take 10-30 s under TCG on a loaded machine, so each test boots few VMs and
checks many things on each.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bootable_image import WEB_PAGE

from cairn.errors import ApplianceRefused
from cairn.store.machine_points import MachinePoints
from cairn.store.repository import Repository
from tests.appliance.harness import Appliance, cairn, free_port, wait_for
from tests.offsite.conftest import s3_env
from tests.s3server import SeaweedS3
from tests.virt.test_virtualize import VNC_AUTH, record_machine_point, security_types

BOOT = 400.0  # the machine is shared: a boot under TCG can take minutes


class Vms:
    """The appliance under test and the `cairn vm` commands, as a user runs them; ``cloud``:
    a cloud repository the appliance's node reaches (same endpoint, cache and keys)."""

    def __init__(self, appliance: Appliance, cloud: str, cli_env: dict[str, str]) -> None:
        self.appliance = appliance
        self.cloud = cloud
        self.cli_env = cli_env
        """the environment of `cairn` commands that reach the cloud themselves (the
        appliance's has no endpoint: it knows only the profile `init` leaves, or what a
        VM's start names)"""
        self.endpoint = cli_env["CAIRN_S3_ENDPOINT"]

    def backup(self, image: Path, volume: str = "web01") -> str:
        out = cairn("backup", "--repo", self.appliance.repo, "--volume", volume, image, "--json")
        return str(json.loads(out.stdout)["point"])

    def run(self, *args: str | Path, check: bool = True) -> Any:
        result = cairn("vm", *args, *self.appliance.admin_args(), "--json", check=check,
                       timeout=600)
        return json.loads(result.stdout) if result.returncode == 0 else result

    def replicate(self, volume: str) -> None:
        """Send the volume's points to `cloud` (a new one), as offsite replication would."""
        cairn("init", "--repo", self.cloud, env=self.cli_env)
        cairn("replicate", "--repo", self.appliance.repo, "--to", self.cloud, "--volume",
              volume, env=self.cli_env)

    def take_cloud_key(self, to: Path) -> Path:
        """Move `cloud`'s integrity key off the appliance's node, and make the node forget
        where the bucket is: from now on only the admin who starts a VM of it knows both
        (``--key-file``, ``--endpoint``)."""
        self.forget_endpoint()
        (key,) = Path(self.appliance.env["CAIRN_KEYS"]).glob("*.key")
        return key.rename(to)

    def forget_endpoint(self) -> None:
        """Drop the node's profile of `cloud` (`cairn.store.profiles`), which `init` and a
        VM start naming the endpoint leave."""
        (Path(self.appliance.env["CAIRN_KEYS"]).parent / "clouds.json").unlink(missing_ok=True)

    def start(self, source: str, name: str, *networks: str, cloud: tuple[str, ...] = (),
              key: Path | None = None) -> dict[str, Any]:
        nets = [a for n in networks for a in ("--network", n)]
        keys = ("--key-file", str(key), "--endpoint", self.endpoint) if key else ()
        vm: dict[str, Any] = self.run("start", *cloud, source, "--name", name, "--cpus", "1",
                                      "--memory", "256", *nets, *keys)
        return vm

    def listed(self) -> dict[str, dict[str, Any]]:
        return {vm["name"]: vm for vm in self.run("list")}

    def serial(self, name: str) -> Serial:
        return Serial(Path(self.run("console", name)["serial"]))


class Serial:
    """The guest's root shell on its first serial port (a unix socket of the VM's runner)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(str(path))
        self.sock.settimeout(1)
        self.seen = b""

    def wait_for(self, text: str, timeout: float = BOOT) -> str:
        self._receive_until(re.compile(re.escape(text.encode())), 0, timeout, repr(text))
        return self.seen.decode(errors="replace")

    def address(self) -> str:
        """The guest's IPv4 address, from the ``NET UP 10.0.0.7/24`` line its init prints."""
        line = re.compile(rb"NET UP ([0-9.]+)/\d+\r?\n")
        return self._receive_until(line, 0, BOOT, "NET UP").group(1).decode()

    def run(self, command: str, marker: str, timeout: float = 60) -> str:
        """Send one command line and return what it printed up to the end of ``marker``'s line.

        The whole line, because the guest's reply can arrive split anywhere: ``EFI=`` alone
        is not yet the answer ``EFI=yes``."""
        start = len(self.seen)
        self.sock.sendall(command.encode() + b"\n")
        answer = re.compile(re.escape(marker.encode()) + rb"[^\n]*\n")
        self._receive_until(answer, start, timeout, f"the line of {marker!r}")
        return self.seen[start:].decode(errors="replace")

    def _receive_until(self, pattern: re.Pattern[bytes], start: int, timeout: float,
                       what: str) -> re.Match[bytes]:
        deadline = time.monotonic() + timeout
        while (found := pattern.search(self.seen, start)) is None:
            assert time.monotonic() < deadline, f"{what} never came: {self.seen[-500:]!r}"
            with contextlib.suppress(TimeoutError):
                received = self.sock.recv(65536)
                # An empty read is the end: QEMU has gone, and waiting on would only spin.
                assert received, f"the serial port closed before {what}: {self.seen[-500:]!r}"
                self.seen += received
        return found

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def vms(tmp_path: Path, s3_server: SeaweedS3) -> Iterator[Vms]:
    cli_env = s3_env(s3_server, tmp_path)
    appliance = Appliance(tmp_path, env={k: v for k, v in cli_env.items()
                                         if k != "CAIRN_S3_ENDPOINT"})
    appliance.start()
    try:
        yield Vms(appliance, f"s3://{s3_server.bucket}/vms-{tmp_path.name}", cli_env)
    finally:
        for status in (appliance.repo / "vms").glob("*/status.json"):
            with contextlib.suppress(ValueError, OSError):
                fields = json.loads(status.read_text())
                with contextlib.suppress(ProcessLookupError, KeyError, TypeError):
                    os.kill(fields["pid"], signal.SIGKILL)
                for scratch in fields.get("scratch", []):  # what the killed runner leaves
                    shutil.rmtree(scratch, ignore_errors=True)
        appliance.stop()


def fetch(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
        return str(answer.read().decode())


def test_vm_outlives_its_command_and_the_appliance_and_stops_cleanly(
        vms: Vms, bootable_image: Path) -> None:
    point = vms.backup(bootable_image)
    port = free_port()
    vm = vms.start(point, "web", f"nat,hostfwd=tcp:127.0.0.1:{port}-:80")
    assert vm["state"] == "running" and vm["point"] == point and vm["volume"] == "web01"
    assert vm["disk_bus"] == "virtio" and vm["firmware"] == "bios"  # a Linux disk with an MBR
    serial = vms.serial("web")
    assert serial.address() == "10.0.2.15"  # QEMU's DHCP: NAT is up
    assert fetch(port) == WEB_PAGE + "\n"  # the port forward answers from the host
    serial.close()

    console = vms.run("console", "web")
    assert len(console["password"]) == 8
    assert security_types(int(console["vnc"].rsplit(":", 1)[1])) == [VNC_AUTH]
    clash = vms.run("start", point, "--name", "web", check=False)
    assert clash.returncode == 1 and "exists" in clash.stderr, clash.stderr

    vms.appliance.stop()  # the VM belongs to no process of the appliance's
    assert fetch(port) == WEB_PAGE + "\n"
    vms.appliance.start()
    assert vms.listed()["web"]["state"] == "running"

    stopped = vms.run("stop", "web", "--timeout", "120")
    assert stopped["forced"] is False  # the guest heard the ACPI power button
    assert stopped["kept_clones"] == vm["clones"]
    assert vms.listed() == {}
    with pytest.raises(OSError):
        fetch(port)
    clones = cairn("clones", "--repo", vms.appliance.repo, "--json").stdout
    assert [c["name"] for c in json.loads(clones)] == vm["clones"]


def test_isolated_lan_joins_its_vms_and_nothing_else(
        vms: Vms, bootable_image: Path, tmp_path: Path) -> None:
    """Also: a VM of a cloud point ("other", from the bucket, read on demand, with a key the
    appliance's node does not hold) boots and runs like a local one, says where it came
    from, and its kept clone starts again."""
    point = vms.backup(bootable_image)
    vms.replicate("web01")
    key = vms.take_cloud_key(tmp_path / "cloud.key")
    refuse_bad_cloud_starts(vms, key, tmp_path)
    for lan in ("office", "lab"):
        vms.run("lan", "add", lan)
    vms.start(point, "dc", "isolated:office")
    vms.start(point, "app", "isolated:office")
    cloud_vm = vms.start("web01@latest", "other", "isolated:lab", cloud=(vms.cloud,), key=key)
    assert (cloud_vm["point"], cloud_vm["origin"]) == (point, vms.cloud)
    dc, app, other = (vms.serial(name) for name in ("dc", "app", "other"))
    dc_ip, app_ip = dc.address(), app.address()
    other.address()
    assert dc_ip != app_ip
    assert "2 packets received" in app.run(f"ping -c 2 -W 5 {dc_ip}", "packet loss")
    assert "0 packets received" in other.run(f"ping -c 2 -W 2 {dc_ip}", "packet loss")
    outside = dc.run("ping -c 1 -W 2 10.0.2.2 >/dev/null 2>&1; echo 'P''ING='$?", "PING=")
    assert "PING=1" in outside  # no route off the LAN
    listed = vms.listed()
    assert listed["dc"]["networks"] == ["isolated:office"]
    assert (listed["dc"]["origin"], listed["other"]["origin"]) == ("local", vms.cloud)
    refused = vms.run("stop", "other", "--keep-as-point", check=False)
    assert refused.returncode != 0 and "cloud repository" in refused.stderr, refused.stderr
    assert vms.listed()["other"]["state"] == "running"  # the refusal stopped nothing
    busy = vms.run("lan", "rm", "office", check=False)
    assert busy.returncode != 0 and "app, dc" in busy.stderr, busy.stderr
    for name in ("dc", "app"):
        vms.run("stop", name, "--discard", "--timeout", "0")
    kept = vms.run("stop", "other", "--timeout", "0")["kept_clones"]
    assert kept == cloud_vm["clones"]
    again = vms.start(kept[0], "other", cloud=(vms.cloud,), key=key)  # the kept cloud clone
    assert (again["state"], again["clones"], again["origin"]) == ("running", kept, vms.cloud)
    vms.forget_endpoint()  # the stop reaches the bucket where the VM's start said
    vms.run("stop", "other", "--discard", "--timeout", "0")
    vms.run("lan", "rm", "office")
    assert [lan["name"] for lan in vms.run("lan", "list")] == ["lab"]
    cloud_clones = cairn("clones", "--repo", vms.cloud, "--key-file", key, "--json",
                         env=vms.cli_env)
    assert json.loads(cloud_clones.stdout) == []  # --discard removed the cloud VM's clone


def refuse_bad_cloud_starts(vms: Vms, key: Path, tmp_path: Path) -> None:
    """A start of a cloud point is refused in one line (REST: a 4xx with it) when no key
    or a wrong one is given, the endpoint does not answer, or the bucket lacks the point;
    nothing is kept (no VM, no key, no clone)."""
    wrong = tmp_path / "wrong.key"
    wrong.write_text("integrity " + "ab" * 32 + "\n")
    nowhere = f"http://127.0.0.1:{free_port()}"
    there = ("--endpoint", vms.endpoint)
    refusals = {
        "pass --key-file": ("web01@latest", *there),
        "the key given is not the key of": ("web01@latest", "--key-file", wrong, *there),
        f"cannot reach the S3 endpoint {nowhere}": ("web01@latest", "--key-file", key,
                                                    "--endpoint", nowhere),
        f"no volume 'nope' in {vms.cloud}": ("nope@latest", "--key-file", key, *there),
        f"no recovery point 'feedfacecafe' in {vms.cloud}": ("feedfacecafe", "--key-file",
                                                               key, *there),
    }
    for words, args in refusals.items():
        refused = vms.run("start", vms.cloud, *args, check=False)
        assert refused.returncode != 0 and words in refused.stderr, (args, refused.stderr)
        assert len(refused.stderr.strip().splitlines()) == 1
    with vms.appliance.admin() as api, pytest.raises(ApplianceRefused) as answer:
        api.json("POST", "/api/v1/vms", json={"source": "web01@latest", "repo": vms.cloud,
                                              "endpoint": nowhere})
    assert answer.value.status == 400 and "cannot reach" in str(answer.value)
    assert list((vms.appliance.repo / "cloud-keys").glob("*")) == []
    assert vms.listed() == {}


def test_failback_keeps_what_the_vm_wrote_even_after_its_runner_died(
        vms: Vms, bootable_image: Path, tmp_path: Path) -> None:
    point = vms.backup(bootable_image)
    vm = vms.start("web01@latest", "db")
    serial = vms.serial("db")
    serial.wait_for("/ #")
    offset = 40 * 1024 * 1024
    written = b"FAILBACK" * 81920  # 640 KiB, ten 64 KiB blocks
    serial.run(f"yes FAILBACK | tr -d '\\n' | head -c {len(written)} | dd of=/dev/vda bs=65536 "
               f"seek={offset // 65536} conv=fsync 2>&1; echo WROTE $?", "WROTE 0")
    disk = vm["clones"][0]
    for export in (("export", "--repo", vms.appliance.repo, disk, "--nbd", "127.0.0.1:0"),
                   ("exports", "start", disk, "--writable", *vms.appliance.admin_args())):
        taken = cairn(*export, check=False)  # its clone has one writer: the VM
        assert taken.returncode == 1 and len(taken.stderr.strip().splitlines()) == 1
        assert f"clone {disk} is written by VM db: stop it first (`cairn vm stop db`" \
            in taken.stderr, taken.stderr
    scratch = [Path(p) for p in json.loads(
        (vms.appliance.repo / "vms" / "db" / "status.json").read_text())["scratch"]]
    assert len(scratch) == 2 and all(p.is_dir() for p in scratch)  # the disks', QEMU's
    os.kill(vm["pid"], signal.SIGKILL)  # a host crash, as far as the VM is concerned
    assert wait_for(lambda: vms.listed()["db"]["state"] == "gone", timeout=30)
    assert [p for p in scratch if p.exists()] == []  # what the killed runner left: removed

    stopped = vms.run("stop", "db", "--keep-as-point")
    new = stopped["point"]
    assert new and new != point and stopped["kept_clones"] == []
    restored = tmp_path / "failback.img"
    cairn("restore", "--repo", vms.appliance.repo, new, restored)
    expected = bytearray(bootable_image.read_bytes())
    expected[offset:offset + len(written)] = written
    assert restored.read_bytes() == bytes(expected)
    assert json.loads(cairn("clones", "--repo", vms.appliance.repo, "--json").stdout) == []


def test_bad_requests_are_refused_before_anything_starts(
        vms: Vms, bootable_image: Path, unbootable_image: Path) -> None:
    point = vms.backup(bootable_image)
    broken = vms.backup(unbootable_image, "broken")
    vms.run("lan", "add", "office")
    refusals = {
        "no isolated LAN 'ofice' (declared: office)": ("start", point, "--network",
                                                       "isolated:ofice"),
        "already declared": ("lan", "add", "office"),
        "invalid LAN name": ("lan", "add", "no/slash"),
        "no known boot loader": ("start", broken),
        "no bridge 'cairn-nope0'": ("start", point, "--network", "bridge:cairn-nope0"),
        "is not none, isolated:LAN": ("start", point, "--network", "wifi"),
        "no volume 'nope'": ("start", "nope@latest"),
        "no VM named": ("stop", "ghost"),
        "is not a cloud repository": ("start", str(vms.appliance.repo), point),
    }
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        used = taken.getsockname()[1]
        refusals["already in use"] = ("start", point, "--network",
                                      f"nat,hostfwd=tcp:127.0.0.1:{used}-:80")
        for words, args in refusals.items():
            result = vms.run(*args, check=False)
            assert result.returncode != 0 and words in result.stderr, (args, result.stderr)
            assert len(result.stderr.strip().splitlines()) == 1
    assert vms.listed() == {}
    assert json.loads(cairn("clones", "--repo", vms.appliance.repo, "--json").stdout) == []


def test_a_disk_with_an_efi_system_partition_boots_with_uefi(vms: Vms, uefi_image: Path) -> None:
    point = vms.backup(uefi_image, "efi01")
    vm = vms.start(point, "efi")
    assert (vm["firmware"], vm["disk_bus"]) == ("uefi", "sata")  # no Linux partition: SATA
    serial = vms.serial("efi")
    serial.wait_for("/ #")
    assert "EFI=yes" in serial.run("[ -d /sys/firmware/efi ] && echo 'E''FI=yes'", "EFI=")
    stopped = vms.run("stop", "efi", "--discard", "--timeout", "60")
    assert stopped["kept_clones"] == [] and vms.listed() == {}


def test_a_machine_point_runs_with_all_its_disks_in_order(
        vms: Vms, bootable_image: Path, tmp_path: Path) -> None:
    data = tmp_path / "data.img"
    data.write_bytes(b"SECOND DISK OF PC1".ljust(16 * 1024 * 1024, b"\0"))
    system = vms.backup(bootable_image, "pc1-sda")
    second = vms.backup(data, "pc1-sdb")
    record_machine_point(vms.appliance.repo, "pc1", {"sda": system, "sdb": second})
    vm = vms.start("pc1@latest", "pc1")
    assert len(vm["clones"]) == 2
    serial = vms.serial("pc1")
    serial.wait_for("/ #")
    assert "SECOND DISK OF PC1" in serial.run("head -c 18 /dev/vdb; echo; echo 'D''ONE'", "DONE")
    serial.run("echo -n FAILBACK | dd of=/dev/vdb bs=8 seek=1 conv=fsync 2>/dev/null; "
               "echo 'W''ROTE'", "WROTE")
    stopped = vms.run("stop", "pc1", "--keep-as-point", "--timeout", "0")
    with contextlib.closing(Repository.open(vms.appliance.repo)) as store:
        machine_point = MachinePoints(store.catalog).get(stopped["point"])
        assert machine_point is not None
        assert [m.disk for m in machine_point.members] == ["sda", "sdb"]
        new_second = machine_point.members[1].point.id
    restored = tmp_path / "sdb.img"
    cairn("restore", "--repo", vms.appliance.repo, new_second, restored)
    expected = bytearray(data.read_bytes())
    expected[8:16] = b"FAILBACK"
    assert restored.read_bytes() == bytes(expected)
