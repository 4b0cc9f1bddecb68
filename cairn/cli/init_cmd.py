"""`cairn init`: create an empty repository, local or in an S3 bucket."""

from __future__ import annotations

import argparse
from pathlib import Path

from cairn.cli._common import add_json, add_repo, is_cloud, repo_location, report
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
    add_json(p)
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
        key = None if args.key_file else integrity_key_path(repo.config.id)
        note = "" if key is None else (f" (integrity key in {key}: copy it to every "
                                       "appliance that opens this repository, and keep a "
                                       "copy safe)")
        return report(args.json, _made(location, repo, key, profiles_path()),
                      f"created cairn cloud repository at {location}{note}; its endpoint is "
                      f"remembered in {profiles_path()}")
    repo = Repository.init(Path(location), block_size=args.block_size, encrypt=args.encrypt)
    repo.close()
    key = Path(location) / "key" if args.encrypt else None
    note = f" (key in {key}: keep a copy somewhere safe)" if key else ""
    return report(args.json, _made(location, repo, key, None),
                  f"created cairn repository at {location}{note}")


def _made(location: str, repo: Repository, key: Path | None,
          profile: Path | None) -> dict[str, object]:
    """What `init --json` reports: where, its id and block size, the key file to keep
    safe (the encryption key, or a cloud's integrity key), and where a cloud's endpoint
    is remembered."""
    return {"repository": location, "id": repo.config.id, "block_size": repo.block_size,
            "encrypted": repo.config.key_id is not None,
            "key_file": None if key is None else str(key),
            "profile": None if profile is None else str(profile)}
