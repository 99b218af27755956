"""``check_corpus`` answers from the shards' manifest once they are built: a sweep's trials (and
every re-run) do not read the corpus again, and refuse a too-short side as a first run does."""

from __future__ import annotations

import pytest

import pipelines.aleph.job as aleph_job
from pipelines.aleph.job import TrainJob, check_corpus
from pipelines.byte_shards import build_byte_shards, built_byte_shards
from pipelines.errors import GeolipError
from pipelines.runtime import RunContext
from pipelines.scales import get_scale


def _job(tmp_path, text: str) -> TrainJob:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(text)
    ctx = RunContext.create("geolip-aleph", tmp_path / "data")
    run = get_scale("smoke").run_config("byte")
    return TrainJob(run=run, corpus=f"file:{corpus}", ctx=ctx)


def _unread(*args, **kwargs):
    raise AssertionError("the corpus was read")


def test_built_shards_answer_without_reading_the_corpus(tmp_path, monkeypatch):
    job = _job(tmp_path, "".join(f"line {i}: the cat sat on the mat.\n" for i in range(400)))
    assert built_byte_shards(job.corpus, job.ctx.data_dir) is None
    check_corpus(job)  # read: nothing built yet
    built = build_byte_shards(job.corpus, job.ctx.data_dir, progress=lambda s: None)
    assert built_byte_shards(job.corpus, job.ctx.data_dir) == built
    monkeypatch.setattr(aleph_job, "iter_split", _unread)
    check_corpus(job)


def test_a_short_side_is_refused_alike_from_the_corpus_and_from_its_shards(tmp_path, monkeypatch):
    job = _job(tmp_path, "the cat sat on the mat.\n" * 40)
    with pytest.raises(GeolipError) as read:
        check_corpus(job)
    build_byte_shards(job.corpus, job.ctx.data_dir, progress=lambda s: None)
    monkeypatch.setattr(aleph_job, "iter_split", _unread)
    with pytest.raises(GeolipError) as built:
        check_corpus(job)
    assert str(built.value) == str(read.value)
    assert "its validation split has 48 bytes, fewer than one window (99 bytes" in str(read.value)
