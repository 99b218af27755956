"""Where an AlephLM run's bank comes from: ``--bank FILE``, the donor's, or cut from the corpus
(its stratified atlas by default, ``pipelines.atlas.corpus_atlas``; or the train side's top-N
trigram frequencies with ``--bank-source frequency``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geolip.aleph.bank import TrigramBank, bank_from_bytes, load_bank
from geolip.aleph.model import AlephLM
from pipelines.atlas.corpus_atlas import ensure_corpus_bank
from pipelines.byte_shards import ByteShards, read_side
from pipelines.errors import GeolipError

if TYPE_CHECKING:
    from pipelines.aleph.job import TrainJob


def bank_file(path: str) -> TrigramBank:
    """The bank of ``--bank PATH``; a missing or unreadable file names the flag."""
    try:
        return load_bank(Path(path).expanduser().resolve())
    except ValueError as exc:  # BankError
        raise GeolipError(f"--bank: {exc}") from exc


def resolve_bank(
    job: TrainJob, donor: AlephLM | None, shards: ByteShards
) -> tuple[TrigramBank | None, str | None]:
    """``(bank, where it was cut)``: ``--bank FILE``, else the donor's, else cut from the
    corpus' atlas (or, with ``bank_source="frequency"``, from the train shards)."""
    if not job.run.model.uses_bank:
        return None, None
    if job.bank:
        return bank_file(job.bank), None
    if donor is not None and donor.bank is not None:
        return donor.bank, None
    size = job.run.train.bank_size
    if job.bank_source == "frequency":
        return train_bank(shards, job.corpus, size), None
    path = ensure_corpus_bank(job.corpus, job.ctx.data_dir, shards, size)
    return load_bank(path), f"{path} (cut from the corpus' atlas)"


def train_bank(shards: ByteShards, corpus: str, size: int) -> TrigramBank:
    """The top-``size`` trigrams of the corpus' train side (a bank cut from the byte shards)."""
    train = read_side(shards, "train").tobytes()
    return bank_from_bytes(
        train, size, {"source": "frequency", "corpus": corpus, "split": "train", "cut": "top-N"}
    )
