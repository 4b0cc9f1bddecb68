"""`cairn init`: create an empty repository, local or in an S3 bucket."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_repo, is_cloud, repo_location
from cairn.errors import UsageError
from cairn.store.repository import DEFAULT_BLOCK_SIZE, Repository


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a repository (local path or s3://BUCKET/PREFIX)")
    add_repo(p)
    p.add_argument("--block-size", type=int, default=DEFAULT_BLOCK_SIZE,
                   help=f"block size in bytes (default {DEFAULT_BLOCK_SIZE})")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt chunks; the key is written to REPO/key and never leaves it")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    location = repo_location(args)
    if is_cloud(location):
        if args.encrypt:
            raise UsageError("a cloud repository takes the key of the local repository it "
                             "replicates: pass --key-file LOCAL_REPO/key instead of --encrypt")
        from cairn.store.cloud import init_cloud
        from cairn.store.keys import integrity_key_path

        repo = init_cloud(location, args.endpoint, args.block_size,
                          Path(args.key_file) if args.key_file else None)
        repo.close()
        note = ""
        if not args.key_file:
            note = (f" (integrity key in {integrity_key_path(repo.config.id)}: copy it to "
                    "every appliance that opens this repository, and keep a copy safe)")
        print(f"created cairn cloud repository at {location}{note}")
        return 0
    Repository.init(Path(location), block_size=args.block_size, encrypt=args.encrypt).close()
    note = f" (key in {location}/key: keep a copy somewhere safe)" if args.encrypt else ""
    print(f"created cairn repository at {location}{note}")
    return 0
