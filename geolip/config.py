"""Configuration machinery shared by every model family: errors, the config hash, overrides.

Configs are frozen dataclasses, possibly nested (``AlephRunConfig.model.head.kind``). A run is
named by :func:`config_hash` (sha256 of canonical JSON, 10 hex): the same config gives the same
name for runs, checkpoints and banks. Variants derive with :func:`dataclasses.replace`; a dotted
path (``model.head.kind``) addresses a nested field for :func:`replace_at`, and the command line's
``--set model.tau=0.2`` strings are parsed once, against the config they change, by
:func:`parse_overrides` into typed ``(path, value)`` changes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any

Changes = tuple[tuple[str, Any], ...]
"""Typed overrides: ``(("model.tau", 0.2), ("train.steps", 500))``, applied in order."""


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what was expected."""


def check(ok: bool, msg: str) -> None:
    """Raise ``ConfigError(msg)`` unless ``ok`` (the validation helper of every config)."""
    if not ok:
        raise ConfigError(msg)


def config_hash(obj: Any, length: int = 10) -> str:
    """sha256 of the canonical JSON of a dataclass (or dict): a stable short name."""
    data = dataclasses.asdict(obj) if is_dataclass(obj) else obj
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def build(cls, values: Mapping[str, Any], prefix: str):
    """``cls(**values)`` for a frozen config dataclass, nested dataclass fields built from dicts;
    unknown keys raise a ConfigError naming ``prefix`` and the known keys."""
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(values) - set(known))
    check(not unknown, f"unknown {prefix} config keys {unknown}; known: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        default = _default(known[name])
        if is_dataclass(default) and isinstance(value, Mapping):
            value = build(type(default), value, f"{prefix}.{name}")
        kwargs[name] = value
    return cls(**kwargs)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def get_at(cfg: Any, path: str) -> Any:
    """The value at dotted ``path`` of a nested config (``"model.head.kind"``)."""
    value = cfg
    for name in path.split("."):
        value = getattr(value, name)
    return value


def replace_at(cfg: Any, path: str, value: Any) -> Any:
    """``cfg`` with the field at dotted ``path`` replaced (each level via ``dataclasses.replace``,
    so every level's ``__post_init__`` validation runs)."""
    head, _, rest = path.partition(".")
    if not rest:
        return dataclasses.replace(cfg, **{head: value})
    return dataclasses.replace(cfg, **{head: replace_at(getattr(cfg, head), rest, value)})


def config_diff(a: Any, b: Any, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{dotted path: (a's value, b's value)}`` for every leaf where two configs differ."""
    out = {}
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if is_dataclass(x) and is_dataclass(y):
            out.update(config_diff(x, y, f"{prefix}{f.name}."))
        elif x != y:
            out[prefix + f.name] = (x, y)
    return out


def apply_changes(cfg: Any, changes: Iterable[tuple[str, Any]] | Mapping[str, Any]) -> Any:
    """``cfg`` with every ``(path, value)`` change applied in order."""
    items = changes.items() if isinstance(changes, Mapping) else changes
    for path, value in items:
        cfg = replace_at(cfg, path, value)
    return cfg


def parse_overrides(cfg: Any, items: Sequence[str]) -> Changes:
    """Parse ``--set path=value`` strings against ``cfg`` into typed changes.

    The path's first part must be a config section of ``cfg`` (``model``, ``train``), and every
    part a field; values parse by the current value's type. Each change is applied once here,
    so an invalid value fails now, with the offending item in the message.
    """
    sections = [f.name for f in fields(cfg) if is_dataclass(getattr(cfg, f.name))]
    out = []
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        section, dot, _ = key.partition(".")
        check(bool(sep and dot), f"--set expects section.key=value, got {item!r}")
        check(section in sections, f"--set section must be one of {sections}: {item!r}")
        current = _field_value(cfg, key, item)
        try:
            value = _parse_value(raw.strip(), current)
        except ValueError as exc:
            raise ConfigError(f"--set {key}: {exc}") from exc
        cfg = replace_at(cfg, key, value)  # an invalid value fails here, naming its field
        out.append((key, value))
    return tuple(out)


def apply_overrides(cfg: Any, items: Sequence[str]) -> Any:
    """``cfg`` with ``--set`` strings applied (parsed by :func:`parse_overrides`)."""
    return apply_changes(cfg, parse_overrides(cfg, items))


def _field_value(cfg: Any, key: str, item: str) -> Any:
    node = cfg
    parts = key.split(".")
    for i, name in enumerate(parts):
        known = [f.name for f in fields(node)] if is_dataclass(node) else []
        check(
            name in known,
            f"--set {item!r}: unknown key {key!r}; known: {known}",
        )
        node = getattr(node, name)
        if is_dataclass(node) and i == len(parts) - 1:
            sub = [f.name for f in fields(node)]
            raise ConfigError(f"--set {item!r}: {key!r} is a group; set one of {sub}")
    return node


def _parse_value(raw: str, current: Any) -> Any:
    if isinstance(current, bool):
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"expected a boolean, got {raw!r}")
    if isinstance(current, int):
        try:
            return int(raw)
        except ValueError:
            raise ConfigError(f"expected a whole number, got {raw!r}") from None
    if isinstance(current, float):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(f"expected a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ConfigError(f"expected a finite number, got {raw!r}")
        return value
    return raw
