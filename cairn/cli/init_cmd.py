"""`cairn init`: create an empty repository."""

from __future__ import annotations

import argparse

from cairn.cli._common import add_repo, repo_path
from cairn.store.repository import DEFAULT_BLOCK_SIZE, Repository


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a repository")
    add_repo(p)
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                   help=f"block size in bytes (default {DEFAULT_BLOCK_SIZE})")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path = repo_path(args)
    Repository.init(path, block_size=args.block_size).close()
    print(f"created cairn repository at {path}")
    return 0
