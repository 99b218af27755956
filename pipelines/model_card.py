"""The ``README.md`` model card of an exported checkpoint (``geolip export``).

Everything in it comes from the checkpoint's own files (its config, ``meta.json`` and the run's
``verdict.json`` / ``host_config.json``): a card never claims what the checkpoint does not record.
"""

from __future__ import annotations

import json

DESCRIPTIONS = {
    "aleph": (
        "AlephLM",
        "a byte-level language model over byte trigrams whose attention is routed through aleph "
        "addresses: each token commits to one of K codebook axes on the sphere S^(D-1), and the "
        "head predicts the next trigram (from a trigram bank where the head uses one).",
    ),
    "svae": (
        "SVAE companion",
        "a rigid sphere-normalised frame per patch or feature token, a fixed isometric lens, the "
        "omega column-norm spectrum, bounded spectral-alpha attention across patches and a "
        "decoder that reconstructs the input (spec svae.md).",
    ),
}

DATA_KEYS = ("corpus", "data", "data_mode", "dataset", "shards", "split", "source")
"""Keys of meta.json / verdict.json that say what the model was trained on."""

FIGURE_PREFIXES = (
    "val_bpb",
    "heldout_bpb",
    "employ",
    "recon_cos",
    "baseline_cos",
    "mse_",
    "frame_deviation",
    "frac_in_envelope",
    "alpha_final",
    "alpha_delta",
    "ablation_gain",
    "mechanism",
)
"""Leaf names (or their prefixes) of the held-out figures a card reports."""


def model_card(family: str, config: dict, meta: dict, extras: dict[str, dict], name: str) -> str:
    """The card: YAML front matter, then what the model is, its config, its training data, its
    held-out figures and how to load the folder ``name`` with and without geolip."""
    title = meta.get("run_name") or meta.get("run") or name
    sections = [
        _front_matter(family),
        f"# {title}\n\n{DESCRIPTIONS[family][0]}: {DESCRIPTIONS[family][1]}",
        "## Model\n\n" + _table(("", ""), _model_rows(family, config, meta)),
        "## Config\n\n" + _table(("key", "value"), _flatten(config)),
        "## Training data\n\n" + _training_data(meta, extras),
        "## Held-out figures\n\n" + _figures(meta, extras),
        "## How to load\n\n" + _how_to_load(family, name),
    ]
    return "\n\n".join(sections) + "\n"


def _front_matter(family: str) -> str:
    tags = ["geolip", f"geolip-{family}", "safetensors"]
    tags += ["byte-level", "language-model"] if family == "aleph" else ["autoencoder"]
    lines = ["---", "library_name: geolip", "license: unknown", "tags:"]
    return "\n".join(lines + [f"- {t}" for t in tags] + ["---"])


def _model_rows(family: str, config: dict, meta: dict) -> list[tuple[str, str]]:
    count = meta.get("param_count")
    rows = [("family", f"{DESCRIPTIONS[family][0]} (`geolip-{family}`)")]
    if family == "aleph":
        model = config.get("model", {})
        rows += [
            ("head", str(model.get("head", {}).get("kind", "?"))),
            ("K / D", f"{model.get('K')} / {model.get('D')}"),
            ("layers / width", f"{model.get('n_layers')} / {model.get('d_model')}"),
        ]
        if meta.get("bank_size"):
            rows.append(("bank", f"{meta['bank_size']} trigrams ({meta.get('bank_fingerprint')})"))
    else:
        shell = f"{config.get('n_layers')} spectral-alpha layers"
        rows += [
            ("head", shell if config.get("use_spectral", True) else "no attention (ablation)"),
            ("K / D", f"{config.get('codebook_K')} / {config.get('D_base')}"),
            ("lens", f"D_lens {config.get('D_lens')}, {config.get('lens_sign')}"),
        ]
    rows.append(("parameters", f"{count:,}" if isinstance(count, int) else "not recorded"))
    rows.append(("config hash", str(meta.get("config_hash"))))
    return rows


def _training_data(meta: dict, extras: dict[str, dict]) -> str:
    verdict = extras.get("verdict.json", {})
    rows = [(k, _value(src[k])) for src in (meta, verdict) for k in DATA_KEYS if k in src]
    host = extras.get("host_config.json")
    if host:
        rows += [(f"host_config.{k}", v) for k, v in _flatten(host)]
    for key in ("steps", "step", "run_name", "mlflow_run_id", "created"):
        if key in meta:
            rows.append((key, _value(meta[key])))
    if not rows:
        return "Not recorded in the checkpoint."
    note = (
        ""
        if any(k in DATA_KEYS or k.startswith("host_config.") for k, _ in rows)
        else ("The checkpoint records no corpus or data source; what it records of its run:\n\n")
    )
    return note + _table(("field", "value"), _unique(rows))


def _figures(meta: dict, extras: dict[str, dict]) -> str:
    rows = []
    for where, source in (("verdict.json", extras.get("verdict.json", {})), ("meta.json", meta)):
        for key, value in _flatten(source, raw=True):
            if key.split(".")[-1].startswith(FIGURE_PREFIXES):
                rows.append((f"{key} ({where})", _value(value)))
    if not rows:
        return "None recorded (the checkpoint has no verdict.json and no figures in meta.json)."
    return _table(("figure", "value"), rows)


def _how_to_load(family: str, name: str) -> str:
    module, loader, names = {
        "aleph": ("geolip.aleph.checkpoint", "load_checkpoint", "model, run_cfg, meta"),
        "svae": ("geolip.svae.checkpoint", "load_svae_checkpoint", "model, geo, meta"),
    }[family]
    with_geolip = f'from {module} import {loader}\n\n{names} = {loader}("{name}")'
    without = (
        "import json\n"
        "from safetensors.torch import load_file\n\n"
        f'weights = load_file("{name}/model.safetensors")  # parameter name -> tensor\n'
        f'config = json.load(open("{name}/config.json"))\n'
        f'meta = json.load(open("{name}/meta.json"))'
    )
    return (
        f"With geolip (the model in eval mode, its config and meta.json):\n\n"
        f"```python\n{with_geolip}\n```\n\n"
        f"Without geolip (only `safetensors` and `json`):\n\n```python\n{without}\n```"
    )


def _flatten(value: dict, prefix: str = "", raw: bool = False) -> list[tuple[str, object]]:
    """``(dotted key, value)`` for every leaf of nested dicts (values as text unless ``raw``)."""
    rows = []
    for key, item in value.items():
        path = f"{prefix}{key}"
        if isinstance(item, dict):
            rows += _flatten(item, path + ".", raw)
        else:
            rows.append((path, item if raw else _value(item)))
    return rows


def _value(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return value if isinstance(value, str) else json.dumps(value)


def _unique(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    seen, out = set(), []
    for row in rows:
        if row not in seen:
            seen.add(row)
            out.append(row)
    return out


def _table(header: tuple[str, str], rows: list[tuple[str, str]]) -> str:
    def cell(text) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    return "\n".join(lines + [f"| {cell(k)} | {cell(v)} |" for k, v in rows])
