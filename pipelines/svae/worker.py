"""The training loop of ``geolip train svae``: one process per data-parallel rank of a Ray Train
worker group, or the fit's one worker in the process that started it (a sweep's Tune trial;
``pipelines.train_session``).

Same conventions as AlephLM training (``pipelines.aleph.worker``): batches drawn with a generator
seeded by ``(seed, step, rank)`` so a resumed run continues exactly; rank 0 evaluates, logs to the
driver's MLflow run and writes checkpoints (weights as safetensors, configs as JSON, optimizer
state with ``torch.save`` read back with ``weights_only=True``) that the session persists.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from geolip.svae.checkpoint import save_svae_checkpoint
from geolip.svae.model import SVAECompanion
from geolip.svae.train import build_optimizers, evaluate, svae_step
from pipelines.progress import duration, eta
from pipelines.run_storage import TRAIN_STATE
from pipelines.runtime import maybe_fail, quiet_ray_train_logs, seed_of, worker_threads
from pipelines.system_metrics import node_monitor
from pipelines.tracking import RunLogger
from pipelines.train_session import RayTrainSession


def svae_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config`` is the driver's ``_worker_config`` (run config object,
    data file, which tensors, MLflow run, system metrics)."""
    quiet_ray_train_logs()
    svae_in_session(config, RayTrainSession())


def svae_in_session(config: dict, session) -> None:
    """The loop of one rank in ``session`` (``pipelines.train_session``)."""
    with node_monitor(config, session):  # the node's CPU, memory and GPUs
        _fit(config, session)


def _fit(config: dict, session) -> None:
    rank, world = session.rank, session.world
    # The companion's small layers run fastest on one thread unless the job asks for more.
    torch.set_num_threads(worker_threads(config["threads"] or 1, session.local_world))
    cfg, tcfg = config["run"].model, config["run"].train
    data = load_file(config["data"])
    train_x, val_x = data[config["train_key"]], data[config["val_key"]]
    model = SVAECompanion(cfg)
    opts, scheds = build_optimizers(model, tcfg)
    start = _restore(model, opts, scheds, session.checkpoint())
    ddp = session.prepare_model(model)
    logger = RunLogger(config["tracking_uri"], config["run_id"]) if rank == 0 else None
    prefix, mean, per_rank = config["prefix"], train_x.mean(0), tcfg.batch_size // world
    t0 = time.perf_counter()  # the console's ETA: the pace of this (re)start's steps
    for step in range(start, tcfg.steps):
        gen = torch.Generator().manual_seed(seed_of(tcfg.seed, step, rank))
        idx = torch.randint(0, len(train_x), (per_rank,), generator=gen)
        metrics = svae_step(ddp, train_x[idx], opts, scheds, tcfg)
        done = step + 1
        if done % tcfg.eval_every == 0 or done == tcfg.steps:
            if rank == 0:
                metrics.update(evaluate(model, val_x, mean, text=config.get("text", False)))
                logger.log_metrics({prefix + k: v for k, v in metrics.items()}, done)
                logger.flush()
                elapsed = time.perf_counter() - t0
                print(
                    f"{prefix or 'main/'}step {done}/{tcfg.steps}  cos_ext "
                    f"{metrics['cos_ext']:.3f}  α {metrics['mean_alpha']:.4f}  "
                    f"elapsed {duration(elapsed)}  "
                    f"eta {eta(done - start, tcfg.steps - start, elapsed)}",
                    flush=True,
                )
            _report(model, opts, scheds, done, config, session)
        maybe_fail(config["fault"], done, rank, world)
    if start >= tcfg.steps:  # resumed a finished fit: hand its state back once more
        _report(model, opts, scheds, start, config, session)


def _restore(model, opts, scheds, ckpt) -> int:
    """The first step to run: 0, or the checkpoint's (``ckpt``: the session's, or None)."""
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        model.load_state_dict(load_file(str(Path(d) / "model.safetensors")))
        state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)
    for opt, s in zip(opts, state["optimizers"]):
        opt.load_state_dict(s)
    for sched, s in zip(scheds, state["schedulers"]):
        sched.load_state_dict(s)
    return int(state["step"])


def _report(model, opts, scheds, step: int, config: dict, session) -> None:
    """Report ``step`` to the session, with rank 0's checkpoint (the ranks hold equal weights)."""
    with tempfile.TemporaryDirectory() as tmp:
        rank0 = session.rank == 0
        checkpoint = _save(Path(tmp), model, opts, scheds, step, config) if rank0 else None
        session.report({"step": step}, checkpoint)


def _save(tmp: Path, model, opts, scheds, step: int, config: dict):
    # The layout of a final checkpoint (geolip.svae.checkpoint), plus the optimizer state.
    meta = {"step": step, "prefix": config["prefix"], "mlflow_run_id": config["run_id"]}
    path = save_svae_checkpoint(tmp / "checkpoint", model, config["run"].model, meta=meta)
    state = {
        "optimizers": [o.state_dict() for o in opts],
        "schedulers": [s.state_dict() for s in scheds],
        "step": step,
    }
    torch.save(state, path / TRAIN_STATE)
    return path
