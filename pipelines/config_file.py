"""``--config FILE``: a YAML or JSON file of the keys ``--set`` takes, with typed values.

A config file holds the same dotted keys as ``--set SECTION.KEY=VALUE``, nested
(``train: {steps: 500}``) or dotted (``train.steps: 500``), or both. Unlike ``--set`` strings the
values keep the file's types: ``train.steps: "500"`` (a string) or ``1.5`` is refused for a whole
number, ``true`` for a number; a whole number is taken for a float (``lr: 1`` is ``1.0``, as
``--set train.lr=1`` gives). The file's changes are applied first, all at once (so a pair such as
``model.d_model`` and ``model.n_heads`` is validated together), then ``--set``'s, which win. The
same keys give the same config, and so the same config hash and run name, from either route.

Every mistake is one ``ConfigError`` line that names ``--config FILE``, the key, what was expected
and what the file holds. ``geolip config show --format yaml`` writes a valid file.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from geolip.config import Changes, ConfigError, apply_changes, parse_overrides

SUFFIXES = (".yaml", ".yml", ".json")


class _Loader(yaml.SafeLoader):
    """``yaml.safe_load``'s loader with YAML 1.2's scalars, as JSON has them: only true/false
    are booleans (YAML 1.1 also reads yes/no/on/off, so ``train.amp: off`` would be False) and
    ``1e-3`` is a number (YAML 1.1 wants a dot, else it is a string a float field refuses); and
    a key given twice is refused (safe_load silently keeps the last one)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, Hashable):
                continue  # the base class refuses an unhashable key with its own message
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


_BOOL, _FLOAT = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    _FLOAT, re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789")
)


def read_config_file(path: str) -> dict[str, Any]:
    """The top-level mapping of the YAML or JSON file ``path`` (an empty YAML file: ``{}``)."""
    where = f"--config {path}"
    suffix = Path(path).suffix.lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{where}: expected a .yaml, .yml or .json file, got {suffix or 'no extension'}"
        )
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"{where}: a directory; expected a YAML or JSON file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text; expected a YAML or JSON file") from None
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it ({exc.strerror or exc})") from None
    data = _parse_json(text, where) if suffix == ".json" else _parse_yaml(text, where)
    if data is None and suffix != ".json":
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: the top level is {describe(data)}; expected a mapping of config keys "
            "(train.steps: 500, or train: {steps: 500})"
        )
    return data


def _parse_yaml(text: str, where: str) -> Any:
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML ({at}{' '.join(problem.split())})") from None


def _parse_json(text: str, where: str) -> Any:
    def unique(pairs: list[tuple[str, Any]]) -> dict:
        keys = [k for k, _ in pairs]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            raise ConfigError(f"{where}: key {twice[0]!r} is given twice")
        return dict(pairs)

    try:
        return json.loads(text, object_pairs_hook=unique)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{where}: not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
        ) from None


def describe(value: Any) -> str:
    """``value`` as a config file holds it, for an error: ``'abc' (a string)``, ``a list``."""
    if value is None:
        return "null (nothing)"
    if isinstance(value, Mapping):
        return f"a mapping {_short(value)}"
    if isinstance(value, list | tuple):
        return f"a list {_short(value)}"
    kind = {bool: "a boolean", int: "a whole number", float: "a number", str: "a string"}
    return f"{_short(value)} ({kind.get(type(value), type(value).__name__)})"


def _short(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


@cache
def field_types(cls: type) -> dict[str, Any]:
    """``{field name: its resolved annotation}`` of a config dataclass (read once per class)."""
    return typing.get_type_hints(cls)


def sections(cfg: Any) -> list[str]:
    """The top-level groups of a run config (``model``, ``train``): where every key starts."""
    return [f.name for f in fields(cfg) if is_dataclass(getattr(cfg, f.name))]


def file_changes(cfg: Any, path: str) -> Changes:
    """The typed changes of the config file ``path`` against the run config ``cfg``, in file
    order, each checked against its field's type and all validated together."""
    return _load(cfg, path)[0]


def _load(cfg: Any, path: str) -> tuple[Changes, Any]:
    where = f"--config {path}"
    changes = tuple(_walk(cfg, read_config_file(path), "", where))
    keys = [k for k, _ in changes]
    twice = sorted({k for k in keys if keys.count(k) > 1})
    if twice:
        raise ConfigError(f"{where}: {twice[0]} is given twice (nested and dotted)")
    try:
        return changes, _apply_all(cfg, changes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _walk(node: Any, data: Mapping, prefix: str, where: str):
    """Yield ``(dotted path, typed value)`` for every leaf of ``data`` under the config ``node``
    (``prefix``: the path of ``node``; ``""`` at the top, where only sections are keys)."""
    known = [f.name for f in fields(node)] if prefix else sections(node)
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{where}: key {key!r} under {prefix or 'the top'} is not a string")
        head, dot, rest = key.partition(".")
        path = prefix + head
        if head not in known:
            what = "known" if prefix else "known sections"
            raise ConfigError(f"{where}: unknown key {prefix + key!r}; {what}: {known}")
        child = getattr(node, head)
        if dot:
            if not is_dataclass(child):
                raise ConfigError(f"{where}: unknown key {prefix + key!r}: {path} has no keys")
            value = {rest: value}
        if not is_dataclass(child):
            yield path, typed_value(value, field_types(type(node))[head], f"{where}: {path}")
        elif isinstance(value, Mapping):
            yield from _walk(child, value, path + ".", where)
        else:
            sub = [f.name for f in fields(child)]
            raise ConfigError(
                f"{where}: {path} is a group; expected a mapping of its keys {sub}, "
                f"got {describe(value)}"
            )


def typed_value(value: Any, hint: Any, where: str) -> Any:
    """``value`` checked against the annotation ``hint`` (``int``, ``float``, ``bool``, ``str``,
    ``X | None``); a whole number for a float becomes that float. ``where`` starts the error."""
    args = typing.get_args(hint)
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        if value is None:
            return None
        others = [a for a in args if a is not type(None)]
        hint = others[0] if len(others) == 1 else hint
    tail = " or null" if optional else ""
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false{tail}, got {describe(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected a whole number{tail}, got {describe(value)}")
    if hint is float:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and math.isfinite(value):
            return float(value)
        raise ConfigError(f"{where}: expected a finite number{tail}, got {describe(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        quote = f'; quote it: "{value}"' if isinstance(value, int | float) else ""
        raise ConfigError(f"{where}: expected a string{tail}, got {describe(value)}{quote}")
    raise ConfigError(f"{where}: a {hint} field cannot be set from a config file")


def _apply_all(cfg: Any, changes: Changes) -> Any:
    """``cfg`` with every change applied at once: each dataclass is replaced once, so its
    ``__post_init__`` sees all of the file's values together."""
    tree: dict[str, Any] = {}
    for path, value in changes:
        *groups, leaf = path.split(".")
        node = tree
        for name in groups:
            node = node.setdefault(name, {})
        node[leaf] = value
    return _replace(cfg, tree)


def _replace(cfg: Any, tree: dict[str, Any]) -> Any:
    # Leaves are typed scalars, never dicts: a dict here is always a group of changes.
    kwargs = {
        name: _replace(getattr(cfg, name), value) if isinstance(value, dict) else value
        for name, value in tree.items()
    }
    return dataclasses.replace(cfg, **kwargs)


def apply_config(cfg: Any, path: str | None, sets: Sequence[str] = ()) -> Any:
    """``cfg`` with the config file ``path``'s changes (if any), then the ``--set`` strings."""
    if path is not None:
        cfg = _load(cfg, path)[1]
    return apply_changes(cfg, parse_overrides(cfg, list(sets)))


def config_changes(cfg: Any, path: str | None, sets: Sequence[str] = ()) -> Changes:
    """The typed changes of the config file ``path`` (if any) and then of ``--set``, against
    ``cfg``: what a sweep applies to every trial's config."""
    if path is None:
        return parse_overrides(cfg, list(sets))
    changes, cfg = _load(cfg, path)
    return changes + parse_overrides(cfg, list(sets))
