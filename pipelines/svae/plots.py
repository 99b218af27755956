"""PNG plots of an SVAE run: omega spectra, α trajectories, deviation histogram, reconstructions."""

from __future__ import annotations

import torch
from matplotlib.figure import Figure

from geolip.svae.frames import dev_critical, deviation
from pipelines.plots import curves_figure, spectrum_figure
from pipelines.tracking import RunLogger, metric_rows


def log_svae_plots(logger: RunLogger, model, data, finals: dict) -> None:
    """Omega spectra, the deviation histogram, reconstructions (images, text), byte recovery
    (text) and α trajectories, read back from the run's own metrics."""
    with torch.no_grad():
        spectra, labels = [], []
        for label, final in finals.items():
            x = data.val[:256] if label == "main" else None
            if x is None:
                continue
            out = final["model"](x)
            spectra.append(out["omega"].mean(dim=(0, 1)).tolist())
            labels.append(f"ω ({label})")
            spectra.append(out["S_att"].mean(dim=(0, 1)).tolist())
            labels.append(f"S_att ({label})")
            logger.log_figure(_dev_histogram(final["model"], out["M_stem"]), "deviation_hist.png")
            if data.kind in ("images", "text"):
                logger.log_figure(_recon_grid(x[:6], out), "reconstructions.png")
    logger.log_figure(spectrum_figure(spectra, labels, "omega spectrum (sorted)"), "omega.png")
    if data.kind == "text":
        rows = _history(logger, lambda k: "byte_recovery" in k and not k.startswith("verdict"))
        series = sorted({k for r in rows for k in r if k != "step"})
        logger.log_figure(
            curves_figure(
                rows, series, "exact byte recovery (held-out)", ylabel="fraction of bytes"
            ),
            "byte_recovery.png",
        )
    rows = _history(
        logger,
        lambda k: ("alpha_layer" in k or k.endswith("mean_alpha")) and not k.startswith("verdict"),
    )
    series = sorted({k for r in rows for k in r if k != "step"})
    logger.log_figure(curves_figure(rows, series, "α trajectories", ylabel="α"), "alpha.png")


def _history(logger: RunLogger, want) -> list[dict]:
    return metric_rows(logger.uri, logger.run_id, want)


def _dev_histogram(model, M_stem) -> Figure:
    dev = deviation(M_stem, model.cfg.D_base).reshape(-1).numpy()
    crit = dev_critical(model.cfg.D_base)
    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.hist(dev, bins=60, color="tab:blue", alpha=0.8)
    for c in (-crit, crit):
        ax.axvline(c, color="tab:red", linestyle="--")
    ax.set_title(f"frame deviation vs ū(D_b) (envelope ±{crit:.3f})")
    ax.set_xlabel("deviation (rad)")
    return fig


def _recon_grid(x, out) -> Figure:
    rows = [("input", x), ("internal", out["internal_recon"]), ("external", out["external_recon"])]
    fig = Figure(figsize=(1.6 * len(x), 5))
    axes = fig.subplots(3, len(x))
    for r, (name, imgs) in enumerate(rows):
        for c in range(len(x)):
            img = imgs[c].detach().permute(1, 2, 0)
            img = ((img - img.min()) / (img.max() - img.min() + 1e-8)).numpy()
            ax = axes[r, c]
            ax.imshow(img, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(name)
    return fig
