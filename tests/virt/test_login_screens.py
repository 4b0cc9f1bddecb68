"""The default verdict on stored screenshots: Linux text and graphical logins, Windows
sign-in and lock screens count as booted; boot errors and boot chatter do not.

The screenshots are drawn here (Pillow's bundled font, the layout of each screen's text)
and read by the real tesseract, exactly as a verification reads a QEMU screendump.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image, ImageDraw, ImageFont

from cairn.virt.screenshot import judge_screen, ocr

SCREENS = {
    "linux-console": ("black", ["Debian GNU/Linux 12 web01 tty1", "", "web01 login:"]),
    "gnome": ("#2c2c2c", ["Mon 10:42", "", "Alice Example", "", "Not listed?"]),
    "lightdm": ("#3a5f8a", ["web01", "Username", "Password", "Log In"]),
    "windows-lock": ("#0a3b6e", ["10:42", "Monday, March 2"]),
    "windows-cad": ("#0a3b6e", ["Press Ctrl+Alt+Delete to unlock"]),
    "windows-sign-in": ("#0a3b6e", ["Administrator", "Password", "Sign-in options",
                                    "Other user"]),
    "bios": ("black", ["SeaBIOS (version 1.16.2)", "Booting from Hard Disk..."]),
    "panic": ("black", ["Kernel panic - not syncing: VFS: Unable to mount root fs"]),
    "windows-error": ("#0078d7", ["Your PC ran into a problem and needs to restart."]),
}


def draw(path: Path, background: str, lines: list[str]) -> Path:
    font = ImageFont.load_default(size=26)
    image = Image.new("RGB", (800, 480), background)
    pen = ImageDraw.Draw(image)
    for i, line in enumerate(lines):
        pen.text((60, 60 + 44 * i), line, fill="white", font=font)
    image.save(path)
    return path


@pytest.mark.parametrize(("screen", "status", "reason"), [
    ("linux-console", "booted", "text console login"),
    ("gnome", "booted", "GNOME login"),
    ("lightdm", "booted", "graphical login"),
    ("windows-lock", "booted", "Windows lock screen"),
    ("windows-cad", "booted", "Ctrl+Alt+Delete"),
    ("windows-sign-in", "booted", "Windows sign-in"),
    ("bios", None, ""),
    ("panic", "failed", "panicked"),
    ("windows-error", "failed", "Windows stopped"),
])
def test_default_verdict_on_stored_screenshots(tmp_path: Path, screen: str,
                                               status: str | None, reason: str) -> None:
    background, lines = SCREENS[screen]
    text = ocr(draw(tmp_path / f"{screen}.png", background, lines))
    got, why = judge_screen(text, None, unchanged_for=0, blank_after=30)
    assert (got, reason in why) == (status, True), (screen, text, why)


def test_expected_text_replaces_the_login_screens(tmp_path: Path) -> None:
    background, lines = SCREENS["linux-console"]
    text = ocr(draw(tmp_path / "console.png", background, lines))
    assert judge_screen(text, "web01 login", 0, 30)[0] == "booted"
    assert judge_screen(text, "Welcome to the shop", 0, 30)[0] is None
