"""A running QEMU VM (TCG, no OS) with qcow2 disks, to back up from the outside.

The guest runs SeaBIOS and finds nothing to boot, which is enough: QEMU's block layer is live.
Disks are attached with ``share-rw=on`` so HMP ``qemu-io`` on the guest device writes through
the same path a guest write takes (above any filter a backup inserts). Reference images come
from QEMU itself: a ``blockdev-backup sync=full`` copy is the disk at one instant.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cairn.errors import SourceError
from cairn.sources.qmp import Monitor

MIB = 1024 * 1024


@dataclass
class LiveVm:
    folder: Path
    disks: dict[str, int]
    """disk id -> size in bytes"""
    fmt: str = "qcow2"
    name: str = "vm1"
    boot: tuple[Path, Path] | None = None
    """A kernel and initramfs to boot (the guest agent test); else the guest runs no OS."""
    process: subprocess.Popen[bytes] | None = None
    _monitor: Monitor | None = field(default=None, repr=False)

    @property
    def qmp(self) -> Path:
        """The monitor socket cairn uses (QEMU serves one client per socket; the test has
        its own)."""
        return self.folder / "qmp.sock"

    @property
    def guest_agent(self) -> Path:
        """The host end of the guest agent's virtio-serial port (no agent runs inside)."""
        return self.folder / "qga.sock"

    @property
    def serial(self) -> Path:
        return self.folder / "serial.log"

    def wait_for_serial(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self.serial.exists() and text in self.serial.read_text(errors="replace")):
            assert self.process is not None and self.process.poll() is None, "QEMU exited"
            assert time.monotonic() < deadline, f"the guest never printed {text!r}"
            time.sleep(0.2)

    @property
    def test_qmp(self) -> Path:
        return self.folder / "test-qmp.sock"

    def image(self, disk: str) -> Path:
        return self.folder / f"{disk}.{self.fmt}"

    def create_images(self) -> None:
        for disk, size in self.disks.items():
            subprocess.run(["qemu-img", "create", "-q", "-f", self.fmt, str(self.image(disk)),
                            str(size)], check=True)

    def start(self) -> LiveVm:
        cmd = ["qemu-system-x86_64", "-name", self.name, "-nodefaults", "-machine", "pc",
               "-accel", "tcg", "-m", "256" if self.boot else "64", "-display", "none",
               "-nic", "none",
               "-qmp", f"unix:{self.qmp},server=on,wait=off",
               "-qmp", f"unix:{self.test_qmp},server=on,wait=off",
               "-chardev", f"socket,path={self.guest_agent},server=on,wait=off,id=qga0",
               "-device", "virtio-serial", "-device",
               "virtserialport,chardev=qga0,name=org.qemu.guest_agent.0"]
        if self.boot is not None:
            cmd += ["-kernel", str(self.boot[0]), "-initrd", str(self.boot[1]),
                    "-append", "console=ttyS0 quiet", "-serial", f"file:{self.serial}"]
        for disk in self.disks:
            cmd += ["-blockdev", f"driver=file,filename={self.image(disk)},node-name=f-{disk}",
                    "-blockdev", f"driver={self.fmt},file=f-{disk},node-name=n-{disk}",
                    "-device", f"virtio-blk-pci,drive=n-{disk},id={disk},share-rw=on"]
        self.process = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while self._monitor is None:  # the socket file appears before QEMU listens on it
            assert self.process.poll() is None, "QEMU exited at start"
            assert time.monotonic() < deadline, "QEMU opened no QMP socket"
            with contextlib.suppress(SourceError):
                self._monitor = Monitor(self.test_qmp)
            time.sleep(0.05)
        return self

    @property
    def monitor(self) -> Monitor:
        assert self._monitor is not None
        return self._monitor

    def write(self, disk: str, offset: int, length: int, pattern: int) -> None:
        """Write ``pattern`` bytes as the guest would (through its virtio device)."""
        out = self.monitor.hmp(f'qemu-io -d /machine/peripheral/{disk}/virtio-backend '
                               f'"write -P {pattern} {offset} {length}"')
        assert "error" not in out.lower(), out

    def reference(self, disk: str, dest: Path) -> Path:
        """The disk as it is now, as a raw file: QEMU's own full point-in-time copy."""
        with dest.open("wb") as f:
            f.truncate(self.disks[disk])
        self.monitor.execute("blockdev-add", {"driver": "raw", "node-name": "ref",
                                              "file": {"driver": "file",
                                                       "filename": str(dest)}})
        try:
            self.monitor.execute("blockdev-backup", {"job-id": "ref", "device": f"n-{disk}",
                                                     "target": "ref", "sync": "full"})
            self.monitor.wait_event("BLOCK_JOB_COMPLETED",
                                    lambda e: e.get("device") == "ref", 60)
        finally:
            self.monitor.execute("blockdev-del", {"node-name": "ref"})
        return dest

    def bitmaps(self) -> dict[str, list[str]]:
        """Named bitmaps on each disk's node."""
        nodes = self.monitor.execute("query-named-block-nodes", {"flat": True})
        return {n["node-name"][2:]: sorted(b["name"] for b in n.get("dirty-bitmaps", [])
                                           if "name" in b)
                for n in nodes if n["node-name"].startswith("n-")}

    def leftovers(self) -> list[str]:
        """Anything a backup must not leave behind: exports, jobs, extra nodes."""
        found = [e["id"] for e in self.monitor.execute("query-block-exports")]
        found += [j["device"] for j in self.monitor.execute("query-block-jobs")]
        found += [n["node-name"] for n in self.monitor.execute("query-named-block-nodes",
                                                               {"flat": True})
                  if n["node-name"].startswith("cairn")]
        return found

    def stop(self, kill: bool = False) -> None:
        """Quit QEMU (cleanly: persistent bitmaps are written), or kill it."""
        if self._monitor is not None:
            if not kill:
                with contextlib.suppress(Exception):
                    self._monitor.execute("quit")
            self._monitor.close()
            self._monitor = None
        if self.process is not None:
            if kill:
                os.kill(self.process.pid, signal.SIGKILL)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        self.qmp.unlink(missing_ok=True)
        self.test_qmp.unlink(missing_ok=True)
