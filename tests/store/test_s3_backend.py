"""What only the S3 backend does: name its failures clearly, parse its URL, find credentials.

Every failure is provoked for real against SeaweedFS (a wrong key, a missing bucket) or a
closed loopback port, and must come out as one `CairnError` line that names the fix.
"""

from __future__ import annotations

import socket
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from cairn.errors import S3AccessDenied, S3NoSuchBucket, S3Unreachable, UsageError
from cairn.store.backends.s3 import S3Backend, open_s3_url
from tests.s3server import SECRET_KEY, SeaweedS3, free_ports


def _backend(server: SeaweedS3) -> S3Backend:
    return S3Backend(
        server.bucket,
        uuid.uuid4().hex,
        endpoint_url=server.endpoint,
        access_key=server.access_key,
        secret_key=server.secret_key,
    )


def _one_line(exc: pytest.ExceptionInfo[Exception]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    return message


def test_unreachable_endpoint_is_retryable_and_named() -> None:
    endpoint = f"http://127.0.0.1:{free_ports(1)[0]}"
    backend = S3Backend("bucket", endpoint_url=endpoint, attempts=1)
    with pytest.raises(S3Unreachable) as exc:
        backend.put("chunks/a", b"a")
    assert exc.value.retryable
    assert f"{endpoint} (connection refused)" in _one_line(exc)


def test_unreachable_endpoint_fails_a_listing() -> None:
    backend = S3Backend("bucket", endpoint_url=f"http://127.0.0.1:{free_ports(1)[0]}", attempts=1)
    with pytest.raises(S3Unreachable):
        list(backend.list("chunks"))


def test_silent_endpoint_times_out() -> None:
    """A port that accepts connections but never answers: the request timeout ends it."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        endpoint = f"http://127.0.0.1:{silent.getsockname()[1]}"
        backend = S3Backend("bucket", endpoint_url=endpoint, attempts=1, request_timeout=0.5)
        with pytest.raises(S3Unreachable, match=r"\(timed out\)") as exc:
            backend.get("chunks/a")
    assert exc.value.retryable


@pytest.mark.parametrize(
    ("field", "code"),
    [("secret_key", "SignatureDoesNotMatch"), ("access_key", "InvalidAccessKeyId")],
)
def test_wrong_credentials(s3_server: SeaweedS3, field: str, code: str) -> None:
    backend = S3Backend(
        s3_server.bucket,
        endpoint_url=s3_server.endpoint,
        **{
            "access_key": s3_server.access_key,
            "secret_key": s3_server.secret_key,
            field: "wrong-wrong-wrong",
        },
    )
    with pytest.raises(S3AccessDenied) as exc:
        backend.get("chunks/a")
    message = _one_line(exc)
    assert code in message
    assert "CAIRN_S3_ACCESS_KEY" in message
    assert not exc.value.retryable


def test_a_key_without_a_right_is_refused_naming_the_request(s3_server: SeaweedS3) -> None:
    """A key may read but not list, or read and list but not write or delete (a bucket
    policy): each refusal is `S3AccessDenied` naming the request and its object."""
    full = _backend(s3_server)
    full.put("packs/ab/1234ab", b"pack")

    def limited(key: str) -> S3Backend:
        return S3Backend(s3_server.bucket, full.prefix, endpoint_url=s3_server.endpoint,
                         access_key=key, secret_key=SECRET_KEY)

    no_list = limited("cairn-test-no-list")
    no_list._bucket_checked = True  # its first request would be the bucket check's LIST
    assert no_list.get("packs/ab/1234ab") == b"pack"
    with pytest.raises(S3AccessDenied) as exc:
        list(no_list.list("packs"))
    assert "AccessDenied to LIST packs" in _one_line(exc)
    read_only = limited("cairn-test-read-only")
    assert list(read_only.list("packs")) == ["packs/ab/1234ab"]
    for request, call in (("PUT packs/ab/1", lambda: read_only.put("packs/ab/1", b"x")),
                          ("DELETE packs/ab/1234ab",
                           lambda: read_only.delete("packs/ab/1234ab")),
                          ("DELETE 1 objects",
                           lambda: read_only.delete_many(["packs/ab/1234ab"]))):
        with pytest.raises(S3AccessDenied) as exc:
            call()
        assert f"AccessDenied to {request}" in _one_line(exc)
    assert full.get("packs/ab/1234ab") == b"pack"


@pytest.mark.parametrize("action", ["put", "get", "exists", "list"])
def test_missing_bucket_says_how_to_create_it(s3_server: SeaweedS3, action: str) -> None:
    backend = S3Backend(
        "no-such-bucket",
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    calls = {
        "put": lambda: backend.put("chunks/a", b"a"),
        "get": lambda: backend.get("chunks/a"),
        "exists": lambda: backend.exists("chunks/a"),
        "list": lambda: list(backend.list("chunks")),
    }
    with pytest.raises(S3NoSuchBucket) as exc:
        calls[action]()
    message = _one_line(exc)
    assert "'no-such-bucket'" in message
    assert f"create it with `aws --endpoint-url {s3_server.endpoint} s3 mb" in message


def test_url_parsing_reaches_the_same_objects(s3_server: SeaweedS3) -> None:
    prefix = uuid.uuid4().hex
    backend = open_s3_url(
        f"s3://{s3_server.bucket}/{prefix}/repo/",
        s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert (backend.bucket, backend.prefix) == (s3_server.bucket, f"{prefix}/repo")
    backend.put("chunks/a", b"payload")
    whole_bucket = S3Backend(
        s3_server.bucket,
        endpoint_url=s3_server.endpoint,
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
    )
    assert whole_bucket.get(f"{prefix}/repo/chunks/a") == b"payload"


@pytest.mark.parametrize("url", ["bucket/prefix", "s3:///prefix", "http://host/bucket"])
def test_bad_url_is_a_usage_error(url: str) -> None:
    with pytest.raises(UsageError, match="s3://BUCKET/PREFIX"):
        open_s3_url(url)


def test_bad_endpoint_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="not a URL"):
        open_s3_url("s3://bucket", "127.0.0.1:8333")


@pytest.mark.parametrize(
    "variables",
    [
        ("CAIRN_S3_ACCESS_KEY", "CAIRN_S3_SECRET_KEY"),
        ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"),
    ],
)
def test_credentials_from_environment(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, variables: tuple[str, str]
) -> None:
    for name in (
        "CAIRN_S3_ACCESS_KEY",
        "CAIRN_S3_SECRET_KEY",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variables[0], s3_server.access_key)
    monkeypatch.setenv(variables[1], s3_server.secret_key)
    monkeypatch.setenv("CAIRN_S3_ENDPOINT", s3_server.endpoint)
    backend = open_s3_url(f"s3://{s3_server.bucket}/{uuid.uuid4().hex}")
    backend.put("chunks/a", b"env")
    assert backend.get("chunks/a") == b"env"


def test_arguments_win_over_environment(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CAIRN_S3_ACCESS_KEY", "wrong")
    monkeypatch.setenv("CAIRN_S3_SECRET_KEY", "wrong")
    backend = _backend(s3_server)
    backend.put("chunks/a", b"args")
    assert backend.get("chunks/a") == b"args"


@pytest.mark.parametrize("bundle", ["", "/nonexistent/ca.pem"])
def test_odd_aws_ca_bundle_does_not_matter_over_http(
    s3_server: SeaweedS3, monkeypatch: pytest.MonkeyPatch, bundle: str
) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", bundle)
    backend = _backend(s3_server)
    backend.put("chunks/a", b"tls")
    assert backend.get("chunks/a") == b"tls"


def test_listing_cut_short_raises_instead_of_ending() -> None:
    """The server dies after the first page: the listing must fail, never look complete."""
    with SeaweedS3.start() as server:
        backend = _backend(server)
        names = [f"chunks/{i:05d}" for i in range(3500)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: backend.put(n, b""), names))
        listing = S3Backend(
            server.bucket,
            backend.prefix,
            endpoint_url=server.endpoint,
            access_key=server.access_key,
            secret_key=server.secret_key,
            attempts=1,
        ).list("chunks")
        seen = [next(listing)]
        server.process.kill()
        server.process.wait()
        with pytest.raises(S3Unreachable):
            seen.extend(listing)
        assert len(seen) < len(names)


def test_put_new_creates_once_with_a_conditional_write(s3_server: SeaweedS3) -> None:
    """Lock and point objects are created with ``If-None-Match: *`` (`S3Backend.put_new`):
    a second writer of the same name is told so and the first object stays."""
    backend = _backend(s3_server)
    assert backend.put_new("locks/one", b"first")
    assert not backend.put_new("locks/one", b"second")
    assert backend.get("locks/one") == b"first"
