"""Object-storage URIs where a local or shared POSIX path is needed: refused with one line
naming the flag (exit 2), never turned into a local path (``s3://b/x`` would become
``./s3:/b/x``), nothing written."""

from __future__ import annotations

import pytest
from battery_harness import Case, check_case

REFUSED = "object storage is not supported here yet; use a local or shared POSIX path"

CASES = [
    Case(
        "train-data-dir-s3",
        ("train", "aleph", "--corpus", "builtin:tiny", "--data-dir", "s3://bucket/geolip"),
        f"--data-dir s3://bucket/geolip: s3:// {REFUSED}",
    ),
    Case(
        "train-geolip-data-gs",
        ("train", "aleph", "--corpus", "builtin:tiny"),
        f"--data-dir ($GEOLIP_DATA or ./data) gs://bucket/geolip: gs:// {REFUSED}",
        env={"GEOLIP_DATA": "gs://bucket/geolip"},
    ),
    Case(
        "atlas-build-out-s3",
        ("atlas", "build", "--corpus", "builtin:tiny", "--out", "s3://bucket/atlas"),
        f"--out s3://bucket/atlas: s3:// {REFUSED}",
    ),
    Case(
        "features-extract-out-gs",
        ("features", "extract", "--corpus", "builtin:tiny", "--out", "gs://bucket/features"),
        f"--out gs://bucket/features: gs:// {REFUSED}",
    ),
    Case(
        "sweep-data-dir-s3",
        ("sweep", "ladder", "--scale", "smoke", "--data-dir", "s3://bucket/geolip"),
        f"--data-dir s3://bucket/geolip: s3:// {REFUSED}",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_object_storage_is_refused_not_mangled(case, tmp_path):
    check_case(case, "object storage", tmp_path)
