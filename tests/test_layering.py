"""Import direction (STYLE.md): geolip and atlas at the bottom, then pipelines, then tune, then the
demo; cluster on top (it only submits). Checked statically with ``ast`` over every file, and at
run time in a fresh interpreter. Shared machinery is public: no module imports another module's
underscore name."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("geolip", "atlas", "pipelines", "tune", "demo", "cluster")
FORBIDDEN = {
    "geolip": {"ray", "mlflow", "duckdb", "pipelines", "tune", "demo", "atlas", "cluster"},
    "atlas": {"torch", "geolip", "pipelines", "tune", "demo", "cluster"},
    "pipelines": {"tune", "demo", "cluster"},
    "tune": {"demo", "cluster"},
    "demo": {"cluster"},
    "cluster": set(),
}


def imported_roots(tree: ast.AST) -> set[str]:
    """Top-level names of every absolute import anywhere in the module (lazy imports included)."""
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif (  # importlib.import_module("x.y") / __import__("x") with a literal name
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", None))
            in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            roots.add(node.args[0].value.split(".")[0])
    return roots


def test_imported_roots_sees_lazy_and_dynamic_imports():
    src = "def f():\n    import ray.data\n    from mlflow import log\n    importlib.import_module('duckdb')\n"
    assert imported_roots(ast.parse(src)) == {"ray", "mlflow", "duckdb"}


@pytest.mark.parametrize("package", PACKAGES)
def test_static_import_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    if package in ("geolip", "atlas"):
        assert files, f"no python files found under {package}/"
    bad = []
    for file in files:
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        for root in sorted(imported_roots(tree) & FORBIDDEN[package]):
            bad.append(f"{file.relative_to(ROOT)} imports {root}")
    assert not bad, f"{package} must not import {sorted(FORBIDDEN[package])}:\n" + "\n".join(bad)


def private_imports(tree: ast.AST, module: str) -> list[str]:
    """``from X import _name`` where X is another module of the project (dunders allowed)."""
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.ImportFrom) and node.level == 0 and node.module):
            continue
        if node.module.split(".")[0] not in PACKAGES or node.module == module:
            continue
        for alias in node.names:
            if alias.name.startswith("_") and not alias.name.startswith("__"):
                out.append(f"{node.module}.{alias.name}")
    return out


def test_private_imports_sees_lazy_imports_of_other_modules():
    src = "from pipelines.x import _a, b\ndef f():\n    from tune.y import _c\n    from os import _e\n"
    assert private_imports(ast.parse(src), "pipelines.z") == ["pipelines.x._a", "tune.y._c"]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_imports_another_modules_private_names(package):
    bad = []
    for file in sorted((ROOT / package).rglob("*.py")):
        module = ".".join(file.relative_to(ROOT).with_suffix("").parts)
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        bad += [
            f"{file.relative_to(ROOT)} imports {name}" for name in private_imports(tree, module)
        ]
    assert not bad, "make the name public where it is owned:\n" + "\n".join(bad)


def test_ray_is_started_in_one_place():
    """``pipelines.runtime.init_ray`` is the one Ray start policy of every job."""
    calls = []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                func = getattr(node, "func", None)
                is_attr = isinstance(node, ast.Call) and isinstance(func, ast.Attribute)
                if is_attr and func.attr == "init" and getattr(func.value, "id", None) == "ray":
                    calls.append(str(file.relative_to(ROOT)))
    assert calls == ["pipelines/runtime.py"]


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


_IMPORT_ALL = """
import importlib, pkgutil, sys
pkg = importlib.import_module({pkg!r})
for mod in pkgutil.walk_packages(pkg.__path__, {pkg!r} + "."):
    importlib.import_module(mod.name)
for name in {extra!r}:
    importlib.import_module(name)
bad = sorted({{m.split(".")[0] for m in sys.modules}} & {forbidden!r})
assert not bad, f"importing {pkg} pulled in {{bad}}"
"""


def test_runtime_geolip_pulls_in_no_cluster_stack():
    extra = [
        "geolip.aleph.model",
        "geolip.aleph.train",
        "geolip.aleph.bpb",
        "geolip.aleph.checkpoint",
    ]
    extra.append("geolip.aleph.generate")
    code = _IMPORT_ALL.format(pkg="geolip", extra=extra, forbidden={"ray", "mlflow", "duckdb"})
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_runtime_atlas_pulls_in_no_torch():
    code = _IMPORT_ALL.format(pkg="atlas", extra=[], forbidden={"torch", "geolip"})
    proc = _run(code)
    assert proc.returncode == 0, proc.stderr[-2000:]
