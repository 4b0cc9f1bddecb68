"""`cairn screenshot-verify`: boot a point in a throwaway VM and judge its screen."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_json, add_point, add_repo, open_repo, print_json
from cairn.ops.screenshot_verify import screenshot_verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("screenshot-verify",
                       help="boot a point with no network, screenshot it and OCR the verdict")
    add_repo(p)
    add_point(p, more="; a machine point, or the boot disk's point of one, boots with every disk")
    p.add_argument("--expect-text", help='text that means "booted" (default: a login prompt)')
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--out", type=Path, help="also write the screenshot (PNG) here")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        check = screenshot_verify(repo, args.point, args.expect_text, args.timeout, args.out)
    record = check.record
    if args.json:
        print_json({"point": record.point_id, "status": record.status,
                    "reason": record.reason, "ocr_text": record.ocr_text,
                    "screenshot": record.screenshot, "seconds": record.seconds,
                    "accel": check.accel})
    else:
        print(f"point {record.point_id}: {record.status.upper()} ({record.reason}) in "
              f"{record.seconds:.1f} s; screenshot {record.screenshot}")
    return 0 if check.booted else 1
