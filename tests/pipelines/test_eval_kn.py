"""``geolip eval kn`` and the Kneser-Ney rows of ``geolip eval aleph``: built from the corpus' KN
atlas (Ray Data, once per corpus), equal to the pure-Python oracle on the same held-out bytes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from clierr import cli_error
from kn_oracle import OracleKN

from atlas.corpus import DEFAULT_HELDOUT, encode_text, iter_split
from geolip.aleph.checkpoint import save_checkpoint
from geolip.aleph.model import AlephLM
from geolip.aleph.presets import tiny, with_head
from pipelines.cli import main

CORPUS = "builtin:tiny"


def _side(side: str) -> list[bytes]:
    return [encode_text(d.text) for d in iter_split(CORPUS, side, DEFAULT_HELDOUT)]


def _eval_kn(tmp_path, capsys, *extra: str) -> dict:
    argv = ["eval", "kn", "--corpus", CORPUS, "--data-dir", str(tmp_path), "--format", "json"]
    assert main([*argv, "--quiet", *extra]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.ray
def test_eval_kn_equals_the_oracle_logs_a_run_and_reuses_its_atlas(
    ray_session, tmp_path, capsys
) -> None:
    from mlflow.tracking import MlflowClient

    from pipelines.tracking import default_tracking_uri

    out = _eval_kn(tmp_path, capsys, "--orders", "3,5", "--prime-bytes", "1000")
    held = b"".join(_side("validation"))
    assert out["bytes"] == len(held)
    assert [r["name"] for r in out["kneser_ney"]] == ["KN-3", "KN-5"]
    for row in out["kneser_ney"]:
        oracle = OracleKN(_side("train"), row["order"])
        assert row["bpb"] == pytest.approx(float(np.mean(oracle.bits(held))), rel=1e-12)
    assert [c["name"] for c in out["compressors"]] == [
        "gzip -9",
        "bzip2 -9",
        "xz -9e",
        "zstd -19 --long",
    ]
    run = MlflowClient(default_tracking_uri(tmp_path)).get_run(out["mlflow_run_id"])
    assert run.data.metrics["eval/kn/5/bpb"] == out["kneser_ney"][1]["bpb"]
    assert run.data.tags["baseline"] == "kneser-ney"
    # The atlas lives under the data dir, named by the shards and its config hash: reused.
    atlas = tmp_path / "atlases"
    (built,) = atlas.iterdir()
    assert out["kneser_ney"][0]["atlas"] == str(built)
    stamp = (built / "manifest.json").stat().st_mtime_ns
    again = _eval_kn(tmp_path, capsys, "--orders", "4", "--no-compressors", "--no-log")
    assert (built / "manifest.json").stat().st_mtime_ns == stamp
    assert list(atlas.iterdir()) == [built]  # order 4 is read from the same (order-5) atlas
    assert "compressors" not in again and "mlflow_run_id" not in again


@pytest.mark.ray
def test_eval_aleph_lists_kn_beside_the_compressors(ray_session, tmp_path, capsys) -> None:
    run_cfg = with_head(tiny(), "byte")
    torch.manual_seed(0)
    ck = save_checkpoint(tmp_path / "ck", AlephLM(run_cfg.model, None), run_cfg)
    argv = ["eval", "aleph", str(ck), "--corpus", CORPUS, "--data-dir", str(tmp_path)]
    assert main([*argv, "--format", "json", "--no-compressors", "--kn-orders", "2,3"]) == 0
    out = json.loads(capsys.readouterr().out)
    held = b"".join(_side("validation"))
    got = {r["name"]: r["bpb"] for r in out["kneser_ney"]}
    want = {f"KN-{n}": float(np.mean(OracleKN(_side("train"), n).bits(held))) for n in (2, 3)}
    assert got == pytest.approx(want, rel=1e-12)
    assert main([*argv, "--no-compressors", "--kn-orders", "3", "--no-log"]) == 0
    table = capsys.readouterr().out
    assert "KN-3" in table and f"{want['KN-3']:.4f}" in table


@pytest.mark.parametrize("orders", ["0", "9", "3,x", ""])
def test_bad_orders_are_refused_on_one_line(tmp_path, capsys, orders) -> None:
    assert (
        main(["eval", "kn", "--corpus", CORPUS, "--data-dir", str(tmp_path), "--orders", orders])
        == 2
    )
    err = cli_error(capsys)
    assert "--orders" in err and "between 1 and 8" in err
    assert not (tmp_path / "atlases").exists()
