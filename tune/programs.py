"""The experiment programs of ``geolip sweep``: each a named function from options to phases.

Programs and what they reproduce (spec §10-§14, the model card in ``shared/seeds``):

- ``seed-battery`` (exp_007): heads byte/kernel/pmix/pmix8/apmix × banks dense/sparse × seeds,
  and each head's softmax twin (``softmax/<arm>``, ``model.attn=softmax``) on the sparse bank.
- ``preservation`` (exp_009/010): the codebook arms of §11.1 under pmix, apmix and kernel.
- ``survey`` (exp_010): kernel-aux dose ladder, write-head aux, bank vocabulary swap, context length.
- ``graft`` (§13): depth L→L+2, mixture J→2J, head pmix→apmix, each against cold starts of the
  same architecture at its own and at the donor's budget, the donor, and the donor trained on
  for the same steps (a warm restart and a true continuation).
- ``hemispheres`` (the two-hemisphere law): routing-only heads (byte, pmix) and heads that
  predict through the codebook (kernel, apmix) with streamed long context; erank slopes.
- ``ladder`` (§12): address dimension D over the scale's ladder, with and without τ_D.
- ``contrast`` (§10): permute/randomize Δbpb of every checkpoint of a battery (its own or a given
  sweep's).
- ``search``: learning rate, τ, K and chunk with ASHA on held-out bits/byte.
- ``svae`` (svae.md §12, §14): the companion's lens rungs (``model.D_lens`` over the scale's
  ladder) over 3 seeds, each fit on structured patches and on their patch-shuffled control: the
  mechanism A/B verdict per rung (``tune.svae_table``).

Every train trial's config is derived from the scale's base config with ``dataclasses.replace``
(the helpers ``model``, ``head``, ``train`` below), then the user's ``--set`` changes apply last.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from geolip.aleph.config import AlephRunConfig
from geolip.aleph.experiments.preservation import arm_config
from geolip.config import Changes, ConfigError, apply_changes
from geolip.svae.config import SVAERunConfig
from tune.spec import SWAP_LABELS, Phase, SweepError, SweepScale, TrialSpec

# The seed battery's heads: arm name -> (head kind, other head fields); pmix8 is J = 8.
BATTERY_HEADS = {
    "byte": {"kind": "byte"},
    "kernel": {"kind": "kernel"},
    "pmix": {"kind": "pmix"},
    "pmix8": {"kind": "pmix", "n_pointers": 8},
    "apmix": {"kind": "apmix"},
}
HEMISPHERE_HEADS = {
    "routing/byte": "byte",
    "routing/pmix": "pmix",
    "prediction/kernel": "kernel",
    "prediction/apmix": "apmix",
}
"""The two-hemisphere law's arms: heads that read the codebook only through routing, and heads
that score candidates through it (prediction error reaches the codebook)."""
HEMISPHERE_SEGMENTS = 4
"""Streamed long context ``[proposed]``: each training window is 4 segments of ``seq_trigrams``
with the hub state carried across them (``model.n_segments``)."""
PRESERVATION_HEADS = ("pmix", "apmix", "kernel")
PRESERVATION_ARMS = (
    "free",
    "div_0.003",
    "div_0.01",
    "div_0.03",
    "frozen",
    "slowlane",
    "spread",
    "frozen_random",
)
KAUX_DOSES = (0.0, 0.03, 0.1, 0.3, 1.0)  # spec §7.2
WRITE_DOSES = (0.0, 0.1)  # spec §7.2: λ_w = 0.1
CONTRAST_OPS = ("permute", "randomize")
SEARCH_SPACE = ("train.lr", "model.tau", "model.K", "model.chunk")


@dataclass(frozen=True)
class Options:
    """What a program is asked for: ``--scale``, ``--seeds``, ``--arms``, ``--set``, ``--donor``,
    ``--from`` (``sets``: the typed changes of ``--set``, applied to every train trial)."""

    scale: SweepScale
    seeds: int
    arms: tuple[str, ...] = ()
    sets: Changes = ()
    donor: str | None = None
    source_sweep: dict | None = None
    svae_base: SVAERunConfig | None = None
    """The ``svae`` program's config: its data's (``pipelines.svae.data.run_config``) at the
    scale's budget (``tune.plan.svae_base``); None: ``images:structured``'s."""
    extra: dict = field(default_factory=dict)

    def base(self, head: str = "pmix", bank: str | None = "sparse") -> AlephRunConfig:
        """The scale's cold-trial config with ``head`` and the ``bank`` of that label."""
        run = head_of(self.scale.base(), kind=head)
        return train_of(run, bank_size=self.scale.banks[bank]) if bank else run


def model_of(run: AlephRunConfig, **fields) -> AlephRunConfig:
    return dataclasses.replace(run, model=dataclasses.replace(run.model, **fields))


def head_of(run: AlephRunConfig, **fields) -> AlephRunConfig:
    return model_of(run, head=dataclasses.replace(run.model.head, **fields))


def train_of(run: AlephRunConfig, **fields) -> AlephRunConfig:
    return dataclasses.replace(run, train=dataclasses.replace(run.train, **fields))


def _train(opts: Options, key, arm, seed, run, bank="none", **kw) -> TrialSpec:
    """A train trial: ``run`` with the trial's seed, then the user's ``--set`` changes."""
    run = apply_changes(train_of(run, seed=seed), opts.sets)
    tags = {"arm": arm, "head": run.head, "bank": bank, "seed": str(seed), **kw.pop("tags", {})}
    return TrialSpec(key=f"{key}-s{seed}", arm=arm, run=run, seed=seed, bank=bank, tags=tags, **kw)


def seed_battery(opts: Options) -> list[Phase]:
    trials = []
    for seed in range(opts.seeds):
        for name, head in BATTERY_HEADS.items():
            banks = ("none",) if name == "byte" else ("dense", "sparse")
            for bank in banks:
                run = head_of(opts.base(bank=None if bank == "none" else bank), **head)
                arm = name if bank == "none" else f"{name}/{bank}"
                trials.append(_train(opts, arm.replace("/", "-"), arm, seed, run, bank))
                if bank in ("none", "sparse"):  # the softmax twin of each head (no aleph hubs)
                    twin, name_ = model_of(run, attn="softmax"), f"softmax/{arm}"
                    tags = {"attn": "softmax"}
                    trials.append(
                        _train(opts, name_.replace("/", "-"), name_, seed, twin, bank, tags=tags)
                    )
    return [Phase("battery", tuple(trials))]


def contrast_of(trials: list[TrialSpec]) -> list[TrialSpec]:
    """One contrast trial per trained checkpoint that has a codebook consumer worth ablating."""
    return [
        TrialSpec(
            key=f"contrast-{t.key}",
            arm=t.arm,
            kind="contrast",
            seed=t.seed,
            bank=t.bank,
            source=t.key,
            tags={**t.tags, "contrast": "1"},
        )
        for t in trials
        if t.kind == "train"
    ]


def preservation(opts: Options) -> list[Phase]:
    trials = []
    for seed in range(opts.seeds):
        for head in PRESERVATION_HEADS:
            base = opts.base(head)
            for arm in PRESERVATION_ARMS:
                name = f"{head}/{arm}"
                run = dataclasses.replace(base, model=arm_config(base.model, arm))

                trials.append(
                    _train(
                        opts,
                        name.replace("/", "-"),
                        name,
                        seed,
                        run,
                        "sparse",
                        tags={"preservation": arm},
                    )
                )
    return [Phase("arms", tuple(trials))]


def survey(opts: Options) -> list[Phase]:
    trials, sc, base = [], opts.scale, opts.base()
    for seed in range(opts.seeds):
        for dose in KAUX_DOSES:
            tags = {"component": "kernel-aux", "dose": f"{dose:g}"}
            run = model_of(base, kernel_aux_weight=dose)
            trials.append(
                _train(opts, f"kaux-{dose:g}", f"kaux/{dose:g}", seed, run, "sparse", tags=tags)
            )
        for dose in WRITE_DOSES[1:]:  # dose 0 is kaux/0, the same run
            tags = {"component": "write-head", "dose": f"{dose:g}"}
            run = model_of(base, write_aux_weight=dose)
            trials.append(
                _train(opts, f"write-{dose:g}", f"write/{dose:g}", seed, run, "sparse", tags=tags)
            )
        for T in sc.context:
            tags = {"component": "context", "T": str(T)}
            run = model_of(base, seq_trigrams=T)
            trials.append(_train(opts, f"ctx-{T}", f"context/{T}", seed, run, "sparse", tags=tags))
    # §13.4: each kaux/0 model on banks of other vocabulary (tune.banks: another stratum mix,
    # another corpus), the same size as its own.
    swaps = [
        TrialSpec(
            key=f"swap-{label}-{t.key}",
            arm=f"swap/{label}",
            kind="bank_swap",
            seed=t.seed,
            bank=label,
            source=t.key,
            tags={**t.tags, "arm": f"swap/{label}", "component": "bank-swap", "eval_bank": label},
        )
        for t in trials
        if t.arm == "kaux/0"
        for label in SWAP_LABELS
    ]
    return [Phase("survey", tuple(trials)), Phase("bank-swap", tuple(swaps))]


def hemispheres(opts: Options) -> list[Phase]:
    """Routing-only and prediction-employing heads with streamed long context (the model card's
    two-hemisphere law); the summary has each arm's erank trajectory and slope (``tune.erank``)."""
    trials = []
    for seed in range(opts.seeds):
        for arm, kind in HEMISPHERE_HEADS.items():
            bank = "none" if kind == "byte" else "sparse"
            run = head_of(opts.base(bank=None if bank == "none" else bank), kind=kind)
            run = model_of(run, n_segments=HEMISPHERE_SEGMENTS)
            tags = {"hemisphere": arm.partition("/")[0]}
            trials.append(_train(opts, arm.replace("/", "-"), arm, seed, run, bank, tags=tags))
    return [Phase("hemispheres", tuple(trials))]


def graft(opts: Options) -> list[Phase]:
    """Donors (pmix, J=4) first, unless ``--donor`` names one; then every graft and its controls."""
    base = opts.base()
    warm_base = train_of(base, steps=opts.scale.graft_steps)
    targets = (
        ("depth", model_of(warm_base, n_layers=base.model.n_layers + 2)),
        ("mixture", head_of(warm_base, n_pointers=2 * base.model.head.n_pointers)),
        ("retrofit", head_of(warm_base, kind="apmix")),
    )
    donors, warm = [], []
    for seed in range(opts.seeds):
        donor = opts.donor
        if donor is None:
            donors.append(_train(opts, "donor", "donor", seed, base, "sparse"))
            donor = donors[-1].key
        for name, run in targets:
            tags = {"graft": name}
            warm.append(
                _train(
                    opts,
                    f"graft-{name}",
                    f"{name}/graft",
                    seed,
                    run,
                    "sparse",
                    donor=donor,
                    graft=name,
                    tags=tags,
                )
            )
            # Cold controls at the graft's budget and at the donor's whole budget (the card's
            # "graft@2k beats its 5k donor and 5k cold").
            cold = {**tags, "budget": "graft"}
            warm.append(
                _train(opts, f"cold-{name}", f"{name}/cold", seed, run, "sparse", tags=cold)
            )
            full, cold = train_of(run, steps=base.train.steps), {**tags, "budget": "donor"}
            warm.append(
                _train(
                    opts, f"coldfull-{name}", f"{name}/cold-full", seed, full, "sparse", tags=cold
                )
            )
        # The donor trained on for the graft's budget: a warm restart (fresh Adam, schedule
        # from its warm-up) and a true continuation (its Adam state and schedule).
        for arm, graft_op in (("warm-restart", "none"), ("continuation", "continue")):
            warm.append(
                _train(
                    opts,
                    arm,
                    arm,
                    seed,
                    warm_base,
                    "sparse",
                    donor=donor,
                    graft=graft_op,
                    tags={"graft": arm},
                )
            )
    phases = [Phase("donors", tuple(donors))] if donors else []
    return [*phases, Phase("grafts", tuple(warm))]


def ladder(opts: Options) -> list[Phase]:
    trials, base = [], opts.base()
    for seed in range(opts.seeds):
        for D in opts.scale.ladder:
            run = model_of(base, D=D)
            trials.append(
                _train(
                    opts,
                    f"d{D}",
                    f"d{D}",
                    seed,
                    run,
                    "sparse",
                    tags={"D": str(D), "tau_control": "0"},
                )
            )
            if D != 4:  # τ_D: the temperature that keeps the address's spread at D = 4's
                run = model_of(run, tau=0.1 * (4 / D) ** 0.5)
                trials.append(
                    _train(
                        opts,
                        f"d{D}-tauD",
                        f"d{D}/tauD",
                        seed,
                        run,
                        "sparse",
                        tags={"D": str(D), "tau_control": "1"},
                    )
                )
    return [Phase("ladder", tuple(trials))]


def contrast(opts: Options) -> list[Phase]:
    """The battery's kernel and pmix arms, trained here unless ``--from`` names a battery sweep."""
    if opts.source_sweep is not None:
        trained = [TrialSpec.from_dict(t) for t in opts.source_sweep["trials"]]
        # Every checkpoint with a codebook consumer to ablate: not byte, not a twin whose head
        # ignores the codebook too.
        ablatable = [t for t in trained if t.head != "byte" and _reads_codebook(t)]
        return [Phase("contrast", tuple(contrast_of(ablatable)))]
    phases = seed_battery(opts)
    keep = {"kernel", "pmix"}
    trained = [t for t in phases[0].trials if t.arm.split("/")[0] in keep]
    return [Phase("battery", tuple(trained)), Phase("contrast", tuple(contrast_of(trained)))]


def _reads_codebook(trial: TrialSpec) -> bool:
    return trial.run is None or trial.run.model.reads_codebook


def search(opts: Options) -> list[Phase]:
    """ASHA over lr, τ, K and chunk: ``samples`` trials drawn from the space below."""
    space = {
        "train.lr": ["loguniform", 3e-4, 1e-2],
        "model.tau": ["choice", [0.05, 0.1, 0.2]],
        "model.K": ["choice", [32, 64, 128]],
        "model.chunk": ["choice", list(opts.scale.search_chunks)],
    }
    trial = _train(opts, "search", "search", 0, opts.base(), "sparse")
    return [
        Phase("search", (trial,), search={"space": space, "samples": opts.scale.search_samples})
    ]


def svae(opts: Options) -> list[Phase]:
    """Every lens rung × seed: one SVAE run on the data and its patch-shuffled control (§14)."""
    budget, trials = opts.scale.svae, []
    base = opts.svae_base or budget.base(SVAERunConfig())  # images:structured's config
    for seed in range(opts.seeds):
        for D in budget.rungs:
            arm = f"lens/d{D}"
            try:
                run = dataclasses.replace(
                    base,
                    model=dataclasses.replace(base.model, D_lens=D, seed=seed),
                    train=dataclasses.replace(base.train, seed=seed),
                )
                run = apply_changes(run, opts.sets)
            except ConfigError as exc:
                raise SweepError(f"lens rung {arm}: {exc}") from None
            tags = {"arm": arm, "D_lens": str(run.model.D_lens), "seed": str(seed)}
            key = f"lens-d{D}-s{seed}"
            trials.append(TrialSpec(key=key, arm=arm, kind="svae", svae=run, seed=seed, tags=tags))
    return [Phase("lens", tuple(trials))]


PROGRAMS: dict[str, Callable[[Options], list[Phase]]] = {
    "seed-battery": seed_battery,
    "preservation": preservation,
    "survey": survey,
    "graft": graft,
    "hemispheres": hemispheres,
    "ladder": ladder,
    "contrast": contrast,
    "search": search,
    "svae": svae,
}


def plan(program: str, opts: Options) -> list[Phase]:
    """The phases of ``program``, keeping only ``opts.arms`` (and what they depend on) if given."""
    if program not in PROGRAMS:
        raise SweepError(f"unknown program {program!r}; programs: {', '.join(PROGRAMS)}")
    phases = PROGRAMS[program](opts)
    return _select_arms(phases, opts.arms) if opts.arms else phases


def _select_arms(phases: list[Phase], arms: tuple[str, ...]) -> list[Phase]:
    known = {t.arm for p in phases for t in p.trials}
    unknown = [a for a in arms if a not in known]
    if unknown:
        raise SweepError(f"unknown arm(s) {unknown} for this program; arms: {sorted(known)}")
    keep = {t.key for p in phases for t in p.trials if t.arm in arms}
    # A kept trial's donor or source must run too.
    for p in reversed(phases):
        for t in p.trials:
            if t.key in keep:
                keep.update(k for k in (t.donor, t.source) if k)
    out = [Phase(p.name, tuple(t for t in p.trials if t.key in keep), p.search) for p in phases]
    return [p for p in out if p.trials]
