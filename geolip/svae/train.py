"""Training and evaluating the SVAE companion (spec §10, §13, §14, §16).

Samples are images ``[S, C, H, W]`` or feature patchworks ``[S, N, P]``; both reconstruct their
own input. Two optimizers with the separation of §10.2: the internal reconstruction trains the
battery, the external one the shell (the stem is detached, so the graphs are disjoint).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from geolip.svae.config import SVAETrainConfig
from geolip.svae.frames import dev_critical, deviation, omega_cv
from geolip.svae.mechanism import classify_mechanism, relative_modulation
from geolip.svae.metrics import mean_predictor_cosine

ALPHA0 = 0.2 / (1 + math.exp(2.0))  # α(0) = 0.2·σ(−2)


def build_optimizers(model, tcfg: SVAETrainConfig) -> tuple[list, list]:
    """Two Adams (never AdamW: weight decay fights the geometry) and their schedulers."""
    opts = [
        torch.optim.Adam(model.battery_parameters(), lr=tcfg.lr, weight_decay=0.0),
        torch.optim.Adam(model.shell_parameters(), lr=tcfg.lr, weight_decay=0.0),
    ]
    scheds = []
    for opt in opts:
        if tcfg.schedule == "onecycle":
            scheds.append(torch.optim.lr_scheduler.OneCycleLR(opt, tcfg.lr, total_steps=tcfg.steps))
        elif tcfg.schedule == "cosine":
            scheds.append(torch.optim.lr_scheduler.CosineAnnealingLR(opt, tcfg.steps))
        else:
            scheds.append(torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0))
    return opts, scheds


def svae_step(model, x: torch.Tensor, opts: list, scheds: list, tcfg: SVAETrainConfig) -> dict:
    """One §10.2 step on a batch ``x`` (its own target; images or a patchwork). ``model`` may be
    DDP-wrapped: only its forward and ``train`` are used. Returns float losses."""
    model.train()
    out = model(x)
    for opt in opts:
        opt.zero_grad(set_to_none=True)
    l_int = F.mse_loss(out["internal_recon"], x)
    l_ext = F.mse_loss(out["external_recon"], x)
    # One backward of the sum is the two backwards of §10.2: the stem is detached, so L_int
    # reaches only the battery and L_ext only the shell. One pass also suits DDP, whose reducer
    # expects a single backward per forward.
    (l_int + l_ext).backward()
    for opt, sched in zip(opts, scheds):
        # Each optimizer holds one group (battery, shell): clip them separately (§10.2).
        group = [p for g in opt.param_groups for p in g["params"]]
        torch.nn.utils.clip_grad_norm_(group, tcfg.grad_clip)
        opt.step()
        sched.step()
    return {
        "loss_int": float(l_int.detach()),
        "loss_ext": float(l_ext.detach()),
        "mean_alpha": float(out["mean_alpha"]),
    }


@torch.no_grad()
def evaluate(
    model, x: torch.Tensor, train_mean: torch.Tensor, batch: int = 256, text: bool = False
) -> dict:
    """Held-out figures of §13/§14 on ``x``: recon cosine (int/ext) with the mean-predictor
    baseline, MSE, frame deviation and envelope, α, s_delta, modulation and the ablation gain;
    with ``text`` (byte-trigram images) also the exact byte recovery of both recons (§2.2)."""
    from geolip.svae.adapters import byte_recovery

    was = model.training
    model.eval()
    parts: dict[str, list] = {}
    for i in range(0, len(x), batch):
        xb = x[i : i + batch]
        out = model(xb)
        off = model(xb, use_spectral=False)
        dev = deviation(out["M_stem"], model.cfg.D_base)
        rows = {
            "cos_int": _cos(out["internal_recon"], xb),
            "cos_ext": _cos(out["external_recon"], xb),
            "cos_off": _cos(off["external_recon"], xb),
            "mse_int": _mse(out["internal_recon"], xb),
            "mse_ext": _mse(out["external_recon"], xb),
            "mse_off": _mse(off["external_recon"], xb),
            "dev": dev.reshape(-1),
            "s_delta": (out["S_att"] - out["omega"]).abs().mean(dim=(1, 2)),
            "modulation": torch.full((len(xb),), relative_modulation(out["S_att"], out["omega"])),
            "omega": out["omega"],
        }
        if text:
            for name in ("internal", "external"):
                value = byte_recovery(out[f"{name}_recon"], xb)
                rows[f"byte_recovery_{name[:3]}"] = torch.full((len(xb),), value)
        for k, v in rows.items():
            parts.setdefault(k, []).append(v)
    model.train(was)
    cat = {k: torch.cat(v) for k, v in parts.items()}
    crit = dev_critical(model.cfg.D_base)
    alphas = [float(a.mean()) for a in model.alpha_values()]
    result = {
        k: float(cat[k].mean())
        for k in (
            "cos_int",
            "cos_ext",
            "cos_off",
            "mse_int",
            "mse_ext",
            "mse_off",
            "s_delta",
            "modulation",
        )
    }
    for key in ("byte_recovery_int", "byte_recovery_ext"):
        if key in cat:
            result[key] = float(cat[key].mean())
    result.update(
        baseline_cos=mean_predictor_cosine(train_mean, x),
        frame_deviation=float(cat["dev"].mean()),
        frame_abs_dev_mean=float(cat["dev"].abs().mean()),
        frac_in_envelope=float((cat["dev"].abs() < crit).float().mean()),
        dev_critical=crit,
        omega_cv=omega_cv(cat["omega"]),
        mean_alpha=sum(alphas) / len(alphas) if alphas else 0.0,
        ablation_gain=result["mse_off"] - result["mse_ext"],
    )
    for i, a in enumerate(alphas):
        result[f"alpha_layer{i}"] = a
    return result


def _cos(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(recon.flatten(1), target.flatten(1), dim=1)


def _mse(recon: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((recon - target) ** 2).flatten(1).mean(1)


def verdict(model, final: dict, control: dict | None = None, steps: int = 0) -> dict:
    """The §16 verdict from final held-out figures (and the shuffled control's, when run)."""
    delta = final["mean_alpha"] - ALPHA0
    out = {
        "recon_cos_external": final["cos_ext"],
        "recon_cos_internal": final["cos_int"],
        "baseline_cos": final["baseline_cos"],
        "mse_external": final["mse_ext"],
        "mse_internal": final["mse_int"],
        "frame_deviation": final["frame_deviation"],
        "frame_abs_dev_mean": final["frame_abs_dev_mean"],
        "dev_critical": final["dev_critical"],
        "frac_in_envelope": final["frac_in_envelope"],
        "in_envelope": final["frame_abs_dev_mean"] < final["dev_critical"],
        "lens_isometry_err": float(model.lens.isometry_error()),
        "alpha_init": ALPHA0,
        "alpha_final": final["mean_alpha"],
        "alpha_delta": delta,
        "alpha_layers": [final[k] for k in sorted(final) if k.startswith("alpha_layer")],
        "s_delta": final["s_delta"],
        "ablation_gain": final["ablation_gain"],
        "mechanism": classify_mechanism(
            delta, final["ablation_gain"], mse_trained=final["mse_ext"]
        ),
        "omega_cv": final["omega_cv"],
        "steps": steps,
        "seed": model.cfg.seed,
    }
    if control is not None:
        c_delta = control["mean_alpha"] - ALPHA0
        out["control"] = {
            "alpha_final": control["mean_alpha"],
            "alpha_delta": c_delta,
            "ablation_gain": control["ablation_gain"],
            "recon_cos_external": control["cos_ext"],
            "mse_external": control["mse_ext"],
            "mechanism": classify_mechanism(
                c_delta, control["ablation_gain"], mse_trained=control["mse_ext"]
            ),
        }
    return out


def train_svae(model, train_x, val_x, tcfg: SVAETrainConfig, on_eval=None) -> dict:
    """Single-process training (the library loop; Ray Train runs the same step per worker).
    Returns ``{"history": [...], "final": evaluate(...)}``."""
    gen = torch.Generator().manual_seed(tcfg.seed)
    opts, scheds = build_optimizers(model, tcfg)
    mean = train_x.mean(0)
    history = []
    for step in range(tcfg.steps):
        idx = torch.randint(0, len(train_x), (tcfg.batch_size,), generator=gen)
        metrics = svae_step(model, train_x[idx], opts, scheds, tcfg)
        if (step + 1) % tcfg.eval_every == 0 or step + 1 == tcfg.steps:
            metrics.update(evaluate(model, val_x, mean), step=step + 1)
            history.append(metrics)
            if on_eval:
                on_eval(metrics)
    return {"history": history, "final": history[-1]}
