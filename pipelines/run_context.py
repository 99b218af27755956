"""What every MLflow run records about where it came from: MLflow's standard context tags
(source, user, git commit) plus the versions, device and config hash that reproduce it.

Runs are created with ``MlflowClient.create_run`` (``pipelines.tracking``), which, unlike the
fluent ``mlflow.start_run``, adds no context tags: they are made here. A Ray worker's ``argv[0]``
is Ray's ``default_worker.py``, so the source is the geolip command the CLI recorded in
``GEOLIP_SOURCE`` (inherited by local Ray workers), and the git commit is that of the checkout
the geolip package was imported from, not of the worker's cwd.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

SOURCE_ENV = "GEOLIP_SOURCE"
PACKAGES = ("geolip", "torch", "ray", "mlflow")
CONFIG_HASH_TAG = "geolip.config_hash"
CONFIG_ARTIFACT = "config.json"


def record_source(words: list[str]) -> None:
    """Remember the command being run (``geolip train aleph``) as the runs' source name.

    Only the subcommand words are kept, never the flags: a flag may hold a tracking URI with
    a password or a token.
    """
    os.environ[SOURCE_ENV] = " ".join(["geolip", *words])


def context_tags(device: str | None = None) -> dict[str, str]:
    """``mlflow.source.*``, ``mlflow.user`` and ``geolip.version.*`` tags for a new run.

    ``device``: where the run computes (``cuda:NVIDIA H100``, ``cpu``); default: this
    process's device as torch sees it, when torch is already imported, else ``cpu``.
    """
    tags = {
        "mlflow.source.name": os.environ.get(SOURCE_ENV) or Path(sys.argv[0]).name or "python",
        "mlflow.source.type": "JOB" if os.environ.get("RAY_JOB_ID") else "LOCAL",
        "mlflow.user": _user(),
        "geolip.device": device or local_device(),
        "geolip.host": platform.node(),
        "geolip.python": platform.python_version(),
    }
    tags.update({f"geolip.version.{k}": v for k, v in versions().items()})
    if commit := git_commit():
        tags["mlflow.source.git.commit"] = commit
    return tags


@lru_cache(maxsize=1)
def versions() -> dict[str, str]:
    """Installed versions of geolip, torch, ray and mlflow, and torch's CUDA (``none`` on CPU
    builds); read from package metadata, so nothing heavy is imported."""
    out = {name: versions_of(name) or "not installed" for name in PACKAGES}
    out["cuda"] = _cuda_version()
    return out


def _cuda_version() -> str:
    torch = sys.modules.get("torch")
    if torch is not None:
        return str(torch.version.cuda or "none")
    # Not imported (a process that never computes): the wheel's local version says it, if any.
    version = versions_of("torch")
    if "+cu" in version:
        return version.split("+cu", 1)[1]
    return "none" if "+cpu" in version else "unknown"


def versions_of(name: str) -> str:
    """The installed version of package ``name``, or an empty string."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return ""


def local_device() -> str:
    """``cuda:<name>`` when this process's torch sees a GPU, else ``cpu``."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # a container user without a passwd entry
        return "unknown"


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The commit of the git checkout geolip runs from (an editable install), else None."""
    repo = Path(__file__).resolve().parent.parent
    if not (repo / ".git").exists():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = done.stdout.strip()
    return commit if done.returncode == 0 and len(commit) == 40 else None
