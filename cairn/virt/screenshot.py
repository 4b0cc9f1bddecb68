"""Screenshot verification: boot a disk, read its screen, and say whether it came up.

A recovery point is only proven good when it boots. `verify_boot` starts the disk as a VM
with no network (writes go to a throwaway overlay unless told otherwise), takes a QMP
screendump about every second, reads it with tesseract, and returns a `Verdict`:

- ``booted``: the expected text is on the screen, or without one, a screen that waits for
  its user (`LOGIN_SCREENS`: a Linux text or graphical login, a Windows sign-in or lock
  screen);
- ``failed``: the screen shows a known firmware, boot loader or kernel error, the screen has
  held no readable text for `blank_after` seconds, or QEMU stopped the guest (panic,
  power-off, emulation error);
- ``timed_out``: none of that within `timeout` seconds.

A screen that stops changing but still shows text is not judged: a machine checking its file
systems or waiting on a slow disk looks exactly like that, so only the timeout ends it. A
screen that stays blank is judged failed early, because firmware always prints something and
a guest that has shown nothing for that long is hung or has no display.

When KVM opens but cannot run this guest (QEMU reports ``internal-error``), the boot is
started again under TCG within the same deadline.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cairn.errors import ToolMissing, VirtualMachineError
from cairn.virt.qemu import Accel, DiskBus, KvmCannotRun, VirtualMachine, with_tcg_fallback

Status = Literal["booted", "failed", "timed_out"]

_DAYS = "monday|tuesday|wednesday|thursday|friday|saturday|sunday"
_MONTHS = "january|february|march|april|may|june|july|august|september|october|november|december"

# What a machine waiting for its user shows (the default verdict), matched like BOOT_ERRORS.
LOGIN_SCREENS: tuple[tuple[str, str], ...] = (
    (r"\blogin: ?", "a text console login prompt"),
    (r"ctrl ?\+ ?alt ?\+ ?del", "a Windows lock or sign-in screen (Ctrl+Alt+Delete)"),
    (r"\bother user\b|\bsign-in options\b|\bi forgot my (pin|password)\b",
     "a Windows sign-in screen"),
    (rf"\b({_DAYS}),? ({_MONTHS}) \d{{1,2}}\b", "a Windows lock screen (time and date)"),
    (r"\bnot listed\?", "a GNOME login screen"),
    (r"\b(log ?in|sign in|user ?name)\b.*\bpassword\b|\bpassword\b.*\b(log ?in|sign in)\b",
     "a graphical login screen"),
)

# Matched against OCR text lowercased with runs of whitespace made one space.
BOOT_ERRORS: tuple[tuple[str, str], ...] = (
    (r"no bootable device", "the firmware found no bootable device"),
    (r"not a bootable disk", "the firmware found no boot code on the disk"),
    (r"boot failed", "the firmware could not boot the disk"),
    (r"(missing|no) operating system|operating system not found", "no operating system found"),
    (r"error loading operating system|invalid partition table", "the MBR could not load"),
    (r"loading \S+ failed|could not find kernel image", "the boot loader could not load"),
    (r"grub rescue|error: no such partition|error: unknown filesystem", "GRUB cannot start"),
    (r"kernel panic", "the kernel panicked"),
    (r"unable to mount root fs|gave up waiting for root", "the kernel found no root"),
    (r"emergency mode|give root password for maintenance", "the system is in emergency mode"),
    (r"inaccessible.boot.device|your pc ran into a problem", "Windows stopped with an error"),
)

# What QEMU draws itself before the guest sets a video mode: not guest text.
QEMU_PLACEHOLDER = "guest has not initialized the display (yet)."

GUEST_STOPPED = {
    "guest-panicked": "the guest panicked",
    "shutdown": "the guest powered off during boot",
    "internal-error": "QEMU could not emulate the guest",
    "io-error": "the disk returned an I/O error",
}


@dataclass(frozen=True)
class Verdict:
    """The outcome of one verification; `screenshot` is the last screen seen, as PNG."""

    status: Status
    reason: str
    ocr_text: str
    screenshot: Path | None
    seconds: float
    accel: str
    disks: int = 1
    """how many disks QEMU had attached when the verdict was reached"""


# Keyword-only settings with defaults (PLR0913): callers name the few they change.
def verify_boot(  # noqa: PLR0913
    drive: str | Path,
    *,
    out: Path,
    expect_text: str | None = None,
    timeout: float = 120.0,
    interval: float = 1.0,
    blank_after: float = 30.0,
    accel: Accel = "auto",
    snapshot: bool = True,
    memory_mib: int = 512,
    interface: DiskBus = "ide",
    drive_format: str | None = None,
    more_drives: tuple[str, ...] = (),
) -> Verdict:
    """Boot `drive` (a file path or an ``nbd://`` URL) and judge its screen into `out`;
    `more_drives` are the machine's other disks, attached after it (a server whose data
    disks are missing may not come up as it would after a restore)."""
    if shutil.which("tesseract") is None:
        raise ToolMissing("tesseract", "tesseract-ocr")
    started = time.monotonic()
    judge = _Judge(
        expect=expect_text,
        deadline=started + timeout,
        blank_after=blank_after,
        interval=interval,
        out=Path(out),
        started=started,
    )
    vm = VirtualMachine(
        drive=str(drive),
        format=drive_format,
        interface=interface,
        more_drives=more_drives,
        snapshot=snapshot,
        memory_mib=memory_mib,
        accel=accel,
    )
    return with_tcg_fallback(vm, judge.watch)


@dataclass
class _Judge:
    expect: str | None
    deadline: float
    blank_after: float
    interval: float
    out: Path
    started: float

    def watch(self, vm: VirtualMachine) -> Verdict:
        """Poll the screen of a freshly started `vm` until a verdict."""
        ocr_cache: dict[bytes, str] = {}
        text = ""
        last_change = time.monotonic()
        accel = vm.used_accel or vm.accel
        shot = vm.workdir / "screen.png"
        while True:
            if not vm.running():
                reason = f"QEMU exited (guest powered off or crashed): {vm.log_tail()}"
                return self._verdict("failed", reason, text, accel, shot)
            if vm.kvm_failed():
                raise KvmCannotRun
            state = vm.status()
            vm.screendump(shot)
            if state in GUEST_STOPPED:
                text = ocr(shot)
                return self._verdict("failed", GUEST_STOPPED[state], text, accel, shot)
            digest = hashlib.sha256(shot.read_bytes()).digest()
            if digest not in ocr_cache:
                ocr_cache[digest] = ocr(shot)
            new_text = ocr_cache[digest]
            if _meaningful(new_text) != _meaningful(text):
                last_change = time.monotonic()
            text = new_text
            status, reason = judge_screen(
                text, self.expect, time.monotonic() - last_change, self.blank_after
            )
            now = time.monotonic()
            if status is None and now >= self.deadline:
                status, reason = "timed_out", _timed_out_reason(now - self.started, text)
            if status is not None:
                return self._verdict(status, reason, text, accel, shot, vm.disks())
            time.sleep(max(0.0, min(self.interval, self.deadline - now)))

    def _verdict(self, status: Status, reason: str, text: str, accel: str, shot: Path,
                 disks: int = 1) -> Verdict:
        """Copy the judged screen out of the VM's folder (removed with the VM) to `out`."""
        kept = None
        if shot.exists():
            self.out.parent.mkdir(parents=True, exist_ok=True)
            kept = Path(shutil.copyfile(shot, self.out))
        return Verdict(
            status=status,
            reason=reason,
            ocr_text=text,
            screenshot=kept,
            seconds=round(time.monotonic() - self.started, 2),
            accel=accel,
            disks=disks,
        )


def judge_screen(
    text: str, expect_text: str | None, unchanged_for: float, blank_after: float
) -> tuple[Status | None, str]:
    """Judge one screen's OCR text; ``(None, "")`` means keep watching.

    The expected text wins over error text, so a machine that printed a recoverable error
    on its way to a login prompt counts as booted. OCR noise is absorbed by comparing in
    lower case with whitespace runs collapsed.
    """
    screen = _normalise(text)
    if expect_text is not None:
        expect = _normalise(expect_text)
        if expect in screen:
            return "booted", f"the screen shows {expect!r}"
    else:
        for pattern, what in LOGIN_SCREENS:
            if re.search(pattern, screen):
                return "booted", f"the screen shows {what}"
    for pattern, reason in BOOT_ERRORS:
        if re.search(pattern, screen):
            return "failed", reason
    if not _meaningful(text) and unchanged_for >= blank_after:
        return "failed", f"the screen stayed blank for {unchanged_for:.0f} s"
    return None, ""


def ocr(png: Path) -> str:
    """The text tesseract reads on a screenshot (English, automatic page layout)."""
    result = subprocess.run(
        ["tesseract", str(png), "-"], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise VirtualMachineError(f"tesseract could not read {png}: {result.stderr.strip()}")
    return result.stdout


def _timed_out_reason(seconds: float, text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if _meaningful(line)]
    last = f"; the screen last showed {lines[-1][:60]!r}" if lines else "; the screen is blank"
    return f"no verdict within {seconds:.0f} s{last}"


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def _meaningful(text: str) -> str:
    """The text with QEMU's placeholder and cursor-like noise removed: blank means empty."""
    screen = _normalise(text).replace(QEMU_PLACEHOLDER, "")
    return re.sub(r"[\s_|.\-]+", " ", screen).strip()
