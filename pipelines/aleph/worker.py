"""The training loop of ``geolip train aleph``: one process per data-parallel rank of a Ray Train
worker group, or the run's one worker in the process that started it (a sweep's Tune trial;
``pipelines.train_session`` says what each provides).

Every rank builds the model, restores the run's latest checkpoint if Ray Train hands one back
(resume, or a restart after a worker failure) or else the warm-start weights the driver prepared
(``init_dir``), wraps it in DDP (gloo on CPU, NCCL on GPU: Ray Train picks the backend), and
draws its share of each global batch from its own chunks of the train shards.

Step ``s`` draws its windows with a generator seeded by ``(seed, s, micro-batch, rank)``, so a
resumed run continues exactly where its checkpoint stopped: steps after the last checkpoint are
redone, none is skipped, and no sampler state needs saving. Rank 0 logs to the MLflow run the
driver created (batched), evaluates the fixed held-out windows, and writes checkpoints
(``geolip.aleph.checkpoint`` layout plus ``train_state.pt``: optimizer, scheduler, step).
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from geolip.aleph.bank import load_bank
from geolip.aleph.bpb import bpb_batches, bpb_streamed, target_nll_windowed, windowed_result
from geolip.aleph.checkpoint import load_checkpoint, save_checkpoint
from geolip.aleph.data import sample_chunk_windows
from geolip.aleph.experiments.employment import employment
from geolip.aleph.instruments import read_gauge
from geolip.aleph.model import AlephLM
from geolip.aleph.train.compiled import compile_for_training
from geolip.aleph.train.optim import build_optimizer, build_scheduler
from geolip.aleph.train.step import train_step
from pipelines.aleph.heldout import write_target_nll
from pipelines.progress import duration, eta
from pipelines.run_storage import TRAIN_STATE, fetch_inputs
from pipelines.runtime import maybe_fail, quiet_ray_train_logs, seed_of, worker_threads
from pipelines.system_metrics import node_monitor
from pipelines.tracking import RunLogger
from pipelines.train_session import RayTrainSession, checkpoint_at


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point; ``config`` is ``PreparedJob.worker_config`` (pipelines.aleph.job)."""
    quiet_ray_train_logs()
    train_in_session(config, RayTrainSession())


def train_in_session(config: dict, session) -> None:
    """The loop of one rank in ``session`` (``pipelines.train_session``: a Ray Train worker, or
    the run's one worker in the calling process)."""
    with node_monitor(config, session):  # the node's CPU, memory and GPUs
        _train(config, session)


def _train(config: dict, session) -> None:
    config = fetch_inputs(config)  # from the store where the data directory is there
    rank = session.rank
    torch.set_num_threads(worker_threads(config["threads"], session.local_world))
    device = session.device
    model, run_cfg, opt, sched, start = _restore(config, device, session.checkpoint())
    if rank == 0:  # where each (re)start of the worker group begins: the job log's record
        restored = " (restored from its checkpoint)" if start else ""
        print(f"run {config['name']}: training from step {start}{restored}", flush=True)
    ddp = session.prepare_model(model)
    buf, bounds = _collect_chunks(session.batches("train"))
    loop = _Loop(config, run_cfg, model, ddp, opt, sched, session, device)
    if run_cfg.train.compile and start < run_cfg.train.steps:
        loop.ddp = _compiled(loop, buf, bounds, start)
    loop.run(start, buf, bounds)


class _Loop:
    """The step loop with its logging, evaluation and checkpoint schedule."""

    def __init__(self, config, run_cfg, model, ddp, opt, sched, session, device):
        self.config, self.run_cfg, self.model, self.ddp = config, run_cfg, model, ddp
        self.opt, self.sched, self.session, self.device = opt, sched, session, device
        self.rank, self.world = session.rank, session.world
        self.tcfg = run_cfg.train
        self.logger = _logger(config) if self.rank == 0 else None
        self.eval_windows = _load_eval_windows(config["eval_windows"]) if self.rank == 0 else None

    def run(self, start: int, buf: np.ndarray, bounds: np.ndarray) -> None:
        tcfg, cfg = self.tcfg, self.run_cfg.model
        n_tri = cfg.seq_trigrams * cfg.n_segments
        per_rank = tcfg.batch_size // self.world
        tokens, t_log = 0, time.perf_counter()
        self.since = (start, t_log)  # the console's ETA: the pace of this (re)start's steps
        if self.logger is not None:  # a restart redoes steps the run may have logged
            self.logger.skip_logged_steps()
        try:
            for step in range(start, tcfg.steps):
                micro = [
                    self._windows(buf, bounds, step, a, n_tri, per_rank) for a in range(tcfg.accum)
                ]
                metrics = train_step(
                    self.ddp, self.opt, self.sched, micro, tcfg, step, mean=self._mean
                )
                tokens += per_rank * tcfg.accum * n_tri
                done = step + 1
                if done % tcfg.log_every == 0 or done == tcfg.steps:
                    metrics["tokens_per_s"] = tokens / max(time.perf_counter() - t_log, 1e-9)
                    self._log(metrics, done)
                    # Training throughput: the gauge and the MLflow write are not steps.
                    tokens, t_log = 0, time.perf_counter()
                if done % self.config["checkpoint_every"] == 0 or done == tcfg.steps:
                    self._report(done, final=done == tcfg.steps)
                    t_log = time.perf_counter()  # evaluation time is not training throughput
                maybe_fail(self.config["fault"], done, self.rank, self.world)
            if start >= tcfg.steps:  # resumed a finished run: report its state once more
                self._report(tcfg.steps, final=True)
        finally:
            if self.logger is not None:
                self.logger.flush()

    def _windows(self, buf, bounds, step: int, micro: int, n_tri: int, per_rank: int):
        replicate = self.config["data_mode"] == "replicate"
        rank = 0 if replicate else self.rank
        gen = torch.Generator().manual_seed(seed_of(self.tcfg.seed, step, micro, rank))
        if replicate:  # every rank draws the global batch and keeps its own rows
            w = sample_chunk_windows(buf, bounds, self.tcfg.batch_size, n_tri, gen)
            return w[self.rank * per_rank : (self.rank + 1) * per_rank]
        return sample_chunk_windows(buf, bounds, per_rank, n_tri, gen)

    def _mean(self, value: float) -> float:
        return float(self._reduce(np.array([value]))[0]) / self.world

    def _reduce(self, values: np.ndarray) -> np.ndarray:
        """Sum over ranks (identity with one worker)."""
        if self.world == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.cpu().numpy()

    def _log(self, metrics: dict, step: int) -> None:
        keys = sorted(k for k in metrics if k != "tokens_per_s")
        summed = self._reduce(np.array([metrics[k] for k in keys] + [metrics["tokens_per_s"]]))
        out = {k: float(v) / self.world for k, v in zip(keys, summed[:-1])}
        out["tokens_per_s"] = float(summed[-1])  # throughput adds up over ranks
        if self.rank == 0:
            out.update(read_gauge(self.model, self.eval_windows[0][:4]).as_metrics())
            self.logger.log_metrics(out, step)
            # Progress on the console too (Ray forwards worker output to the driver).
            first, elapsed = self.since[0], time.perf_counter() - self.since[1]
            left = eta(step - first, self.tcfg.steps - first, elapsed)
            print(
                f"step {step}/{self.tcfg.steps}  bpb {out['bpb']:.3f}  "
                f"lr {out['lr']:.2e}  {out['tokens_per_s']:,.0f} tok/s  "
                f"elapsed {duration(elapsed)}  eta {left}",
                flush=True,
            )

    def _report(self, step: int, final: bool) -> None:
        """Held-out evaluation, checkpoint (rank 0) and the session's report (every rank)."""
        metrics: dict = {"step": step}
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if self.rank == 0:
                metrics.update(self._evaluate(step, final))
                checkpoint = _save(Path(tmp) / "checkpoint", self, step)
            # On Ray Train a barrier: every rank reports the same number of times.
            self.session.report(metrics, checkpoint)

    def _evaluate(self, step: int, final: bool) -> dict:
        result = bpb_batches(self.model, self.eval_windows)
        out = {"val_bpb": result.bpb}
        if final:
            out.update(_final_eval(self.model, self.config, self.logger))
            # Is the aleph employed? Permute and randomize on the same fixed windows (~1 s).
            used = employment(self.model, self.eval_windows)
            out.update(used.as_metrics())
            self.logger.set_tags({"aleph_employment": used.verdict})
            print(f"run {self.config['name']}: aleph {used.summary()}", flush=True)
        self.logger.log_metrics(out, step)
        self.logger.flush()
        return out


def _final_eval(model, config: dict, logger: RunLogger) -> dict:
    """Windowed and streamed held-out bits/byte on the first ``eval_bytes`` of validation; the
    windowed regime's per-target NLL goes to the run as ``heldout/target_nll.safetensors``
    (what a sweep's paired Δ ± SE between arms is computed from, ``geolip.paired``)."""
    held = np.load(config["heldout"], allow_pickle=False)
    nll, dropped = target_nll_windowed(model, held)
    write_target_nll(logger, nll, len(held))
    out = {"heldout_targets": float(len(nll))}
    for result in (windowed_result(nll, dropped), bpb_streamed(model, held, n_streams=8)):
        out[f"heldout_bpb_{result.regime}"] = result.bpb
        out[f"heldout_bytes_scored_{result.regime}"] = float(result.bytes_scored)
        out[f"heldout_bytes_dropped_{result.regime}"] = float(result.bytes_dropped)
    return out


def _compiled(loop: _Loop, buf: np.ndarray, bounds: np.ndarray, start: int):
    """The module to train with under ``train.compile``: compiled once it has reproduced eager
    mode on the first step's own windows (every rank checks: DDP's reductions stay in step)."""
    cfg = loop.run_cfg.model
    per_rank = loop.tcfg.batch_size // loop.world
    window = loop._windows(buf, bounds, start, 0, cfg.seq_trigrams * cfg.n_segments, per_rank)
    module, report = compile_for_training(loop.ddp, window, loop.tcfg)
    if loop.rank == 0:
        print(f"run {loop.config['name']}: {report.line()}", flush=True)
        if loop.logger is not None:
            loop.logger.set_tags({"compile": "on" if report.used else "eager"})
    return module


def _restore(config: dict, device, ckpt):
    """(model on device, run config, optimizer, scheduler, first step to run); ``ckpt``: the
    session's checkpoint to restart from (None: ``config["resume_dir"]``, else a fresh start)."""
    run_cfg = config["run"]
    if ckpt is None and config.get("resume_dir"):  # one Ray Train never recorded (the driver's)
        ckpt = checkpoint_at(config["resume_dir"])
    state = None
    if ckpt is not None:  # resume (or restart after a failure) beats any warm start
        with ckpt.as_directory() as d:
            model, _, _ = load_checkpoint(d)
            state = torch.load(Path(d) / TRAIN_STATE, map_location="cpu", weights_only=True)
    elif config.get("init_dir"):
        model, _, _ = load_checkpoint(config["init_dir"])
        if config.get("continue_state"):  # --graft continue: the donor's Adam state and step
            state = torch.load(config["continue_state"], map_location="cpu", weights_only=True)
    else:
        torch.manual_seed(run_cfg.train.seed)
        bank = load_bank(config["bank"]) if config.get("bank") else None
        model = AlephLM(run_cfg.model, bank)
    model.to(device).train()
    opt = build_optimizer(model, run_cfg.train)
    # A continuation keeps the donor's schedule (horizon: the donor's steps), not its own.
    horizon = config.get("schedule_steps") or run_cfg.train.steps
    sched = build_scheduler(opt, dataclasses.replace(run_cfg.train, steps=horizon))
    start = 0
    if state is not None:
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start = int(state["step"])
    return model, run_cfg, opt, sched, start


def _save(path: Path, loop: _Loop, step: int) -> Path:
    meta = {"step": step, "mlflow_run_id": loop.config["run_id"], "run_name": loop.config["name"]}
    meta["tracking_uri"] = loop.config["tracking_uri"]
    save_checkpoint(path, loop.model, loop.run_cfg, meta=meta)
    state = {"optimizer": loop.opt.state_dict(), "scheduler": loop.sched.state_dict(), "step": step}
    torch.save(state, path / TRAIN_STATE)
    return path


def _collect_chunks(batches) -> tuple[np.ndarray, np.ndarray]:
    """This rank's chunks (``batches``: pyarrow batches of ``offset``, ``chunk``), ordered by
    stream offset, as ``(buf: uint8[L], bounds: int64[C+1])``."""
    chunks: list[tuple[int, bytes]] = []
    for batch in batches:
        chunks += zip(batch.column("offset").to_pylist(), batch.column("chunk").to_pylist())
    if not chunks:
        raise RuntimeError("this worker received no training chunks; use fewer --workers")
    chunks.sort()  # the order Ray Data delivers blocks in is not fixed
    lengths = [len(c) for _, c in chunks]
    bounds = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(lengths, out=bounds[1:])
    return np.frombuffer(b"".join(c for _, c in chunks), dtype=np.uint8), bounds


def _load_eval_windows(path: str):
    windows = load_file(path)["windows"]
    return list(windows.split(8))


def _logger(config: dict) -> RunLogger:
    return RunLogger(config["tracking_uri"], config["run_id"])
