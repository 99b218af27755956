"""Bad input to ``geolip train aleph`` and ``geolip train svae``: one error line, exit 2, nothing
on stdout and every file of the case's directory unchanged (no ``data/`` with shards, no
``mlflow.db``, no run directory: each case fails before Ray, tracking or any shard is written).

Fixtures are written by each case's setup: a small corpus, a regular file to aim paths at, a
donor checkpoint (the module's tiny pmix checkpoint, ``conftest.source``), a features directory.
The ``started`` setups leave what a real run leaves before its first step (byte shards, the
MLflow store, a checkpoint under ``ray_results``): they run the same command in a child
interpreter up to its run-name check, so a case that reuses the name sees the real state.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from battery_harness import Case, base_env, check_case, fill

CORPUS = "file:{tmp}/corpus.txt"
TRAIN = ("train", "aleph", "--corpus", CORPUS, "--scale", "smoke")
SVAE = ("train", "svae", "--data", "images:structured")
FEATURES = "features:{tmp}/feat"
FORMAT = "geolip-features/1"
TWO_FIELDS = "expects section.key=value"

# Runs the command of ``argv`` up to its run-name check, which instead makes the run's first
# checkpoint directory and stops: what a started run leaves, without Ray.
STARTED = """
import sys
from pathlib import Path

import pipelines.aleph.driver as aleph_driver
import pipelines.aleph.job as aleph_job
from pipelines.cli import main
from pipelines.errors import GeolipError


def started(run_dir, train_dir, resume, auto=False):
    # train_dir: a pipelines.storage.Root (a local directory here)
    (Path(train_dir.path) / "checkpoint_000000").mkdir(parents=True)
    raise GeolipError(f"started {Path(train_dir.path).name}")


def on_cpus(ctx, what):  # the cluster check, which would start Ray: a CPU run here
    return ctx.replace(use_gpu=False, workers_gpus=None)


aleph_job.check_run_name = started
aleph_driver.claim = on_cpus
if sys.argv[1:3] == ["train", "svae"]:
    import pipelines.svae.driver as svae_driver

    svae_driver.check_run_name = started
assert main(sys.argv[1:]) == 2
"""


def corpus(tmp: Path) -> None:
    (tmp / "corpus.txt").write_text("the cat sat on the mat.\n" * 200, encoding="utf-8")


def write(name: str, text: str):
    """A setup: the corpus, and ``text`` in file ``name`` under the case's directory."""

    def setup(tmp: Path) -> None:
        corpus(tmp)
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")

    return setup


def donor(edit=None):
    """A setup (given the module's checkpoint): the corpus and the checkpoint at ``{tmp}/ck``,
    then ``edit(ck)``."""

    def setup(source: Path, tmp: Path) -> None:
        corpus(tmp)
        ck = Path(shutil.copytree(source, tmp / "ck"))
        if edit is not None:
            edit(ck)

    setup.needs_source = True
    return setup


def a_checkpoint_dir(name: str):
    """A setup: the corpus, and Ray Train's directory of run ``name`` with a checkpoint."""

    def setup(tmp: Path) -> None:
        corpus(tmp)
        (tmp / "data" / "ray_results" / name / "checkpoint_000000").mkdir(parents=True)

    return setup


def started(*argv: str):
    """A setup: the corpus, then the run of ``geolip ARGV`` started (see ``STARTED``)."""

    def setup(tmp: Path) -> None:
        corpus(tmp)
        cmd = [sys.executable, "-c", STARTED, *fill(argv, tmp)]
        proc = subprocess.run(cmd, cwd=tmp, env=base_env(tmp), capture_output=True, text=True)
        assert proc.returncode == 0 and "geolip: error: started" in proc.stderr, proc.stderr

    return setup


def features(manifest=None, vectors: int = 8):
    """A setup: a features directory at ``{tmp}/feat`` whose train and validation shards hold
    ``vectors``-dim tokens, with ``manifest`` (a dict, or text written as is)."""

    def setup(tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        feat = tmp / "feat"
        for side in ("train", "validation"):
            (feat / side).mkdir(parents=True)
            flat = pa.array([0.5] * (5 * vectors), pa.float32())
            table = pa.table(
                {
                    "document": ["d"] * 5,
                    "sentence": [0] * 5,
                    "token": list(range(5)),
                    "vector": pa.FixedSizeListArray.from_arrays(flat, vectors),
                }
            )
            pq.write_table(table, feat / side / "part-0.parquet")
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (feat / "manifest.json").write_text(text, encoding="utf-8")

    return setup


def manifest(hidden: int = 8, **changes) -> dict:
    """A features manifest for ``hidden``-dim tokens, with ``changes`` (None removes a key)."""
    out = {
        "format": FORMAT,
        "host": {"hidden_size": hidden, "name": "x"},
        "corpus": "c",
        "request": {"layer": -1},
        "standardize": {"mean": [0.0] * 8, "std": [1.0] * 8},
    }
    out.update(changes)
    return {k: v for k, v in out.items() if v is not None}


def no_validation_shards(tmp: Path) -> None:
    features(manifest())(tmp)
    shutil.rmtree(tmp / "feat" / "validation")


def flag(argv: tuple[str, ...], name: str, value: str, expect: str) -> Case:
    """``argv`` with a bad ``--FLAG=VALUE`` (the ``=`` form: a negative value reaches the check)."""
    slug = value.lower().replace("-", "minus").replace(",", "_").replace(".", "_")[:16] or "empty"
    return Case(
        f"{'-'.join(argv[:2])}-{name.strip('-')}-{slug}", (*argv, f"{name}={value}"), expect
    )


def setting(argv: tuple[str, ...], item: str, expect: str, slug: str) -> Case:
    """``argv`` with ``--set ITEM``."""
    return Case(f"{'-'.join(argv[:2])}-set-{slug}", (*argv, "--set", item), expect)


# A local Ray that sees no GPU on any machine, and prints no token-auth notice on stderr.
NO_GPUS = {"CUDA_VISIBLE_DEVICES": "", "RAY_AUTH_MODE": "disabled"}


def gpu_flag_cases(argv: tuple[str, ...]) -> list[Case]:
    """``--workers-gpus`` and ``--wait-nodes`` refused by the parser (no Ray started)."""
    name = "-".join(argv[:2])
    return [
        flag(argv, "--workers-gpus", "0", "argument --workers-gpus: expected a number of GPUs > 0"),
        flag(argv, "--workers-gpus", "-1", "argument --workers-gpus: expected a number of GPUs"),
        flag(argv, "--workers-gpus", "inf", "argument --workers-gpus: expected a number of GPUs"),
        flag(argv, "--workers-gpus", "one", "argument --workers-gpus: expected a number of GPUs"),
        flag(
            argv,
            "--workers-gpus",
            "1.5",
            "argument --workers-gpus: more than one GPU per worker must be a whole number",
        ),
        flag(argv, "--wait-nodes", "-1", "argument --wait-nodes: must be >= 0, got -1"),
        flag(argv, "--wait-nodes", "soon", "argument --wait-nodes: expected a whole number"),
        Case(
            f"{name}-workers-gpus-with-gpu-off",
            (*argv, "--gpu", "off", "--workers-gpus", "1"),
            "--workers-gpus 1 asks for GPUs but --gpu off for none: drop one of them",
        ),
    ]


def with_corpus(case: Case) -> Case:
    """``case`` with the corpus written first (as train aleph's cases all have it)."""
    return dataclasses.replace(case, setup=case.setup or corpus)


TRAIN_FLAG_CASES = [
    flag(TRAIN, "--eval-bytes", "0", "argument --eval-bytes: must be >= 1000"),
    flag(TRAIN, "--eval-bytes", "-1", "argument --eval-bytes: must be >= 1000"),
    flag(TRAIN, "--eval-bytes", "999", "argument --eval-bytes: must be >= 1000"),
    flag(TRAIN, "--eval-bytes", "1e6", "argument --eval-bytes: expected a whole number, got '1e6'"),
    flag(TRAIN, "--workers", "0", "argument --workers: must be >= 1, got 0"),
    flag(TRAIN, "--workers", "-2", "argument --workers: must be >= 1, got -2"),
    flag(TRAIN, "--workers", "two", "argument --workers: expected a whole number, got 'two'"),
    flag(TRAIN, "--checkpoint-every", "-1", "argument --checkpoint-every: must be >= 0, got -1"),
    flag(TRAIN, "--checkpoint-every", "1.5", "argument --checkpoint-every: expected a whole"),
    flag(TRAIN, "--max-failures", "-1", "argument --max-failures: must be >= 0, got -1"),
    flag(TRAIN, "--scale", "huge", "argument --scale: invalid choice: 'huge'"),
    flag(TRAIN, "--head", "pmix9", "argument --head: invalid choice: 'pmix9'"),
    flag(TRAIN, "--head", "pmix8", "argument --head: 'pmix8' is now spelled --head pmix --set"),
    flag(TRAIN, "--gpu", "maybe", "argument --gpu: invalid choice: 'maybe'"),
    *gpu_flag_cases(TRAIN),
    flag(TRAIN, "--graft", "sideways", "argument --graft: invalid choice: 'sideways'"),
    Case("train-aleph-no-corpus", ("train", "aleph"), "required: --corpus"),
    Case(
        "train-aleph-workers-not-dividing-batch",
        (*TRAIN, "--workers", "3"),
        "train.batch_size 8 (the global batch) must be divisible by --workers 3",
    ),
    Case(
        "train-aleph-graft-without-donor",
        (*TRAIN, "--graft", "depth"),
        "--graft depth needs --init-from CHECKPOINT",
    ),
    Case(
        "train-aleph-eval-bytes-under-one-window",
        (*TRAIN, "--set", "model.seq_trigrams=400", "--eval-bytes", "1000"),
        "--eval-bytes 1000 is fewer than one evaluation window (1203 bytes for seq_trigrams=400)",
    ),
    Case(
        "train-aleph-gpu-on-without-gpus",
        (*TRAIN, "--gpu", "on"),
        "--gpu on: the cluster has no GPUs and cannot get any (it has ",
        env=NO_GPUS,
    ),
    Case(
        "train-aleph-tracking-file-store",
        (*TRAIN, "--tracking-uri", "file:{tmp}/mlruns"),
        "is a file store, which MLflow 3.17 refuses",
    ),
    Case(
        "train-aleph-tracking-unreachable",
        (*TRAIN, "--tracking-uri", "http://127.0.0.1:9"),
        "tracking server http://127.0.0.1:9 is unreachable",
    ),
]

TRAIN_SET_CASES = [
    setting(TRAIN, "train.steps=0", "train.steps must be >= 1, got 0", "steps-0"),
    setting(TRAIN, "train.steps=-3", "train.steps must be >= 1, got -3", "steps-minus3"),
    setting(TRAIN, "train.steps", f"--set {TWO_FIELDS}, got 'train.steps'", "no-equals"),
    setting(TRAIN, "steps=5", f"--set {TWO_FIELDS}, got 'steps=5'", "no-section"),
    setting(TRAIN, "nope.x=1", "--set section must be one of ['model', 'train']", "bad-section"),
    setting(TRAIN, "train.nope=1", "unknown key 'train.nope'", "unknown-key"),
    setting(TRAIN, "model.head=pmix", "'model.head' is a group", "group"),
    setting(
        TRAIN,
        "train.steps=abc",
        "--set train.steps: expected a whole number, got 'abc'",
        "steps-not-a-number",
    ),
    setting(
        TRAIN,
        "train.steps=1.5",
        "--set train.steps: expected a whole number, got '1.5'",
        "steps-1_5",
    ),
    setting(TRAIN, "train.lr=fast", "--set train.lr: expected a number, got 'fast'", "lr-text"),
    setting(TRAIN, "train.lr=inf", "--set train.lr: expected a finite number", "lr-inf"),
    setting(TRAIN, "train.lr=-1", "train.lr must be > 0, got -1.0", "lr-negative"),
    setting(TRAIN, "train.amp=yes", "train.amp invalid: 'yes'", "amp-yes"),
    setting(TRAIN, "model.head.kind=pmix8", "model.head.kind", "head-kind"),
]

TRAIN_CORPUS_CASES = [
    Case(
        "train-aleph-corpus-malformed",
        ("train", "aleph", "--corpus", "bogus"),
        "malformed corpus URI 'bogus': expected SCHEME:TARGET",
    ),
    Case(
        "train-aleph-corpus-unknown-scheme",
        ("train", "aleph", "--corpus", "ftp:corpus.txt"),
        "unknown corpus scheme 'ftp'",
    ),
    Case(
        "train-aleph-corpus-unknown-builtin",
        ("train", "aleph", "--corpus", "builtin:nope"),
        "unknown builtin corpus 'nope'",
    ),
    Case(
        "train-aleph-corpus-file-missing",
        ("train", "aleph", "--corpus", "file:{tmp}/missing.txt", "--scale", "smoke"),
        "corpus file not found",
    ),
    Case(
        "train-aleph-corpus-glob-empty",
        ("train", "aleph", "--corpus", "file:{tmp}/*.nope", "--scale", "smoke"),
        "no files match the glob",
    ),
    Case(
        "train-aleph-corpus-empty",
        ("train", "aleph", "--corpus", "file:{tmp}/empty.txt", "--scale", "smoke"),
        "empty.txt' has no documents",
        setup=write("empty.txt", ""),
    ),
    Case(
        "train-aleph-corpus-too-short",
        ("train", "aleph", "--corpus", "file:{tmp}/short.txt", "--scale", "smoke"),
        "short.txt: its validation split has 1 bytes, fewer than one window (99 bytes for "
        "seq_trigrams=32); use a larger corpus",
        setup=write("short.txt", "one short line of text\n"),
    ),
    Case(
        "train-aleph-corpus-validation-too-short",
        ("train", "aleph", "--corpus", "file:{tmp}/short.txt", "--scale", "smoke"),
        "short.txt: its validation split has 48 bytes, fewer than one window (99 bytes",
        setup=write("short.txt", "the cat sat on the mat.\n" * 40),
    ),
    Case(
        "train-aleph-corpus-hf-not-cached",
        ("train", "aleph", "--corpus", "hf:no-such-org/no-such-dataset", "--scale", "smoke"),
        "cannot load 'hf:no-such-org/no-such-dataset'",
    ),
]

TRAIN_PATH_CASES = [
    Case(
        "train-aleph-data-dir-under-a-file",
        (*TRAIN, "--data-dir", "{tmp}/afile/data"),
        "--data-dir {tmp}/afile/data lies under {tmp}/afile, which is a regular file",
        setup=write("afile", "x\n"),
    ),
    Case(
        "train-aleph-data-dir-is-a-file",
        (*TRAIN, "--data-dir", "{tmp}/afile"),
        "--data-dir {tmp}/afile is a regular file; expected a directory",
        setup=write("afile", "x\n"),
    ),
    Case(
        "train-aleph-bank-missing",
        (*TRAIN, "--bank", "{tmp}/nope.safetensors"),
        "--bank: bank file {tmp}/nope.safetensors does not exist",
    ),
    Case(
        "train-aleph-bank-corrupt",
        (*TRAIN, "--bank", "{tmp}/bank.safetensors"),
        "--bank: bank file {tmp}/bank.safetensors is not a readable safetensors bank",
        setup=write("bank.safetensors", "not a bank"),
    ),
    Case(
        "train-aleph-init-from-missing",
        (*TRAIN, "--init-from", "{tmp}/nope"),
        "--init-from: checkpoint {tmp}/nope does not exist",
    ),
    Case(
        "train-aleph-init-from-a-file",
        (*TRAIN, "--init-from", "{tmp}/afile"),
        "--init-from: checkpoint {tmp}/afile is a file, not a directory",
        setup=write("afile", "x\n"),
    ),
    Case(
        "train-aleph-init-from-config-array",
        (*TRAIN, "--init-from", "{tmp}/ck"),
        "--init-from: checkpoint file {tmp}/ck/config.json holds a JSON array; expected a JSON "
        "object",
        setup=donor(lambda ck: (ck / "config.json").write_text("[1]")),
    ),
    Case(
        "train-aleph-init-from-config-not-json",
        (*TRAIN, "--init-from", "{tmp}/ck"),
        "--init-from: checkpoint file {tmp}/ck/config.json is not valid JSON",
        setup=donor(lambda ck: (ck / "config.json").write_text("{no")),
    ),
    Case(
        "train-aleph-init-from-other-shape",
        (*TRAIN, "--init-from", "{tmp}/ck", "--set", "model.d_model=32"),
        "--init-from without --graft needs the donor's exact model config",
        setup=donor(),
    ),
    Case(
        "train-aleph-graft-mixture-onto-another-head",
        (*TRAIN, "--head", "byte", "--init-from", "{tmp}/ck", "--graft", "mixture"),
        "graft_mixture: model.head.kind differs (donor 'pmix', target 'byte')",
        setup=donor(),
    ),
]

TRAIN_RUN_CASES = [
    Case(
        "train-aleph-name-in-use",
        (*TRAIN, "--name", "taken"),
        "--name taken: the run already exists ({tmp}/data/ray_results/taken); pass --resume",
        setup=a_checkpoint_dir("taken"),
    ),
    Case(
        "train-aleph-name-with-slash",
        (*TRAIN, "--name", "../elsewhere"),
        "--name '../elsewhere': expected a run name (one path component, no '/')",
    ),
    Case(
        "train-aleph-resume-named-without-checkpoint",
        (*TRAIN, "--name", "fresh", "--resume"),
        "--resume: run fresh has no checkpoint to resume from",
    ),
    Case(
        "train-aleph-resume-nothing-started",
        (*TRAIN, "--resume"),
        "--resume: no AlephLM run under {tmp}/data/ray_results has a checkpoint",
    ),
    Case(
        "train-aleph-default-name-in-use",
        TRAIN,
        "already exists",
        setup=started(*TRAIN),
    ),
    Case(
        "train-aleph-resume-of-another-config",
        (*TRAIN, "--resume"),
        "has no checkpoint to resume from",
        setup=started(*TRAIN, "--set", "train.seed=1"),
    ),
]

SVAE_CASES = [
    flag(SVAE, "--workers", "0", "argument --workers: must be >= 1, got 0"),
    flag(SVAE, "--workers", "two", "argument --workers: expected a whole number, got 'two'"),
    flag(SVAE, "--max-failures", "-1", "argument --max-failures: must be >= 0, got -1"),
    flag(SVAE, "--gpu", "maybe", "argument --gpu: invalid choice: 'maybe'"),
    *gpu_flag_cases(SVAE),
    Case(
        "train-svae-gpu-on-without-gpus",
        (*SVAE, "--gpu", "on"),
        "--gpu on: the cluster has no GPUs and cannot get any (it has ",
        env=NO_GPUS,
    ),
    Case("train-svae-no-data", ("train", "svae"), "required: --data"),
    Case(
        "train-svae-data-unknown-kind",
        ("train", "svae", "--data", "pictures:nice"),
        "--data 'pictures:nice': expected features:DIR, images:structured or text:CORPUS_URI",
    ),
    Case(
        "train-svae-data-features-empty",
        ("train", "svae", "--data", "features:"),
        "--data 'features:': expected features:DIR",
    ),
    Case(
        "train-svae-data-images-other",
        ("train", "svae", "--data", "images:noise"),
        "--data 'images:noise': expected features:DIR",
    ),
    Case(
        "train-svae-features-missing",
        ("train", "svae", "--data", "features:{tmp}/nope"),
        "--data features:{tmp}/nope: no such directory",
    ),
    Case(
        "train-svae-features-a-file",
        ("train", "svae", "--data", "features:{tmp}/afile"),
        "--data features:{tmp}/afile: a regular file; expected a features directory",
        setup=write("afile", "x\n"),
    ),
    Case(
        "train-svae-features-not-a-features-dir",
        ("train", "svae", "--data", "features:{tmp}/plain"),
        "--data features:{tmp}/plain: no feature manifest there ({tmp}/plain/manifest.json is "
        "missing)",
        setup=write("plain/notes.txt", "hello\n"),
    ),
    Case(
        "train-svae-features-manifest-array",
        ("train", "svae", "--data", FEATURES),
        "{tmp}/feat/manifest.json holds a JSON array; expected a JSON object",
        setup=features("[1]"),
    ),
    Case(
        "train-svae-features-manifest-not-json",
        ("train", "svae", "--data", FEATURES),
        "{tmp}/feat/manifest.json is not valid JSON",
        setup=features("{no"),
    ),
    Case(
        "train-svae-features-manifest-no-host",
        ("train", "svae", "--data", FEATURES),
        "{tmp}/feat/manifest.json has no 'host' object; expected the manifest of",
        setup=features(manifest(host=None)),
    ),
    Case(
        "train-svae-features-manifest-no-hidden-size",
        ("train", "svae", "--data", FEATURES),
        "{tmp}/feat/manifest.json lacks host.hidden_size",
        setup=features(manifest(host={"name": "x"})),
    ),
    Case(
        "train-svae-features-no-validation-shards",
        ("train", "svae", "--data", FEATURES),
        "no validation shards ({tmp}/feat/validation is missing)",
        setup=no_validation_shards,
    ),
    Case(
        "train-svae-features-wrong-width",
        ("train", "svae", "--data", FEATURES),
        "train vectors have 8 dims and the statistics 8, but the manifest's host has hidden "
        "size 384",
        setup=features(manifest(hidden=384)),
    ),
    setting(SVAE, "model.nope=1", "unknown key 'model.nope'", "unknown-model-key"),
    setting(SVAE, "train.nope=1", "unknown key 'train.nope'", "unknown-train-key"),
    setting(SVAE, "train.steps", f"--set {TWO_FIELDS}, got 'train.steps'", "no-equals"),
    setting(SVAE, "train.steps=0", "train.steps must be >= 1, got 0", "steps-0"),
    setting(SVAE, "train.steps=x", "--set train.steps: expected a whole number", "steps-x"),
    setting(SVAE, "train.lr=nan", "--set train.lr: expected a finite number", "lr-nan"),
    setting(SVAE, "train.schedule=linear", "train.schedule must be onecycle", "schedule"),
    setting(SVAE, "model.ps=3", "divisible by geo.ps=3", "ps-3"),
    Case(
        "train-svae-text-corpus-missing",
        ("train", "svae", "--data", "text:file:{tmp}/missing.txt"),
        "corpus file not found",
    ),
    Case(
        "train-svae-text-corpus-too-short",
        ("train", "svae", "--data", "text:file:{tmp}/short.txt"),
        "fewer than one 768-byte image",
        setup=write("short.txt", "one short line of text\n"),
    ),
    Case(
        "train-svae-workers-not-dividing-batch",
        (*SVAE, "--workers", "3"),
        "train.batch_size 64 must divide by --workers 3",
    ),
    Case(
        "train-svae-data-dir-under-a-file",
        (*SVAE, "--data-dir", "{tmp}/afile/data"),
        "--data-dir {tmp}/afile/data lies under {tmp}/afile, which is a regular file",
        setup=write("afile", "x\n"),
    ),
    Case(
        "train-svae-resume-nothing-started",
        (*SVAE, "--resume"),
        "--resume: no SVAE run under {tmp}/data/ray_results has a checkpoint",
    ),
    Case("train-svae-run-in-use", SVAE, "already exists", setup=started(*SVAE)),
    Case(
        "train-svae-resume-of-another-config",
        (*SVAE, "--resume"),
        "has no checkpoint to resume from",
        setup=started(*SVAE, "--set", "train.seed=1"),
    ),
]

TRAIN_CASES = [
    with_corpus(c)
    for c in TRAIN_FLAG_CASES
    + TRAIN_SET_CASES
    + TRAIN_CORPUS_CASES
    + TRAIN_PATH_CASES
    + TRAIN_RUN_CASES
]
CASES = TRAIN_CASES + SVAE_CASES


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_train_bad_input(case, request, tmp_path):
    if getattr(case.setup, "needs_source", False):
        source = request.getfixturevalue("source")
        case = dataclasses.replace(case, setup=functools.partial(case.setup, source))
    tmp = tmp_path.resolve()
    case = dataclasses.replace(case, expect=case.expect.replace("{tmp}", str(tmp)))
    check_case(case, " ".join(case.argv[:2]), tmp)


def test_case_ids_are_unique():
    assert len({c.id for c in CASES}) == len(CASES)
