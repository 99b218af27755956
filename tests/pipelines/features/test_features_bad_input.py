"""``geolip features extract`` / ``geolip train svae`` refuse bad input before any work (no Ray)."""

from __future__ import annotations

import json

import pytest
from clierr import cli_error

from pipelines.cli import main


def _error(capsys) -> str:
    return cli_error(capsys)


def test_a_decoder_host_is_not_an_encoder(tmp_path, capsys) -> None:
    from transformers import GPT2Config

    host = tmp_path / "gpt2-tiny"
    GPT2Config(n_layer=1, n_embd=16, n_head=2, architectures=["GPT2LMHeadModel"]).save_pretrained(
        host
    )
    argv = ["features", "extract", "--host", str(host), "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    assert "not an encoder" in _error(capsys)
    assert not (tmp_path / "f").exists()


def test_a_missing_host_and_a_corpus_without_sentences(tmp_path, capsys) -> None:
    argv = ["features", "extract", "--host", str(tmp_path / "nope"), "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    assert "nope" in _error(capsys)
    short = tmp_path / "short.txt"
    short.write_text("Too short.\nAlso short.\n" * 20)
    argv = ["features", "extract", "--corpus", f"file:{short}", "--out", str(tmp_path / "f")]
    assert main(argv) == 2
    assert "no sentences of >= 5 words" in _error(capsys)
    assert not (tmp_path / "f").exists()


def test_feature_shards_of_the_wrong_size(tmp_path, capsys) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    shards = tmp_path / "feat"
    for side in ("train", "validation"):
        (shards / side).mkdir(parents=True)
        flat = pa.array([0.5] * 40, pa.float32())
        table = pa.table(
            {
                "document": ["d"] * 5,
                "sentence": [0] * 5,
                "token": list(range(5)),
                "vector": pa.FixedSizeListArray.from_arrays(flat, 8),
            }
        )
        pq.write_table(table, shards / side / "part-0.parquet")
    manifest = {
        "format": "geolip-features/1",
        "host": {"hidden_size": 384, "name": "x"},
        "corpus": "c",
        "request": {"layer": -1},
        "standardize": {"mean": [0.0] * 8, "std": [1.0] * 8},
    }
    (shards / "manifest.json").write_text(json.dumps(manifest))
    argv = ["train", "svae", "--data", f"features:{shards}", "--data-dir", str(tmp_path)]
    assert main(argv) == 2
    assert "hidden size 384" in _error(capsys)


@pytest.mark.parametrize(
    ("setting", "needle"),
    [
        ("model.ps=3", "divisible by geo.ps=3"),
        ("model.nope=1", "model.nope=1"),
        ("train.schedule=linear", "schedule"),
    ],
)
def test_svae_config_errors(tmp_path, capsys, setting, needle) -> None:
    argv = [
        "train",
        "svae",
        "--data",
        "images:structured",
        "--data-dir",
        str(tmp_path),
        "--set",
        setting,
    ]
    assert main(argv) == 2
    assert needle in _error(capsys)
