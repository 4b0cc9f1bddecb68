"""Sizes of a cloud repository are the bucket's, not the local backup's: a replicated
point's ADDED is what it added to the bucket, and a cache that learnt its points from the
bucket (another machine, another user) knows what they store from the packs' indexes."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from tests.replication.test_replicate import Cli
from tests.s3server import SeaweedS3
from tests.store.helpers import make_image


def _bucket_chunk_bytes(server: SeaweedS3, url: str) -> int:
    """What the repository's chunks take in the bucket (its packs), by the server's own
    listing."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    pages = server.client().get_paginator("list_objects_v2").paginate(
        Bucket=bucket, Prefix=f"{prefix}/packs/")
    return sum(o["Size"] for page in pages for o in page.get("Contents", []))


def _by_volume(points: Any) -> dict[str, dict[str, Any]]:
    return {p["volume"]: p for p in points}


def test_cloud_points_and_stats_show_what_the_bucket_stores(
        cli: Cli, cloud_url: str, tmp_path: Path, s3_server: SeaweedS3) -> None:
    local, image = tmp_path / "local", tmp_path / "disk.img"
    cli.ok("init", "--repo", local)
    make_image(image, 2 * 1024 * 1024, seed=21, fill=1.0)
    cli.ok("backup", "--repo", local, "--volume", "a", image)
    # the same disk again: locally it adds nothing, all of it is already there from "a"
    assert cli.json("backup", "--repo", local, "--volume", "b", image)["bytes_stored"] == 0
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url, "--volume", "b")
    in_bucket = _bucket_chunk_bytes(s3_server, cloud_url)
    assert in_bucket > 2 * 1024 * 1024

    # this cache sent the chunks; a second one learns the points from the bucket alone
    second = Cli(s3_server, tmp_path / "other-cache")
    for node in (cli, second):
        point = _by_volume(node.json("points", "--repo", cloud_url))["b"]
        assert point["bytes_stored"] == point["frees"] == in_bucket
        stats = node.json("stats", "--repo", cloud_url)
        assert stats["stored_bytes"] == in_bucket
        assert stats["by_volume"][0]["added_bytes"] == stats["by_volume"][0]["frees_bytes"] \
            == in_bucket

    # a backup straight into the cloud of what it holds already adds nothing there
    direct = second.json("backup", "--repo", cloud_url, "--volume", "c", image)
    assert direct["bytes_stored"] == 0 and _bucket_chunk_bytes(s3_server, cloud_url) == in_bucket


def test_a_node_that_learnt_the_points_from_the_bucket_has_the_senders_stats(
        cli: Cli, cloud_url: str, tmp_path: Path, s3_server: SeaweedS3) -> None:
    local, image = tmp_path / "local", tmp_path / "disk.img"
    cli.ok("init", "--repo", local)
    text = random.Random(7).randbytes(1 << 20).hex().encode()  # 2 MiB, compresses ~2x
    image.write_bytes(text)
    cli.ok("backup", "--repo", local, "--volume", "a", image, "--force")  # text, not a disk
    image.write_bytes(text[: 1 << 20] + text[: 1 << 20])  # half of it again, dedup
    cli.ok("backup", "--repo", local, "--volume", "a", image, "--force")  # text, not a disk
    cli.ok("init", "--repo", cloud_url)
    cli.ok("replicate", "--repo", local, "--to", cloud_url)

    keys = ("unique_bytes", "dedup_ratio", "compression_ratio", "unsized_chunks")
    sender = cli.json("stats", "--repo", cloud_url)
    assert sender["dedup_ratio"] > 1.2 and sender["compression_ratio"] > 1.5, sender
    fresh = Cli(s3_server, tmp_path / "fresh-cache")
    assert [fresh.json("stats", "--repo", cloud_url)[k] for k in keys] \
        == [sender[k] for k in keys]
    assert "unknown" not in fresh.ok("stats", "--repo", cloud_url)
