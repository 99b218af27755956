"""``pipelines.storage`` against a real S3-compatible server (moto's, started on 127.0.0.1 by
``tests/s3.py``): parsing roots, probing endpoint / bucket / credentials with one line each,
publishing with the marker last and nothing left behind on failure, the readers' cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from s3 import s3_server, use_server

from pipelines.errors import GeolipError
from pipelines.storage import (
    MARKER,
    cached_copy,
    check_root,
    list_files,
    parse_root,
    publish_dir,
    read_bytes,
)


@pytest.fixture(scope="module")
def server():
    with s3_server() as srv:
        yield srv


@pytest.fixture
def s3(server, monkeypatch, tmp_path):
    """The server's standard AWS environment in this process, and a cache under ``tmp_path``."""
    return use_server(monkeypatch, server, tmp_path / "cache")


def _result(root: Path, files: dict[str, bytes], marker: dict | None = None) -> Path:
    """A finished local result: ``files`` and a marker (``manifest.json``)."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / MARKER).write_text(json.dumps(marker or {"format": "test/1"}))
    return root


def test_local_paths_are_absolute_roots(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = parse_root("out/x", "--out")
    assert not root.remote and root.path == str(tmp_path / "out" / "x")


@pytest.mark.parametrize(
    "value, expect",
    [
        ("gs://bucket/x", "--out gs://bucket/x: gs:// is not supported; use s3://BUCKET/PREFIX"),
        ("hdfs://nn/x", "--out hdfs://nn/x: hdfs:// is not supported"),
        ("s3:///x", "--out s3:///x: expected s3://BUCKET/PREFIX"),
        ("s3://b/x?versionId=1", "expected s3://BUCKET/PREFIX"),
        ("s3://b/x/../y", "--out s3://b/x/../y: expected s3://BUCKET/PREFIX"),
        ("s3://b/x//y", "expected s3://BUCKET/PREFIX"),
    ],
)
def test_unsupported_or_malformed_uris_are_refused_not_mangled(value, expect):
    with pytest.raises(GeolipError) as info:
        parse_root(value, "--out")
    assert expect in str(info.value) and "\n" not in str(info.value)


def test_a_reachable_bucket_with_a_valid_key_passes(s3):
    root = check_root(f"s3://{s3.bucket}/some/prefix/", "--out")
    assert root.remote and root.uri == f"s3://{s3.bucket}/some/prefix"
    assert root.path == f"{s3.bucket}/some/prefix" and s3.keys() == []


@pytest.mark.parametrize(
    "env, uri, expect",
    [
        ({}, "s3://no-such-bucket/x", "bucket 'no-such-bucket' does not exist at http://"),
        (
            {"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"},
            "s3://{bucket}/x",
            "credentials were refused",
        ),
        (
            {"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
            "s3://{bucket}/x",
            "credentials were refused",
        ),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"}, "s3://{bucket}/x", "cannot be reached"),
        (
            {"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:{port}"},
            "s3://{bucket}/x",
            "($AWS_ENDPOINT_URL_S3) cannot be reached",
        ),
    ],
    ids=["missing-bucket", "wrong-key-id", "wrong-secret", "unreachable", "unreachable-s3-var"],
)
def test_bad_stores_are_one_line_naming_the_flag(s3, monkeypatch, env, uri, expect):
    from pipelines.runtime import free_port

    port = free_port()  # nothing listens there
    for key, value in env.items():
        monkeypatch.setenv(key, value.format(port=port))
    uri = uri.format(bucket=s3.bucket)
    with pytest.raises(GeolipError) as info:
        check_root(uri, "--out")
    message = str(info.value)
    assert message.startswith(f"--out {uri}: ") and expect in message and "\n" not in message
    assert s3.keys() == []


def test_publish_uploads_everything_and_readers_get_the_same_bytes(s3, tmp_path):
    files = {"grams/stratum=char/part-0.parquet": b"\x00" * 5000, "a.txt": b"hello"}
    local = _result(tmp_path / "result", files)
    root = check_root(f"s3://{s3.bucket}/published", "--out")
    publish_dir(local, root)
    assert s3.keys("published/") == sorted(f"published/{n}" for n in [*files, MARKER])
    assert list_files(root) == sorted([*files, MARKER])
    copy = cached_copy(root, "--atlas")
    assert {n: (copy / n).read_bytes() for n in files} == files
    assert cached_copy(root, "--atlas") == copy  # the second read is the cache
    # Published again (--overwrite): a new marker is a new cache key, never the stale copy.
    other = _result(tmp_path / "other", {"b.txt": b"new"}, {"format": "test/1", "v": 2})
    publish_dir(other, root, replace=list_files(root))
    assert list_files(root) == ["b.txt", MARKER]
    fresh = cached_copy(root, "--atlas")
    assert fresh != copy and (fresh / "b.txt").read_bytes() == b"new"
    assert not (fresh / "a.txt").exists()


def test_a_failed_publish_leaves_nothing_in_the_bucket(s3, tmp_path):
    # A file whose name cannot be a key (not UTF-8) sorts after "a.txt" and before the marker:
    # the upload fails half-way, as a lost connection would, and removes what it wrote.
    local = _result(tmp_path / "result", {"a.txt": b"one"})
    with open(bytes(local) + b"/b-\xff.bin", "wb") as f:
        f.write(b"two")
    root = check_root(f"s3://{s3.bucket}/half", "--out")
    with pytest.raises(Exception):  # noqa: B017 - whatever the upload raised, nothing stays
        publish_dir(local, root)
    assert s3.keys("half") == []
    assert read_bytes(root, MARKER) is None


def test_a_prefix_without_its_marker_is_not_read(s3, tmp_path):
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="unfinished/part-0.parquet", Body=b"x")
    root = check_root(f"s3://{s3.bucket}/unfinished", "--atlas")
    with pytest.raises(GeolipError, match=r"^--atlas s3://.*/unfinished: no manifest\.json there"):
        cached_copy(root, "--atlas")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*.parquet"))
