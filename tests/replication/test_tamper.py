"""Someone with write access to the bucket (and nothing else) turns it against the appliance.

Each test alters a real SeaweedFS bucket the way an attacker could, then checks that cairn
refuses with a one-line error naming the problem, and that the local repository is
untouched: same points, clean `verify`, restores bit for bit.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import zstandard

from tests.cli.test_cli import one_line_error
from tests.replication.test_replicate import Cli, local_repo_with_points
from tests.s3server import SeaweedS3


class Bucket:
    """The raw objects of one cloud repository, as an attacker with the S3 key sees them."""

    def __init__(self, server: SeaweedS3, url: str) -> None:
        self.s3 = server.client()
        self.bucket, _, self.prefix = url[len("s3://"):].partition("/")

    def keys(self, under: str) -> list[str]:
        listing = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/{under}")
        return [o["Key"][len(self.prefix) + 1:] for o in listing.get("Contents", [])]

    def get(self, name: str) -> bytes:
        return bytes(self.s3.get_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")[
            "Body"].read())

    def put(self, name: str, body: bytes) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}", Body=body)

    def plant(self, body: bytes) -> None:
        """Write ``body`` (zero-padded) over the largest chunk of the first pack: all an
        attacker can do to a chunk, since the index that says where it lies is sealed."""
        index = json.loads(zstandard.ZstdDecompressor().decompress(
            self.get(sorted(self.keys("index"))[0])))
        _digest, offset, length = max(index["chunks"], key=lambda chunk: chunk[2])
        assert len(body) <= length
        pack = f"packs/{index['pack'][-2:]}/{index['pack']}"
        data = bytearray(self.get(pack))
        data[offset : offset + length] = body.ljust(length, b"\0")
        self.put(pack, bytes(data))

    def get_json(self, name: str) -> dict[str, Any]:
        return dict(json.loads(self.get(name)))

    def put_json(self, name: str, value: dict[str, Any]) -> None:
        self.put(name, json.dumps(value).encode())


def replicated(cli: Cli, tmp_path: Path, url: str, encrypt: bool,
               ) -> tuple[Path, list[tuple[str, bytes]], list[str]]:
    """A local repository with two points, replicated to ``url``; the key arguments that
    open the cloud."""
    local, _img, points = local_repo_with_points(cli, tmp_path, 2, encrypt=encrypt)
    key_args = ["--key-file", str(local / "key")] if encrypt else []
    cli.ok("init", "--repo", url, *key_args)
    cli.ok("replicate", "--repo", local, "--to", url)
    return local, points, key_args


def assert_local_untouched(cli: Cli, local: Path, points: list[tuple[str, bytes]],
                           tmp_path: Path) -> None:
    assert [p["id"] for p in cli.json("points", "--repo", local)] == [p for p, _ in points]
    assert "no problems found" in cli.ok("verify", "--repo", local, "--read-data")
    for point, want in points:
        out = tmp_path / "check.img"
        cli.ok("restore", "--repo", local, point, out, "--force")
        assert out.read_bytes() == want


def test_a_config_pointing_at_the_local_repository_is_refused(
        cli: Cli, cloud_url: str, s3_server: SeaweedS3, tmp_path: Path) -> None:
    local, points, _ = replicated(cli, tmp_path, cloud_url, encrypt=False)
    bucket = Bucket(s3_server, cloud_url)
    config = bucket.get_json("config.json")
    for forged_id in (str(local), "../../local", "0" * 32):
        bucket.put_json("config.json", {**config, "id": forged_id})
        one_line_error(cli.run("points", "--repo", cloud_url), 2, "config.json")
        one_line_error(cli.run("replicate", "--repo", local, "--to", cloud_url), 2)
    # Resealing is impossible without the key: a made-up MAC fails too.
    bucket.put_json("config.json", {**config, "id": str(local), "mac": "00" * 32})
    one_line_error(cli.run("points", "--repo", cloud_url, "--key-file",
                           next((tmp_path / "keys").iterdir())), 1, "fails authentication")
    assert_local_untouched(cli, local, points, tmp_path)
    # A later local backup still keeps every old point.
    img = tmp_path / "disk.img"
    cli.ok("backup", "--repo", local, "--volume", "web01-sda", img)
    assert "no problems found" in cli.ok("verify", "--repo", local, "--read-data")
    bucket.put_json("config.json", config)
    assert len(cli.json("points", "--repo", cloud_url)) == 2


def test_a_key_id_dropped_from_the_config_never_means_plain_text(
        cli: Cli, cloud_url: str, s3_server: SeaweedS3, tmp_path: Path) -> None:
    local, points, key_args = replicated(cli, tmp_path, cloud_url, encrypt=True)
    bucket = Bucket(s3_server, cloud_url)
    config = bucket.get_json("config.json")
    packs_before = set(bucket.keys("packs"))
    for forged in ({**config, "key_id": None}, {k: v for k, v in config.items()
                                                if k != "key_id"}):
        bucket.put_json("config.json", forged)
        one_line_error(cli.run("points", "--repo", cloud_url, *key_args), 1,
                       "names no encryption key")
        one_line_error(cli.run("replicate", "--repo", local, "--to", cloud_url), 1,
                       "names no encryption key")
    bucket.put_json("config.json", {**config, "key_id": "ab" * 16})
    one_line_error(cli.run("points", "--repo", cloud_url, *key_args), 2, "is not the key")
    assert set(bucket.keys("packs")) == packs_before
    assert_local_untouched(cli, local, points, tmp_path)


def test_altered_moved_or_planted_point_records_are_refused(
        cli: Cli, cloud_url: str, s3_server: SeaweedS3, tmp_path: Path) -> None:
    local, points, key_args = replicated(cli, tmp_path, cloud_url, encrypt=True)
    bucket = Bucket(s3_server, cloud_url)
    first, second = (f"points/web01-sda/{p}.json" for p, _ in points)
    record = bucket.get_json(first)
    other = bucket.get_json(second)
    fresh = Cli(s3_server, tmp_path / "fresh-cache")  # a node that must learn every record
    for name, forged in [
        (first, {**record, "root": other["root"]}),
        (first, {**record, "size": record["size"] * 2}),
        (second, record),  # a good record under another point's name
        (f"points/db01-sda/{points[0][0]}.json", record),  # and under another volume
    ]:
        saved = bucket.get(name) if name in bucket.keys("points") else None
        bucket.put_json(name, forged)
        result = fresh.run("points", "--repo", cloud_url, *key_args)
        one_line_error(result, 1, name)
        if saved is None:
            bucket.s3.delete_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/{name}")
        else:
            bucket.put(name, saved)
    cli.env["CAIRN_CLOUD_FULL_SYNC_SECONDS"] = "0"  # planted unannounced: a full sync reads
    for planted in ("points/web01-sda/not-a-point.json", "points/x.json",
                    "points/web01-sda/deep/0123456789ab.json"):
        bucket.put(planted, b"{}")
        one_line_error(cli.run("points", "--repo", cloud_url, *key_args), 1, planted)
        bucket.s3.delete_object(Bucket=bucket.bucket, Key=f"{bucket.prefix}/{planted}")
    assert [p["id"] for p in fresh.json("points", "--repo", cloud_url, *key_args)] == [
        p for p, _ in points]
    assert_local_untouched(cli, local, points, tmp_path)


def test_bombs_and_plain_text_chunks_are_refused_before_they_cost_memory(
        cli: Cli, s3_server: SeaweedS3, tmp_path: Path) -> None:
    plain_url = f"s3://{s3_server.bucket}/tamper-plain"
    local, points, _ = replicated(cli, tmp_path / "plain", plain_url, encrypt=False)
    bucket = Bucket(s3_server, plain_url)
    out = tmp_path / "out.img"
    bombs = {  # a chunk larger than any is no longer possible: its index gives its length
        "claims to inflate": b"CRN\x01" + zstandard.ZstdCompressor().compress(bytes(256 << 20)),
        "does not decompress": b"CRN\x01" + zstandard.ZstdCompressor(
            write_content_size=False).compress(bytes(256 << 20)),
    }
    for words, body in bombs.items():
        bucket.plant(body)
        refused = [cli.run("restore", "--repo", plain_url, point, out, "--force")
                   for point, _ in points]
        refused = [r for r in refused if r.returncode != 0]
        assert refused
        for result in refused:
            one_line_error(result, 1, words)
    assert_local_untouched(cli, local, points, tmp_path)

    secret_url = f"s3://{s3_server.bucket}/tamper-secret"
    secret, points, key_args = replicated(cli, tmp_path / "secret", secret_url, encrypt=True)
    bucket = Bucket(s3_server, secret_url)
    bucket.plant(b"CRN\x00" + bytes(100))
    report = cli.run("verify", "--repo", secret_url, *key_args, "--read-data")
    assert report.returncode == 1 and "plain text" in report.stdout + report.stderr
    assert_local_untouched(cli, secret, points, tmp_path)
