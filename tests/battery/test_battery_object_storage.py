"""Object-storage output roots on bad input, through the real ``geolip`` command line.

``atlas build --out``, ``features extract --out`` and the atlas readers take ``s3://BUCKET/PREFIX``
(tests/pipelines/atlas/test_atlas_s3.py and tests/pipelines/features/test_features_s3.py build
and read them); against a real S3-compatible server (moto's, started on 127.0.0.1 by
``tests/s3.py``) an unreachable endpoint, a missing bucket, a wrong key, a prefix with no finished
result are each one line naming the flag, exit 2, nothing written (the case directory and the
bucket listed after the run). Schemes and roots that are not supported are refused with one line,
never turned into a local path (``s3://b/x`` would become ``./s3:/b/x``).
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from battery_harness import Case, check_case, interrupt_case
from s3 import s3_server

from pipelines.runtime import free_port

DATA_DIR_REFUSED = "is not supported by this command (object storage is for `train aleph`, `sweep`"
SCHEME_REFUSED = "is not supported; use s3://BUCKET/PREFIX"

NO_TRACKING = (
    "the default MLflow store is a SQLite file in the data directory, which cannot live on "
    "object storage; pass --tracking-uri"
)

REFUSED = [
    Case(
        "train-data-dir-s3-no-tracking-uri",
        ("train", "aleph", "--corpus", "builtin:tiny", "--data-dir", "s3://bucket/geolip"),
        f"--data-dir s3://bucket/geolip: {NO_TRACKING}",
    ),
    Case(
        "train-geolip-data-gs",
        ("train", "aleph", "--corpus", "builtin:tiny"),
        f"--data-dir ($GEOLIP_DATA) gs://bucket/geolip: gs:// {SCHEME_REFUSED}",
        env={"GEOLIP_DATA": "gs://bucket/geolip"},
    ),
    Case(
        "sweep-data-dir-s3-no-tracking-uri",
        ("sweep", "ladder", "--scale", "smoke", "--data-dir", "s3://bucket/geolip"),
        f"--data-dir s3://bucket/geolip: {NO_TRACKING}",
    ),
    Case(
        "svae-data-dir-s3",
        ("train", "svae", "--data", "images:structured", "--data-dir", "s3://bucket/geolip"),
        f"--data-dir s3://bucket/geolip: s3:// {DATA_DIR_REFUSED}",
    ),
    Case(
        "atlas-build-out-gs",
        ("atlas", "build", "--corpus", "builtin:tiny", "--out", "gs://bucket/atlas"),
        f"--out gs://bucket/atlas: gs:// {SCHEME_REFUSED}",
    ),
    Case(
        "features-extract-out-gs",
        ("features", "extract", "--corpus", "builtin:tiny", "--out", "gs://bucket/features"),
        f"--out gs://bucket/features: gs:// {SCHEME_REFUSED}",
    ),
    Case(
        "atlas-build-out-s3-no-bucket",
        ("atlas", "build", "--corpus", "builtin:tiny", "--out", "s3:///atlas"),
        "--out s3:///atlas: expected s3://BUCKET/PREFIX",
    ),
    Case(
        "bank-build-atlas-hdfs",
        ("bank", "build", "--atlas", "hdfs://nn/atlas", "--size", "64", "--out", "{tmp}/b.st"),
        f"--atlas hdfs://nn/atlas: hdfs:// {SCHEME_REFUSED}",
    ),
]

ATLAS = ("atlas", "build", "--corpus", "builtin:tiny", "--out")
FEATURES = ("features", "extract", "--corpus", "builtin:tiny", "--out")
CREDS = "the S3 credentials were refused (wrong AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"

AGAINST_SERVER = [
    Case(
        "atlas-build-unreachable-endpoint",
        (*ATLAS, "s3://{bucket}/atlas"),
        "--out s3://{bucket}/atlas: the S3 endpoint http://127.0.0.1:{port} ($AWS_ENDPOINT_URL) "
        "cannot be reached",
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"},
    ),
    Case(
        "atlas-build-missing-bucket",
        (*ATLAS, "s3://no-such-bucket/atlas"),
        "--out s3://no-such-bucket/atlas: bucket 'no-such-bucket' does not exist at {endpoint}",
    ),
    Case(
        "atlas-build-wrong-key-id",
        (*ATLAS, "s3://{bucket}/atlas"),
        f"--out s3://{{bucket}}/atlas: {CREDS}",
        env={"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"},
    ),
    Case(
        "atlas-build-no-credentials",
        (*ATLAS, "s3://{bucket}/atlas"),
        "--out s3://{bucket}/atlas: no S3 credentials were found (set AWS_ACCESS_KEY_ID",
        env={"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""},
    ),
    Case(
        "features-extract-wrong-secret",
        (*FEATURES, "s3://{bucket}/features"),
        f"--out s3://{{bucket}}/features: {CREDS}",
        env={"AWS_SECRET_ACCESS_KEY": "not-the-secret"},
    ),
    Case(
        "features-extract-unreachable-endpoint",
        (*FEATURES, "s3://{bucket}/features"),
        "($AWS_ENDPOINT_URL_S3) cannot be reached",
        env={"AWS_ENDPOINT_URL_S3": "http://127.0.0.1:{port}"},
    ),
    Case(
        "train-data-dir-unreachable-endpoint",
        (
            "train",
            "aleph",
            "--corpus",
            "builtin:tiny",
            "--data-dir",
            "s3://{bucket}/d",
            "--tracking-uri",
            "sqlite:///{tmp}/m.db",
        ),
        "--data-dir s3://{bucket}/d: the S3 endpoint http://127.0.0.1:{port} ($AWS_ENDPOINT_URL) "
        "cannot be reached",
        env={"AWS_ENDPOINT_URL": "http://127.0.0.1:{port}"},
    ),
    Case(
        "sweep-data-dir-missing-bucket",
        (
            "sweep",
            "ladder",
            "--scale",
            "smoke",
            "--data-dir",
            "s3://no-such-bucket/d",
            "--tracking-uri",
            "sqlite:///{tmp}/m.db",
        ),
        "--data-dir s3://no-such-bucket/d: bucket 'no-such-bucket' does not exist at {endpoint}",
    ),
    Case(
        "atlas-query-nothing-there",
        ("atlas", "query", "s3://{bucket}/nothing", "SELECT 1"),
        "atlas s3://{bucket}/nothing: no manifest.json there (not a finished result",
    ),
    Case(
        "train-svae-features-nothing-there",
        ("train", "svae", "--data", "features:s3://{bucket}/features"),
        "--data s3://{bucket}/features: no manifest.json there (not a finished result",
    ),
    Case(
        "atlas-stats-missing-bucket",
        ("atlas", "stats", "s3://no-such-bucket/atlas"),
        "atlas s3://no-such-bucket/atlas: bucket 'no-such-bucket' does not exist",
    ),
    Case(
        "bank-build-atlas-wrong-key-id",
        ("bank", "build", "--atlas", "s3://{bucket}/a", "--size", "64", "--out", "{tmp}/b.st"),
        f"--atlas s3://{{bucket}}/a: {CREDS}",
        env={"AWS_ACCESS_KEY_ID": "AKIAWRONGWRONGWRONG0"},
    ),
]


@pytest.fixture(scope="module")
def server():
    with s3_server() as srv:
        yield srv


@pytest.mark.parametrize("case", REFUSED, ids=[c.id for c in REFUSED])
def test_unsupported_roots_are_refused_not_mangled(case, tmp_path):
    check_case(case, "object storage", tmp_path)


@pytest.mark.parametrize("case", AGAINST_SERVER, ids=[c.id for c in AGAINST_SERVER])
def test_bad_stores_are_one_line_and_leave_the_bucket_alone(case, server, tmp_path):
    before = server.keys()
    env = server.env(XDG_CACHE_HOME="{tmp}/cache") | case.env
    values = {"bucket": server.bucket, "endpoint": server.endpoint, "port": free_port()}
    check_case(dataclasses.replace(case, env=env), "object storage", tmp_path, values=values)
    assert server.keys() == before


@pytest.mark.slow
def test_an_interrupted_build_to_s3_leaves_nothing(server, tmp_path):
    """Ctrl-C mid-count: exit 130, the bucket as it was, no local staging left."""

    def corpus(tmp: Path) -> None:
        line = "line {}: the cat sat on the mat, and the dog sat on the log.\n"
        (tmp / "corpus.txt").write_text("".join(line.format(i) for i in range(400)))

    scratch = Path(tempfile.gettempdir())
    staged = set(scratch.glob("geolip-atlas-*"))
    before = server.keys()
    uri = f"s3://{server.bucket}/interrupted"
    case = Case(
        "atlas-build-s3-ctrl-c",
        ("atlas", "build", "--corpus", "file:{tmp}/corpus.txt", "--out", uri),
        f"interrupted: nothing was written to {uri}",
        code=130,
        setup=corpus,
        env=server.env(XDG_CACHE_HOME=str(tmp_path / "cache")),
    )
    interrupt_case(case, "object storage", tmp_path, r"atlas (staged|map)")
    assert server.keys() == before
    assert set(scratch.glob("geolip-atlas-*")) == staged, "local staging left behind"
