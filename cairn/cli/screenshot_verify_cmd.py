"""`cairn screenshot-verify`: boot a point in a throwaway VM and judge its screen."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_json, add_repo, open_repo, print_json
from cairn.virt.boot import screenshot_verify


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("screenshot-verify",
                       help="boot a point with no network, screenshot it and OCR the verdict")
    add_repo(p)
    p.add_argument("point", help="point id (or unique prefix, or VOLUME@latest)")
    p.add_argument("--expect-text", help='text that means "booted" (default: a login prompt)')
    p.add_argument("--timeout", type=float, default=120.0, help="seconds (default 120)")
    p.add_argument("--out", type=Path, help="also write the screenshot (PNG) here")
    add_json(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    with open_repo(args) as repo:
        point = repo.resolve(args.point)
        verdict, record = screenshot_verify(repo, point, args.expect_text, args.timeout,
                                            args.out)
    if args.json:
        print_json({"point": point.id, "status": record.status, "reason": record.reason,
                    "ocr_text": record.ocr_text, "screenshot": record.screenshot,
                    "seconds": record.seconds, "accel": verdict.accel})
    else:
        print(f"point {point.id}: {record.status.upper()} ({record.reason}) in "
              f"{record.seconds:.1f} s; screenshot {record.screenshot}")
    return 0 if record.status == "booted" else 1
