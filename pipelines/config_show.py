"""``geolip config show``: every key of a run config, its value and what the field means.

The config is built as the training command builds it (``geolip train aleph --scale S --head H``
through ``pipelines.scales``; ``geolip train svae`` from a preset of ``geolip.svae.config`` or,
with ``--data``, through ``pipelines.svae.data.run_config``), then ``--config`` and ``--set``, so
a user sees the resolved result. Each leaf is listed under its dotted ``--set`` key with the
field's attribute docstring (the string literal after the field in its dataclass). ``--format
yaml`` writes a commented file that ``--config`` reads back to the same config.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import math
import textwrap
from dataclasses import dataclass, fields, is_dataclass
from functools import cache
from typing import Any

from geolip.aleph.config import HEADS
from pipelines.aleph.arguments import head_kind
from pipelines.cli import Command, add_set_argument

FAMILIES = ("aleph", "svae")
FORMATS = ("text", "yaml", "json")
DEFAULT_PRESET = {"aleph": "tiny", "svae": "image16"}
DEFAULT_HEAD = "pmix"
"""``geolip train aleph``'s default ``--head``."""


@dataclass(frozen=True)
class Key:
    """One leaf of a run config: its ``--set`` path, value, type, docstring and base value."""

    path: str
    value: Any
    type: str
    doc: str
    base: Any
    """The value before ``--config`` and ``--set`` (the preset's)."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """``{field name: attribute docstring}`` of a dataclass, read once from its source (each
    docstring on one line); a class without source has none."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for stmt, after in zip(body, body[1:], strict=False):
        text = _string(after)
        if (
            text is not None
            and isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
        ):
            docs[stmt.target.id] = " ".join(text.split())
    return docs


def _string(stmt: ast.stmt) -> str | None:
    """The text of a bare string-literal statement (an attribute docstring), else None."""
    if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
        return stmt.value.value if isinstance(stmt.value.value, str) else None
    return None


def config_keys(cfg: Any, base: Any | None = None) -> list[Key]:
    """Every leaf under the sections of the run config ``cfg``, in field order (``base``: the
    config before overrides, for :attr:`Key.base`; default ``cfg``)."""
    from pipelines.config_file import sections

    base = cfg if base is None else base
    out: list[Key] = []
    for name in sections(cfg):
        out += _leaves(getattr(cfg, name), getattr(base, name), name + ".")
    return out


def _leaves(node: Any, base: Any, prefix: str) -> list[Key]:
    from pipelines.config_file import field_types

    types, docs = field_types(type(node)), field_docs(type(node))
    out = []
    for f in fields(node):
        value, was = getattr(node, f.name), getattr(base, f.name)
        if is_dataclass(value):
            out += _leaves(value, was, f"{prefix}{f.name}.")
        else:
            kind = str(types[f.name]).replace("<class '", "").replace("'>", "")
            out.append(Key(prefix + f.name, value, kind, docs.get(f.name, ""), was))
    return out


def base_config(family: str, preset: str | None, head: str | None, data: str | None) -> Any:
    """The run config ``geolip train FAMILY`` starts from, before ``--config`` and ``--set``."""
    from geolip.config import ConfigError

    if family == "aleph":
        if data is not None:
            raise ConfigError("--data is for --family svae (aleph takes --preset and --head)")
        from pipelines.scales import get_scale

        return get_scale(preset or DEFAULT_PRESET["aleph"]).run_config(head or DEFAULT_HEAD)
    if head is not None:
        raise ConfigError("--head is for --family aleph (an SVAE run has no output head)")
    if data is not None:
        if preset is not None:
            raise ConfigError("--family svae takes --preset or --data, not both")
        from pipelines.svae.data import run_config  # torch: only for --data

        return run_config(data)
    from geolip.svae.config import PRESETS, SVAERunConfig

    name = preset or DEFAULT_PRESET["svae"]
    if name not in PRESETS:
        raise ConfigError(f"unknown svae --preset {name!r}; presets: {', '.join(PRESETS)}")
    return SVAERunConfig(model=PRESETS[name]())


def _scalar(value: Any) -> str:
    """``value`` as a YAML flow scalar (quoted where YAML would read it as another type)."""
    import yaml

    return yaml.safe_dump([value], default_flow_style=True, width=math.inf).strip()[1:-1]


def render_yaml(cfg: Any, keys: list[Key], title: str) -> str:
    """A nested, commented YAML file of every key: valid ``--config`` input."""
    lines = [f"# {title}"]
    docs = {k.path: k.doc for k in keys}
    opened: list[str] = []
    for key in keys:
        *groups, leaf = key.path.split(".")
        common = 0
        while common < min(len(opened), len(groups)) and opened[common] == groups[common]:
            common += 1
        for depth in range(common, len(groups)):
            node = cfg
            for name in groups[: depth + 1]:
                node = getattr(node, name)
            what = " ".join((type(node).__doc__ or "").split())
            lines.append("  " * depth + f"# {what}" if what else "")
            lines.append("  " * depth + f"{_scalar(groups[depth])}:")
        opened = groups
        pad = "  " * len(groups)
        if docs[key.path]:
            lines.append(f"{pad}# {docs[key.path]}")
        lines.append(f"{pad}{_scalar(leaf)}: {_scalar(key.value)}")
    return "\n".join(line for line in lines if line) + "\n"


def render_text(keys: list[Key], title: str) -> str:
    """One line per key: dotted path, value, type and docstring (and the preset's value where
    ``--config`` or ``--set`` changed it)."""
    width = max(len(k.path) for k in keys)
    vwidth = min(max(len(_scalar(k.value)) for k in keys), 16)
    lines = [title]
    for k in keys:
        doc = k.doc + (f" [preset: {_scalar(k.base)}]" if k.value != k.base else "")
        lines.append(f"{k.path:<{width}}  {_scalar(k.value):<{vwidth}}  {k.type:<10}  {doc}")
    return "\n".join(line.rstrip() for line in lines) + "\n"


def render_json(keys: list[Key], title: str, config_hash: str) -> str:
    """The keys as JSON records (``key``, ``value``, ``type``, ``doc``, ``preset``)."""
    records = [
        {"key": k.path, "value": k.value, "type": k.type, "doc": k.doc, "preset": k.base}
        for k in keys
    ]
    return json.dumps({"config": title, "hash": config_hash, "keys": records}, indent=1) + "\n"


def _title(args: argparse.Namespace, config_hash: str) -> str:
    if args.family == "aleph":
        preset = args.preset or DEFAULT_PRESET["aleph"]
        what = f"geolip train aleph --scale {preset} --head {args.head or DEFAULT_HEAD}"
    elif args.data is not None:
        what = f"geolip train svae --data {args.data}"
    else:
        what = f"geolip train svae (preset {args.preset or DEFAULT_PRESET['svae']})"
    extra = " with --config/--set" if args.config_file or args.overrides else ""
    return f"{what}{extra}: config hash {config_hash}"


def _add(p: argparse.ArgumentParser) -> None:
    p.add_argument("--family", choices=FAMILIES, default="aleph", help="model family")
    p.add_argument(
        "--preset",
        "--scale",
        dest="preset",
        default=None,
        help="aleph: a --scale of `geolip train aleph` (smoke, tiny, small, full, calib23m; "
        "default tiny); svae: image16 or tiny_test (default image16)",
    )
    p.add_argument(
        "--head",
        type=head_kind,
        choices=HEADS,
        default=None,
        help=f"aleph: output head, as `geolip train aleph --head` (default {DEFAULT_HEAD})",
    )
    p.add_argument(
        "--data",
        default=None,
        help="svae: build the config as `geolip train svae --data SPEC` does (instead of --preset)",
    )
    p.add_argument(
        "--format",
        choices=FORMATS,
        default="text",
        help="text: a table; yaml: a commented file for --config; json: records",
    )
    add_set_argument(p, "show the config with this override applied (repeatable)")


def _run(args: argparse.Namespace) -> int:
    from geolip.config import config_hash
    from pipelines.config_file import apply_config

    base = base_config(args.family, args.preset, args.head, args.data)
    cfg = apply_config(base, args.config_file, args.overrides)
    keys = config_keys(cfg, base)
    digest = config_hash(cfg)
    title = _title(args, digest)
    if args.format == "yaml":
        print(render_yaml(cfg, keys, title), end="")
    elif args.format == "json":
        print(render_json(keys, title, digest), end="")
    else:
        print(render_text(keys, title), end="")
    return 0


COMMANDS = [
    Command(
        "config show",
        "list every config key of a run: its value, type and docstring",
        _add,
        _run,
    )
]
