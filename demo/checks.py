"""What ``geolip demo`` checks before it writes anything or starts Ray: the options, the corpus,
a tracking server, the data directory's demo path, another demo holding it, and the saved state
of an earlier demo there.

Light on purpose (no Ray, torch or MLflow): ``demo.cli`` runs these checks before importing
``demo.run``, so bad input is refused in about a second.
"""

from __future__ import annotations

from demo.scales import DemoScale, demo_scale
from demo.state import DemoState, check_unlocked, read_state
from pipelines.paths import check_dir_path
from pipelines.runtime import RunContext
from pipelines.tracking import check_tracking, sqlite_path
from tune.sources import check_corpus

EXPERIMENT = "geolip-demo"


def demo_context(
    scale: str, data_dir: str | None, tracking_uri: str | None, workers: int = 2
) -> RunContext:
    """The context of every job of a demo: its experiment and tag, runs resumed when found."""
    return RunContext.create(
        EXPERIMENT,
        data_dir,
        tracking_uri,
        workers=workers,
        auto_resume=True,
        tags={"demo": scale},
    )


def demo_identity(scale: str, corpus: str, ctx: RunContext) -> dict:
    """What a demo's state must match for a re-run to continue it."""
    return {"scale": scale, "corpus": corpus, "workers": ctx.workers}


def preflight(scale: str, corpus: str, ctx: RunContext, fresh: bool = False) -> DemoScale:
    """Every check of a demo that needs neither Ray nor the MLflow store; reads, never writes.
    Returns the scale's budgets."""
    budgets = demo_scale(scale)
    ctx.check_workers()
    check_corpus(corpus)
    if sqlite_path(ctx.tracking_uri) is None:
        check_tracking(ctx.tracking_uri)  # a server is only asked; a SQLite store is made later
    home = check_dir_path(ctx.data_dir / "demo" / scale, "--data-dir: the demo's directory")
    check_unlocked(home.parent)
    if fresh:
        read_state(home / "state.json")  # --fresh must be able to tell what to delete
    else:
        DemoState(home, demo_identity(scale, corpus, ctx))  # a demo of other options is refused
    return budgets
