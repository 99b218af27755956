"""The banks a sweep's trials read, cut once before the first trial starts.

Trials often start at once, on other nodes' actors: the corpus' atlas and every bank they cut
from it are made here, on the sweep's driver, and the trials only read the files
(``pipelines.atlas.corpus_atlas``). That covers

- the banks of the training trials (``--bank-source atlas``, one per bank size), and
- the survey's bank swaps (spec §13.4): a trained model scored on a bank of *other vocabulary*,
  the same size as its own. ``mix`` is cut from the same corpus' atlas with another stratum mix
  (``--swap-quotas``, default ``word=1``: ranked on the word stratum, where the training bank
  leans on the char stratum); ``corpus`` is cut from another corpus' atlas (``--swap-corpus``,
  default the other builtin corpus). The swap trial reports how much the two banks overlap.
"""

from __future__ import annotations

from pipelines.atlas.corpus_atlas import ensure_corpus_bank

SWAP_QUOTAS = "word=1"
"""The ``mix`` swap bank's stratum quotas ``[proposed]``."""


def default_swap_corpus(corpus: str) -> str:
    """The other builtin corpus: ``builtin:tiny``, or ``builtin:python-docs`` for ``tiny``."""
    return "builtin:python-docs" if corpus == "builtin:tiny" else "builtin:tiny"


def swap_key(label: str, size: int) -> str:
    """How a swap trial finds its bank in ``TrialContext.swap_banks``."""
    return f"{label}/{size}"


def prepare_banks(sweep, shards, progress=print) -> dict[str, str]:
    """Cut what the trials of ``sweep`` (a ``tune.plan.PlannedSweep``) read; returns the swap
    banks, ``{swap_key(label, size): path}``."""
    job, data = sweep.job, sweep.job.ctx.data_dir
    trials = {t.key: t for p in sweep.phases for t in p.trials}
    if job.bank_source == "atlas":
        sizes = {
            t.run.train.bank_size
            for t in trials.values()
            if t.run is not None and t.run.model.uses_bank and not t.donor
        }
        for size in sorted(sizes):
            path = ensure_corpus_bank(job.corpus, data, shards, size)
            progress(f"bank: {path} (cut from the corpus' atlas)")
    swaps = {}
    for t in trials.values():
        source = trials.get(t.source or "")
        if t.kind != "bank_swap" or source is None or source.run is None:
            continue
        size = source.run.train.bank_size
        key = swap_key(t.bank, size)
        if key not in swaps:
            swaps[key] = str(_swap_bank(job, t.bank, shards, size))
            progress(f"swap bank {t.bank}: {swaps[key]}")
    return swaps


def _swap_bank(job, label: str, shards, size: int):
    from pipelines.byte_shards import build_byte_shards  # pyarrow: not for the CLI's import

    data = job.ctx.data_dir
    if label == "mix":
        return ensure_corpus_bank(job.corpus, data, shards, size, quotas=job.swap_quotas)
    other = job.swap_corpus or default_swap_corpus(job.corpus)
    other_shards = build_byte_shards(other, data, progress=lambda s: None)
    return ensure_corpus_bank(other, data, other_shards, size)
