"""The experiment programs of ``geolip sweep``: each a named function from options to phases.

Programs and what they reproduce (spec §10-§14, the model card in ``shared/seeds``):

- ``seed-battery`` (exp_007): heads byte/kernel/pmix/pmix8/apmix × banks dense/sparse × seeds.
- ``preservation`` (exp_009/010): the codebook arms of §11.1 under pmix, apmix and kernel.
- ``survey`` (exp_010): kernel-aux dose ladder, write-head aux, bank vocabulary swap, context length.
- ``graft`` (§13): depth L→L+2, mixture J→2J, head pmix→apmix, each against a cold start of the
  same architecture and budget and against the donor continued for the same steps.
- ``ladder`` (§12): address dimension D over the scale's ladder, with and without τ_D.
- ``contrast`` (§10): permute/randomize Δbpb of every checkpoint of a battery (its own or a given
  sweep's).
- ``search``: learning rate, τ, K and chunk with ASHA on held-out bits/byte.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tune.spec import SCALES, Phase, Scale, SweepError, TrialSpec, with_seed

BATTERY_HEADS = ("byte", "kernel", "pmix", "pmix8", "apmix")
PRESERVATION_HEADS = ("pmix", "apmix", "kernel")
PRESERVATION_ARMS = ("free", "div_0.003", "div_0.01", "div_0.03", "frozen", "slowlane", "spread",
                     "frozen_random")  # fmt: skip
KAUX_DOSES = (0.0, 0.03, 0.1, 0.3, 1.0)  # spec §7.2
WRITE_DOSES = (0.0, 0.1)  # spec §7.2: λ_w = 0.1
CONTRAST_OPS = ("permute", "randomize")


@dataclass(frozen=True)
class Options:
    """What a program is asked for: ``--scale``, ``--seeds``, ``--arms``, ``--donor``, ``--from``."""

    scale: Scale
    seeds: int
    arms: tuple[str, ...] = ()
    donor: str | None = None
    source_sweep: dict | None = None
    extra: dict = field(default_factory=dict)


def _train(key, arm, head, seed, overrides=(), bank="none", **kw) -> TrialSpec:
    tags = {"arm": arm, "head": head, "bank": bank, "seed": str(seed), **kw.pop("tags", {})}
    return TrialSpec(key=f"{key}-s{seed}", arm=arm, head=head, seed=seed,
                     overrides=with_seed(tuple(overrides), seed), bank=bank, tags=tags, **kw)  # fmt: skip


def _bank(opts: Options, bank: str) -> tuple[str, ...]:
    return (f"train.bank_size={opts.scale.banks[bank]}",)


def seed_battery(opts: Options) -> list[Phase]:
    trials = []
    for seed in range(opts.seeds):
        for head in BATTERY_HEADS:
            banks = ("none",) if head == "byte" else ("dense", "sparse")
            for bank in banks:
                extra = () if bank == "none" else _bank(opts, bank)
                arm = head if bank == "none" else f"{head}/{bank}"
                trials.append(_train(arm.replace("/", "-"), arm, head, seed, extra, bank))
    return [Phase("battery", tuple(trials))]


def contrast_of(trials: list[TrialSpec]) -> list[TrialSpec]:
    """One contrast trial per trained checkpoint that has a codebook consumer worth ablating."""
    return [
        TrialSpec(
            key=f"contrast-{t.key}",
            arm=t.arm,
            kind="contrast",
            head=t.head,
            seed=t.seed,
            bank=t.bank,
            source=t.key,
            tags={**t.tags, "contrast": "1"},
        )  # fmt: skip
        for t in trials
        if t.kind == "train"
    ]


def preservation(opts: Options) -> list[Phase]:
    trials = []
    for seed in range(opts.seeds):
        for head in PRESERVATION_HEADS:
            for arm in PRESERVATION_ARMS:
                name = f"{head}/{arm}"
                sets = (*_bank(opts, "sparse"), *_arm_overrides(arm))
                trials.append(_train(name.replace("/", "-"), name, head, seed, sets, "sparse",
                                     tags={"preservation": arm}))  # fmt: skip
    return [Phase("arms", tuple(trials))]


def _arm_overrides(arm: str) -> tuple[str, ...]:
    """The ``--set`` form of a preservation arm's config fields (``geolip.experiments``)."""
    from geolip.experiments.preservation import ARMS

    return tuple(f"model.{k}={v}" for k, v in ARMS[arm].items())


def survey(opts: Options) -> list[Phase]:
    trials, sc = [], opts.scale
    for seed in range(opts.seeds):
        for dose in KAUX_DOSES:
            sets = (*_bank(opts, "sparse"), f"model.kernel_aux_weight={dose}")
            trials.append(_train(f"kaux-{dose:g}", f"kaux/{dose:g}", "pmix", seed, sets, "sparse",
                                 tags={"component": "kernel-aux", "dose": f"{dose:g}"}))  # fmt: skip
        for dose in WRITE_DOSES[1:]:  # dose 0 is kaux/0, the same run
            sets = (*_bank(opts, "sparse"), f"model.write_aux_weight={dose}")
            trials.append(_train(f"write-{dose:g}", f"write/{dose:g}", "pmix", seed, sets,
                                 "sparse", tags={"component": "write-head", "dose": f"{dose:g}"}))  # fmt: skip
        for T in sc.context:
            sets = (*_bank(opts, "sparse"), f"model.seq_trigrams={T}")
            trials.append(_train(f"ctx-{T}", f"context/{T}", "pmix", seed, sets, "sparse",
                                 tags={"component": "context", "T": str(T)}))  # fmt: skip
    swaps = [
        TrialSpec(
            key=f"swap-{t.key}",
            arm="swap/dense",
            kind="bank_swap",
            head=t.head,
            seed=t.seed,
            bank="dense",
            source=t.key,
            tags={**t.tags, "arm": "swap/dense", "component": "bank-swap", "eval_bank": "dense"},
        )
        for t in trials
        if t.arm == "kaux/0"
    ]
    return [Phase("survey", tuple(trials)), Phase("bank-swap", tuple(swaps))]


def graft(opts: Options) -> list[Phase]:
    """Donors (pmix, J=4) first, unless ``--donor`` names one; then every graft and its controls."""
    sc, base = opts.scale, _bank(opts, "sparse")
    steps = (f"train.steps={sc.graft_steps}",)
    layers = _preset_layers(sc.preset)
    targets = (
        ("depth", "pmix", (f"model.n_layers={layers + 2}",)),
        ("mixture", "pmix8", ()),
        ("retrofit", "apmix", ()),
    )
    donors, warm = [], []
    for seed in range(opts.seeds):
        donor = opts.donor
        if donor is None:
            donors.append(_train("donor", "donor", "pmix", seed, base, "sparse"))
            donor = donors[-1].key
        for name, head, sets in targets:
            common, tags = (*base, *sets, *steps), {"graft": name}
            warm.append(_train(f"graft-{name}", f"{name}/graft", head, seed, common, "sparse",
                               donor=donor, graft=name, tags=tags))  # fmt: skip
            warm.append(_train(f"cold-{name}", f"{name}/cold", head, seed, common, "sparse",
                               tags=tags))  # fmt: skip
        warm.append(_train("continued", "continued", "pmix", seed, (*base, *steps), "sparse",
                           donor=donor, tags={"graft": "continued"}))  # fmt: skip
    phases = [Phase("donors", tuple(donors))] if donors else []
    return [*phases, Phase("grafts", tuple(warm))]


def _preset_layers(preset: str) -> int:
    from geolip.presets import get_preset

    return get_preset(preset).model.n_layers


def ladder(opts: Options) -> list[Phase]:
    trials = []
    for seed in range(opts.seeds):
        for D in opts.scale.ladder:
            base = (*_bank(opts, "sparse"), f"model.D={D}")
            trials.append(_train(f"d{D}", f"d{D}", "pmix", seed, base, "sparse",
                                 tags={"D": str(D), "tau_control": "0"}))  # fmt: skip
            if D != 4:
                tau = 0.1 * (4 / D) ** 0.5
                trials.append(_train(f"d{D}-tauD", f"d{D}/tauD", "pmix", seed,
                                     (*base, f"model.tau={tau:.6g}"), "sparse",
                                     tags={"D": str(D), "tau_control": "1"}))  # fmt: skip
    return [Phase("ladder", tuple(trials))]


def contrast(opts: Options) -> list[Phase]:
    """The battery's kernel and pmix arms, trained here unless ``--from`` names a battery sweep."""
    if opts.source_sweep is not None:
        trained = [TrialSpec.from_dict(t) for t in opts.source_sweep["trials"]]
        return [Phase("contrast", tuple(contrast_of([t for t in trained if t.head != "byte"])))]
    phases = seed_battery(opts)
    trained = [t for t in phases[0].trials if t.head in ("kernel", "pmix")]
    return [Phase("battery", tuple(trained)), Phase("contrast", tuple(contrast_of(trained)))]


def search(opts: Options) -> list[Phase]:
    """ASHA over lr, τ, K and chunk: ``samples`` trials drawn from the space below."""
    space = {
        "train.lr": ["loguniform", 3e-4, 1e-2],
        "model.tau": ["choice", [0.05, 0.1, 0.2]],
        "model.K": ["choice", [32, 64, 128]],
        "model.chunk": ["choice", [8, 16, 32] if opts.scale.name == "tiny" else [64, 128, 256]],
    }
    seed = 0
    trial = _train("search", "search", "pmix", seed, _bank(opts, "sparse"), "sparse")
    return [
        Phase("search", (trial,), search={"space": space, "samples": opts.scale.search_samples})
    ]


PROGRAMS: dict[str, Callable[[Options], list[Phase]]] = {
    "seed-battery": seed_battery,
    "preservation": preservation,
    "survey": survey,
    "graft": graft,
    "ladder": ladder,
    "contrast": contrast,
    "search": search,
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


def scale(name: str) -> Scale:
    if name not in SCALES:
        raise SweepError(f"unknown --scale {name!r}; scales: {', '.join(SCALES)}")
    return SCALES[name]
