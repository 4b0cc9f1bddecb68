"""`cairn cloud prune|convert s3://BUCKET/PREFIX`: free a cloud repository's dead packs, and
move a legacy one-object-per-chunk repository into packs.

The repository is the one argument, as in the README; ``--repo`` (and ``CAIRN_REPO``) name
it too (the argument wins), as for every other command, so a user who types
`cairn cloud prune --repo s3://...` out of habit is not refused."""

from __future__ import annotations

import argparse

from cairn.cli._common import (
    add_json,
    add_repo,
    open_location,
    progress,
    repo_location,
    report,
)
from cairn.errors import UsageError
from cairn.ops.cloud_space import convert_cloud, convert_line, prune_cloud, prune_line
from cairn.store.profiles import is_cloud


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cloud", help="space in a cloud repository: prune packs, convert")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    prune = actions.add_parser(
        "prune", help="free the packs no point needs (two steps: condemned, then deleted "
                      "a grace period later), repacking mostly-dead ones")
    prune.add_argument("--dry-run", action="store_true",
                       help="say what would be condemned, repacked and deleted; change nothing")
    convert = actions.add_parser(
        "convert", help="move a legacy repository's chunk objects into packs (resumable: "
                        "run it again after an interruption)")
    for action in (prune, convert):
        action.add_argument("url", metavar="s3://BUCKET/PREFIX", nargs="?",
                            help="the cloud repository (or --repo)")
        add_repo(action)
        add_json(action)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    location = args.url or repo_location(args)
    if not is_cloud(location):
        raise UsageError(f"{location!r} is not a cloud repository: give s3://BUCKET/PREFIX")
    with open_location(location, args) as repo:
        if args.action == "convert":
            done = convert_cloud(repo, None if args.json else progress)
            return report(args.json, done.json(), convert_line(done))
        pruned = prune_cloud(repo, args.dry_run)
    return report(args.json, pruned.json(), prune_line(pruned))
