"""Packs go to the bucket as multipart uploads with parts on (``CAIRN_S3_PART_BYTES``,
`S3Backend.put`), on real SeaweedFS.

A pack of three parts is whole when it appears and reads back byte for byte; an upload
whose writer is killed leaves no object, and its parts are aborted by the cloud prune once
older than the grace window (`s3_uploads`), never before; a key that may not abort them
is refused with an error naming the request (the prune warns and goes on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from blake3 import blake3

from cairn.errors import S3AccessDenied
from cairn.store.backends.s3 import S3Backend, open_s3_url
from cairn.store.backends.s3_uploads import Upload, abort_stale, uploads
from cairn.store.chunks import chunk_name
from cairn.store.cloud import init_cloud, open_cloud
from cairn.store.cloud_packs import CloudPacks, pack_object
from cairn.store.cloud_prune import prune
from tests.s3server import SECRET_KEY, SeaweedS3

PART = 5 << 20
ROOT = Path(__file__).resolve().parents[2]

_KILLED_WRITER = """
import sys, time, obstore
from cairn.errors import S3AccessDenied
from cairn.store.backends.s3 import S3Backend, open_s3_url

def body():
    yield b"p" * (5 << 20)  # the first part goes out, then the writer stalls
    yield b"q"
    time.sleep(600)

obstore.put(open_s3_url(sys.argv[1])._store, sys.argv[2], body(), use_multipart=True,
            chunk_size=5 << 20, max_concurrency=1)
"""


@pytest.fixture
def url(s3_server: SeaweedS3, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in {**s3_server.cairn_env(tmp_path), "CAIRN_S3_PART_BYTES": str(PART),
                        "CAIRN_CLOUD_PACK_BYTES": str(3 * PART)}.items():
        monkeypatch.setenv(name, value)
    where = f"s3://{s3_server.bucket}/multipart-{uuid.uuid4().hex[:10]}"
    init_cloud(where, None).close()
    return where


def test_a_pack_goes_in_parts_and_reads_back_byte_for_byte(s3_server: SeaweedS3,
                                                            url: str) -> None:
    stored = [os.urandom(64 << 10) for _ in range(3 * PART // (64 << 10))]
    with open_cloud(url, None) as repo:
        packs = repo.chunks.backend
        assert isinstance(packs, CloudPacks)
        pack = packs.write_pack((blake3(s).digest(), s) for s in stored)
        digests = [blake3(s).digest() for s in stored]
        assert [packs.get(chunk_name(d)) for d in digests[::37]] == stored[::37]
    bucket = open_s3_url(url)
    assert bucket.get(pack_object(pack), limit=4 * PART) == b"".join(stored)
    head = s3_server.client().head_object(Bucket=s3_server.bucket,
                                          Key=f"{bucket.prefix}/{pack_object(pack)}")
    assert head["ETag"].endswith('-3"')  # three parts, completed as one object
    assert list(uploads(bucket)) == []


def _killed_upload(url: str, name: str) -> Upload:
    """A writer killed with its upload of ``name`` open and one part sent."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writer = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, url, name], env=env)
    bucket = open_s3_url(url)
    try:
        deadline = time.monotonic() + 30
        while not (found := [u for u in uploads(bucket) if u.name == name]):
            assert writer.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait()
    return found[0]


def test_a_killed_upload_leaves_no_pack_and_the_prune_aborts_it_after_the_grace(
        s3_server: SeaweedS3, url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = open_s3_url(url)
    name = pack_object("0" * 32)
    upload = _killed_upload(url, name)
    assert not bucket.exists(name)
    assert abort_stale(bucket, 3600, upload.initiated + 60) == 0  # young: a live writer's
    assert [u.name for u in uploads(bucket)] == [name]
    monkeypatch.setenv("CAIRN_CLOUD_LOCK_SECONDS", "1")
    with open_cloud(url, None) as repo:
        deadline = time.monotonic() + 30
        while list(uploads(bucket)):
            assert time.monotonic() < deadline
            prune(repo)
            time.sleep(0.2)
    client = s3_server.client()
    with pytest.raises(client.exceptions.NoSuchUpload):
        client.list_parts(Bucket=s3_server.bucket, Key=f"{bucket.prefix}/{name}",
                          UploadId=upload.id)
    assert not bucket.exists(name)


def test_a_key_that_may_not_abort_uploads_is_refused_naming_the_request(s3_server: SeaweedS3,
                                                                         url: str) -> None:
    real = open_s3_url(url)
    key = f"{real.prefix}/{pack_object('1' * 32)}"
    client = s3_server.client()
    opened = client.create_multipart_upload(Bucket=s3_server.bucket, Key=key)["UploadId"]
    read_only = S3Backend(real.bucket, real.prefix, endpoint_url=s3_server.endpoint,
                          access_key="cairn-test-read-only", secret_key=SECRET_KEY)
    try:
        with pytest.raises(S3AccessDenied, match="DELETE"):
            abort_stale(read_only, 0, time.time() + 60)
        assert [u.id for u in uploads(real)] == [opened]
    finally:
        client.abort_multipart_upload(Bucket=s3_server.bucket, Key=key, UploadId=opened)
