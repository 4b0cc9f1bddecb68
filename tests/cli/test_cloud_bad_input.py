"""Bad cloud input through the CLI, on a real SeaweedFS bucket (issue 20, item 7): a pack
truncated, missing or altered, an index altered or copied under another pack's name, and
keys that may not list or write. Each command fails with one line naming the objects at
fault (the pack and its index), and nothing of the local repository changes.
(`cloud prune`'s refusals: `tests/replication/test_cloud_prune.py`; the API's:
`tests/appliance/test_space_api.py`.)
"""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from cairn.store.chunks import chunk_name
from cairn.store.cloud import open_cloud
from cairn.store.cloud_counts import view
from cairn.store.cloud_feed import new_key
from tests.cli.test_cli import one_line_error
from tests.replication.test_replicate import Cli
from tests.s3server import SECRET_KEY, SeaweedS3
from tests.store.helpers import make_image


@dataclass
class Sent:
    server: SeaweedS3
    url: str
    local: Path
    point: str
    work: Path
    cli: Cli

    @property
    def base(self) -> str:
        return self.url.removeprefix(f"s3://{self.server.bucket}/")

    def keys(self, prefix: str) -> list[str]:
        listing = self.server.client().list_objects_v2(Bucket=self.server.bucket,
                                                       Prefix=f"{self.base}/{prefix}")
        return sorted(o["Key"][len(self.base) + 1:] for o in listing.get("Contents", []))

    def body(self, name: str) -> bytes:
        got = self.server.client().get_object(Bucket=self.server.bucket,
                                              Key=f"{self.base}/{name}")
        return bytes(got["Body"].read())

    def put(self, name: str, body: bytes) -> None:
        self.server.client().put_object(Bucket=self.server.bucket, Key=f"{self.base}/{name}",
                                        Body=body)

    def fresh(self, node: str, **env: str) -> Cli:
        """A node with an empty cache (and, with ``env``, other keys)."""
        cli = Cli(self.server, self.work / node)
        cli.env.update(self.cli.env, CAIRN_CACHE=str(self.work / node), **env)
        return cli


def _tree(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def template(s3_server: SeaweedS3, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, Path, str]:
    """A 2 MiB point of a local repository replicated into packs of 256 KiB; each test
    damages its own copy of both (`sent`)."""
    work = tmp_path_factory.mktemp("bad-cloud")
    cli = Cli(s3_server, work / "cache")
    cli.env["CAIRN_CLOUD_PACK_BYTES"] = str(256 << 10)
    local = work / "local"
    cli.ok("init", "--repo", local)
    image = work / "disk.img"
    make_image(image, 2 * 1024 * 1024, seed=21, fill=0.7)
    point = json.loads(cli.ok("backup", "--repo", local, "--volume", "web01-sda", image,
                              "--json"))["point"]
    url = f"s3://{s3_server.bucket}/bad-{uuid.uuid4().hex[:10]}"
    cli.ok("init", "--repo", url)
    cli.ok("replicate", "--repo", local, "--to", url)
    return url, local, point


@pytest.fixture
def sent(template: tuple[str, Path, str], s3_server: SeaweedS3, tmp_path: Path) -> Sent:
    """A copy of the template's cloud repository (at its own prefix) and local one; the
    integrity keys are the template's."""
    url, local, point = template
    s3 = s3_server.client()
    base = url.removeprefix(f"s3://{s3_server.bucket}/")
    copy = f"{base}-{uuid.uuid4().hex[:6]}"
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=s3_server.bucket,
                                                            Prefix=base + "/"):
        for o in page.get("Contents", []):
            s3.copy_object(Bucket=s3_server.bucket, Key=copy + o["Key"][len(base):],
                           CopySource={"Bucket": s3_server.bucket, "Key": o["Key"]})
    shutil.copytree(local, tmp_path / "local")
    cli = Cli(s3_server, tmp_path / "cache")
    cli.env["CAIRN_KEYS"] = str(local.parent / "keys")
    return Sent(s3_server, f"s3://{s3_server.bucket}/{copy}", tmp_path / "local", point,
                tmp_path, cli)


def _damage_pack(sent: Sent, how: str) -> tuple[str, str]:
    """Spoil the first pack; returns it and its index."""
    pack = sent.keys("packs/")[0]
    body = sent.body(pack)
    if how == "truncated":
        sent.put(pack, body[: len(body) // 2])
    elif how == "flipped":
        sent.put(pack, body[:100] + bytes([body[100] ^ 1]) + body[101:])
    else:
        sent.server.client().delete_object(Bucket=sent.server.bucket, Key=f"{sent.base}/{pack}")
    return pack, f"index/{pack.rpartition('/')[2]}"


@pytest.mark.parametrize(("how", "says"), [
    ("truncated", "truncated"), ("missing", "is missing"),
    ("flipped", "does not match its hash")])
def test_a_bad_pack_fails_a_restore_naming_it_and_its_index(
        sent: Sent, how: str, says: str) -> None:
    before = _tree(sent.local)
    pack, index = _damage_pack(sent, how)
    out = sent.work / "restored.img"
    result = sent.fresh(f"reader-{how}").run("restore", "--repo", sent.url, sent.point, out)
    one_line_error(result, 1, pack, index)
    assert says in result.stderr, result.stderr
    assert _tree(sent.local) == before


@pytest.mark.parametrize("change", ["altered", "moved"])
def test_an_index_that_disagrees_with_its_pack_is_refused_naming_it(
        sent: Sent, change: str) -> None:
    index = sent.keys("index/")[0]
    raw = sent.body(index)
    if change == "altered":  # its size no longer matches its pack (and its seal fails)
        record = json.loads(zstandard.ZstdDecompressor().decompress(raw))
        record["size"] += 1
        sent.put(index, zstandard.ZstdCompressor().compress(json.dumps(record).encode()))
        blamed, says = index, "fails authentication"
    else:  # a sound index copied under another pack's name
        blamed, says = f"index/{new_key(0.0)}", "names another pack"
        sent.put(blamed, raw)
    before = _tree(sent.local)
    for node, args in (("points", ("points", "--repo", sent.url)),
                       ("replicate", ("replicate", "--repo", sent.local, "--to", sent.url))):
        result = sent.fresh(f"{node}-{change}").run(*args)
        one_line_error(result, 1, blamed)
        assert says in result.stderr, result.stderr
    assert _tree(sent.local) == before


def test_convert_without_the_right_to_list_or_delete_changes_nothing(
        sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CAIRN_S3_ENDPOINT", "CAIRN_S3_ACCESS_KEY", "CAIRN_S3_SECRET_KEY",
                 "CAIRN_CACHE", "CAIRN_KEYS"):
        monkeypatch.setenv(name, sent.cli.env[name])
    with open_cloud(sent.url, None) as cloud:  # a legacy copy of a chunk a pack holds
        with view(cloud):  # every volume counted, though this cache may not write it
            digest = next(iter(cloud.catalog.chunk_refs()))
        legacy = chunk_name(digest)
        sent.put(legacy, cloud.chunks.get(digest) and cloud.chunks.backend.get(legacy))
    before = {name: sent.body(name) for name in sent.keys("")}
    for access, refused in (("cairn-test-no-list", ("AccessDenied to LIST", sent.base)),
                            ("cairn-test-read-only", ("AccessDenied to DELETE", legacy, sent.url))):
        limited = sent.fresh(f"node-{access}", CAIRN_S3_ACCESS_KEY=access,
                             CAIRN_S3_SECRET_KEY=SECRET_KEY)
        result = limited.run("cloud", "convert", sent.url)
        one_line_error(result, 1, *refused, sent.server.bucket)
    assert {name: sent.body(name) for name in sent.keys("")} == before


def test_cloud_prune_takes_the_repository_as_argument_or_repo_and_names_a_missing_one(
        sent: Sent) -> None:
    """`--repo`, as every other command takes, names the repository too; none at all, or a
    local one, is refused in one line with the fix."""
    by_argument = json.loads(sent.cli.ok("cloud", "prune", sent.url, "--dry-run", "--json"))
    by_option = json.loads(sent.cli.ok("cloud", "prune", "--repo", sent.url, "--dry-run",
                                       "--json"))
    assert by_option["packs"] == by_argument["packs"] > 0
    assert by_option["dry_run"] and by_option["packs_condemned"] == []
    sent.cli.env.pop("CAIRN_REPO", None)
    one_line_error(sent.cli.run("cloud", "prune", "--dry-run"), 2, "no repository given",
                   "--repo")
    one_line_error(sent.cli.run("cloud", "convert", "--repo", sent.local), 2,
                   "is not a cloud repository", "s3://BUCKET/PREFIX")
