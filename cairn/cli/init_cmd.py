"""`cairn init`: create an empty repository, local or in an S3 bucket."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_repo, is_cloud, repo_location
from cairn.errors import UsageError
from cairn.store.profiles import Profile, profiles_path
from cairn.store.repository import DEFAULT_BLOCK_SIZE, Repository
from cairn.units import parse_size


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("init", help="create a repository (local path or s3://BUCKET/PREFIX)")
    add_repo(p)
    p.add_argument("--block-size", type=_size, default=DEFAULT_BLOCK_SIZE,
                   help=f"block size: bytes, or 64K, 1M (default {DEFAULT_BLOCK_SIZE // 1024}K)")
    p.add_argument("--encrypt", action="store_true",
                   help="encrypt chunks; the key is written to REPO/key and never leaves it")
    p.add_argument("--region", default=None,
                   help="S3 region of an s3:// repository (default: $CAIRN_S3_REGION, else "
                        "us-east-1); remembered with its endpoint")
    p.add_argument("--virtual-hosted", action="store_true",
                   help="address the bucket as BUCKET.ENDPOINT (AWS) rather than "
                        "ENDPOINT/BUCKET; remembered with its endpoint")
    p.set_defaults(handler=run)


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _where(args: argparse.Namespace) -> Profile | None:
    """The endpoint, region and addressing given, when more than the endpoint was."""
    if args.region is None and not args.virtual_hosted:
        return None
    from cairn.store.backends.s3 import open_s3_url

    given = open_s3_url(args.repo, args.endpoint, region=args.region,
                        path_style=not args.virtual_hosted)
    return Profile(given.endpoint, given.region, given.path_style)


def run(args: argparse.Namespace) -> int:
    location = repo_location(args)
    if is_cloud(location):
        if args.encrypt:
            raise UsageError("a cloud repository takes the key of the local repository it "
                             "replicates: pass --key-file LOCAL_REPO/key instead of --encrypt")
        from cairn.store.cloud import init_cloud
        from cairn.store.keys import integrity_key_path

        repo = init_cloud(location, args.endpoint, args.block_size,
                          Path(args.key_file) if args.key_file else None, _where(args))
        repo.close()
        note = ""
        if not args.key_file:
            note = (f" (integrity key in {integrity_key_path(repo.config.id)}: copy it to "
                    "every appliance that opens this repository, and keep a copy safe)")
        print(f"created cairn cloud repository at {location}{note}; its endpoint is "
              f"remembered in {profiles_path()}")
        return 0
    Repository.init(Path(location), block_size=args.block_size, encrypt=args.encrypt).close()
    note = f" (key in {location}/key: keep a copy somewhere safe)" if args.encrypt else ""
    print(f"created cairn repository at {location}{note}")
    return 0
