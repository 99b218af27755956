"""Checkpoints (safetensors + JSON), bank validation and generation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file, save_file

from geolip.aleph.bank import BankError, TrigramBank, bank_from_bytes, load_bank, save_bank
from geolip.aleph.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from geolip.aleph.config import AlephRunConfig
from geolip.aleph.generate import generate, stream
from geolip.aleph.presets import tiny, with_head
from geolip.config import ConfigError, config_hash


def _run_cfg(model) -> AlephRunConfig:
    base = tiny()
    return AlephRunConfig(model=model.cfg, train=base.train, preset="tiny")


@pytest.fixture
def saved(tmp_path, make_model):
    """A saved tiny pmix checkpoint (after one perturbation so weights are not just the init)."""
    model = make_model("pmix", seed=40)
    with torch.no_grad():
        model.codebooks[0].A_raw.add_(0.1)
    path = save_checkpoint(tmp_path / "ckpt", model, _run_cfg(model))
    return path, model


@pytest.mark.parametrize("head", ["byte", "pmix", "kernel"])
def test_round_trip_is_bit_exact(tmp_path, make_model, text_windows, head):
    model = make_model(head, seed=41, write_aux_weight=0.1 if head == "byte" else 0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    run_cfg = _run_cfg(model)
    path = save_checkpoint(tmp_path / "ck", model, run_cfg, meta={"step": 17})
    loaded, cfg2, meta = load_checkpoint(path)
    assert cfg2 == run_cfg and meta["step"] == 17
    assert meta["param_count"] == sum(p.numel() for p in model.parameters())
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert sd[k].dtype == sd2[k].dtype and torch.equal(sd[k], sd2[k]), k
    assert torch.equal(loaded.bank.trigrams, model.bank.trigrams)
    assert torch.equal(loaded.bank.log_prior, model.bank.log_prior)
    assert loaded.bank.fingerprint() == model.bank.fingerprint() == meta["bank_fingerprint"]
    w = text_windows(2, 32, start=123)
    model.eval()
    with torch.no_grad():
        a, b = model(w[:, :-1], w[:, 1:]), loaded(w[:, :-1], w[:, 1:])
    assert torch.equal(a.nll, b.nll) and torch.equal(a.loss, b.loss)


def test_refuses_to_overwrite_and_leaves_no_temp_dirs(saved, make_model):
    path, model = saved
    before = (path / "model.safetensors").read_bytes()
    other = make_model("pmix", seed=99)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_checkpoint(path, other, _run_cfg(other))
    assert (path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]
    save_checkpoint(path, other, _run_cfg(other), overwrite=True)
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt"]
    loaded, _, _ = load_checkpoint(path)
    assert torch.equal(loaded.codebooks[0].A_raw, other.codebooks[0].A_raw)
    files = sorted(p.name for p in path.iterdir())
    assert files == ["bank.safetensors", "config.json", "meta.json", "model.safetensors"]


def test_failed_save_leaves_nothing_behind(tmp_path, make_model):
    """A save that fails midway (here: un-serialisable metadata, after the weights were written)
    must not leave a half-written temporary directory next to the checkpoint."""
    model = make_model("byte", seed=45)
    with pytest.raises(TypeError):
        save_checkpoint(tmp_path / "ck", model, _run_cfg(model), meta={"bad": object()})
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_missing_meta(saved):
    path, _ = saved
    (path / "meta.json").unlink()
    with pytest.raises(CheckpointError, match=r"meta\.json is missing"):
        load_checkpoint(path)


def test_not_a_directory(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file, not a directory"):
        load_checkpoint(tmp_path / "file")


@pytest.mark.parametrize(
    ("name", "text", "kind"),
    [
        ("meta.json", "[1]", "array"),
        ("meta.json", '"x"', "string"),
        ("config.json", "[1]", "array"),
        ("config.json", "null", "null"),
        ("config.json", '{"model": 5}', "number"),
    ],
)
def test_json_that_is_not_an_object(saved, name, text, kind):
    path, _ = saved
    (path / name).write_text(text)
    with pytest.raises(CheckpointError, match=f"{name}.* JSON {kind}; expected a JSON object"):
        load_checkpoint(path)


def test_json_that_is_not_utf8(saved):
    path, _ = saved
    (path / "meta.json").write_bytes(b"\xff\xfe{}")
    with pytest.raises(CheckpointError, match=r"meta\.json is not UTF-8 text \(byte 0xff"):
        load_checkpoint(path)


def test_corrupt_weights(saved):
    path, _ = saved
    f = path / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_missing_key(saved):
    path, _ = saved
    f = path / "model.safetensors"
    state = load_file(str(f))
    del state["ln_f.weight"]
    save_file(state, str(f))
    with pytest.raises(CheckpointError, match=r"missing \['ln_f.weight'\]"):
        load_checkpoint(path)


def test_wrong_shape(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["d_model"] = 32
    (path / "config.json").write_text(json.dumps(cfg))
    # Re-stamp the hash so the load gets as far as the weights: they no longer fit the config.
    meta = json.loads((path / "meta.json").read_text())
    meta["config_hash"] = config_hash(AlephRunConfig.from_dict(cfg))
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="shape of .* the config expects"):
        load_checkpoint(path)


def test_config_edited_after_saving(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["tau"] = 0.2  # same shapes, different model: must not load silently
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="changed after saving"):
        load_checkpoint(path)


def test_unknown_config_key(saved):
    path, _ = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["model"]["d_modle"] = 64
    with pytest.raises(ConfigError, match=r"unknown model config keys \['d_modle'\]"):
        AlephRunConfig.from_dict(cfg)
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="d_modle"):
        load_checkpoint(path)


def test_wrong_bank_fingerprint(saved, english):
    path, _ = saved
    save_bank(bank_from_bytes(english[:30_000], 256), path / "bank.safetensors")
    with pytest.raises(CheckpointError, match="fingerprint"):
        load_checkpoint(path)


def test_bank_file_with_duplicate_rows(saved):
    path, _ = saved
    rows = np.array([[1, 2, 3], [4, 5, 6], [1, 2, 3]], np.uint8)
    save_numpy(
        {"trigrams": rows, "log_prior": np.zeros(3, np.float32)}, str(path / "bank.safetensors")
    )
    with pytest.raises(CheckpointError, match="1 duplicate rows"):
        load_checkpoint(path)
    with pytest.raises(BankError, match="unique"):
        load_bank(path / "bank.safetensors")


def test_bank_file_with_out_of_range_bytes(saved):
    path, _ = saved
    rows = np.array([[1, 2, 3], [4, 257, 6]], np.int64)
    save_numpy(
        {"trigrams": rows, "log_prior": np.zeros(2, np.float32)}, str(path / "bank.safetensors")
    )
    with pytest.raises(CheckpointError, match=r"0\.\.255"):
        load_checkpoint(path)


def test_bank_rows_validated():
    with pytest.raises(BankError, match="duplicate"):
        TrigramBank(torch.tensor([[1, 2, 3], [1, 2, 3]]), torch.zeros(2), {})
    with pytest.raises(BankError, match=r"0\.\.255.*257"):
        TrigramBank(torch.tensor([[1, 2, 3], [4, 257, 6]]), torch.zeros(2), {})
    with pytest.raises(BankError, match=r"0\.\.255"):
        TrigramBank(torch.tensor([[-1, 2, 3]]), torch.zeros(1), {})
    with pytest.raises(BankError, match=r"\[N>=1, 3\]"):
        TrigramBank(torch.zeros(4, 2, dtype=torch.long), torch.zeros(4), {})
    with pytest.raises(BankError, match="log_prior"):
        TrigramBank(torch.tensor([[1, 2, 3]]), torch.zeros(2), {})


def test_bank_file_round_trip_and_lookup(tmp_path, bank):
    loaded = load_bank(save_bank(bank, tmp_path / "b.safetensors"))
    assert torch.equal(loaded.trigrams, bank.trigrams)
    assert torch.equal(loaded.log_prior, bank.log_prior)
    assert loaded.fingerprint() == bank.fingerprint()
    idx = torch.tensor([5, 0, bank.size - 1])
    assert torch.equal(loaded.lookup(bank.trigrams[idx]), idx)
    present = {tuple(r) for r in bank.trigrams.tolist()}
    absent = torch.tensor(
        [r for r in ([255, 255, b] for b in range(256)) if tuple(r) not in present]
    )
    assert len(absent) > 0 and bool((loaded.lookup(absent) == -1).all())
    (tmp_path / "junk.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(BankError, match="not a readable"):
        load_bank(tmp_path / "junk.safetensors")


# -- generation -----------------------------------------------------------------------------------
def test_prompt_longer_than_position_table(make_model):
    model = make_model("byte", seed=42)
    too_long = b"abc" * (model.cfg.seq_trigrams + 1)
    with pytest.raises(ValueError, match="position table"):
        generate(model, too_long, 6)


@pytest.mark.parametrize(("head", "mixture"), [("byte", "blend"), ("pmix", "switch")])
def test_generate_length_and_determinism(make_model, head, mixture):
    model = make_model(head, seed=43, head__mixture=mixture)
    a = generate(model, b"The cat", 10, seed=5)
    b = generate(model, b"The cat", 10, seed=5)
    c = generate(model, b"The cat", 10, seed=6)
    assert isinstance(a, bytes) and len(a) == 10
    assert a == b and a != c
    assert generate(model, b"x", 0) == b""
    assert len(generate(model, b"", 4, seed=1)) == 4


@pytest.mark.parametrize(("head", "n_bytes"), [("byte", 10), ("pmix", 11), ("pmix", 0)])
def test_stream_is_generate_in_chunks(make_model, head, n_bytes):
    model = make_model(head, seed=46)
    chunks = list(stream(model, b"The cat", n_bytes, temperature=0.7, seed=3))
    assert all(len(c) == 3 for c in chunks[:-1]) and all(1 <= len(c) <= 3 for c in chunks)
    assert b"".join(chunks) == generate(model, b"The cat", n_bytes, temperature=0.7, seed=3)
    assert len(b"".join(chunks)) == n_bytes


def test_stream_is_lazy(make_model):
    """A 10**12-byte request yields its first chunks at once: nothing is generated (or kept)
    ahead of the reader, so memory does not grow with the request."""
    import itertools
    import time

    model = make_model("pmix", seed=47, n_segments=2)
    started = time.monotonic()
    chunks = stream(model, b"The cat", 10**12, seed=1)
    first = list(itertools.islice(chunks, 2 * model.cfg.seq_trigrams + 4))  # past a rollover
    assert time.monotonic() - started < 30
    assert b"".join(first) == generate(model, b"The cat", 3 * len(first), seed=1)


def test_stream_checks_the_prompt_when_called(make_model):
    model = make_model("byte", seed=42)
    with pytest.raises(ValueError, match="position table"):
        stream(model, b"abc" * (model.cfg.seq_trigrams + 1), 6)  # not at the first next()


def test_streaming_generation_keeps_constant_state(make_model):
    model = make_model("pmix", seed=44, n_segments=2)
    T = model.cfg.seq_trigrams
    long_prompt = b"one two three " * 8  # 112 bytes > T trigrams: allowed when streamed
    out = generate(model, long_prompt, 3 * (2 * T + 5), seed=2)
    assert len(out) == 3 * (2 * T + 5)
    # The decode state has the same shapes however far it runs (positions wrap every T).
    ids = torch.randint(0, 256, (1, 2 * T + 3, 3), generator=torch.Generator().manual_seed(4))
    state, shapes = None, set()
    with torch.no_grad():
        for t in range(2 * T + 3):
            _, state = model.step(ids[:, t], t % T, state)
            shapes.add(tuple((tuple(s.M.shape), tuple(s.z.shape)) for s in state))
    assert len(shapes) == 1
    assert sum(s.M.numel() + s.z.numel() for s in state) == model.cfg.state_floats


def test_with_head_rejects_unknown_head():
    with pytest.raises(ConfigError, match="model.head.kind must be one of"):
        with_head(tiny(), "pmix9")
