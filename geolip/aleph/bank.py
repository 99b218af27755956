"""The trigram bank: candidate next-trigrams as *data*, never as parameters.

A bank is ``N`` unique byte trigrams ``[N, 3]`` (uint8) plus a log prior ``ρ: [N]``. Heads compute
candidate features from the bytes alone, so any bank can be plugged into a trained model (bank
swap). Files are safetensors (``trigrams``, ``log_prior``) with JSON provenance in the metadata;
the atlas's bank builder writes the same format.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


class BankError(ValueError):
    """A bank file or array is invalid; the message names it and what was expected."""


def trigram_codes(tri: torch.Tensor) -> torch.Tensor:
    """``code = 65536·b1 + 256·b2 + b3`` for [..., 3] byte triples -> [...] int64."""
    t = tri.long()
    return t[..., 0] * 65536 + t[..., 1] * 256 + t[..., 2]


@dataclass
class TrigramBank:
    """Unique trigrams ``trigrams: [N, 3]`` (int64 on device for gathers) and ``log_prior: [N]``."""

    trigrams: torch.Tensor
    log_prior: torch.Tensor
    provenance: dict
    source: str = field(default="bank", repr=False, compare=False)
    """Names the bank in error messages (a file path when loaded)."""

    def __post_init__(self) -> None:
        check_rows(self.trigrams, self.source)
        if self.log_prior.shape != (self.trigrams.shape[0],):
            raise BankError(
                f"{self.source}: log_prior must have shape [{self.trigrams.shape[0]}], "
                f"got {tuple(self.log_prior.shape)}"
            )
        self.trigrams = self.trigrams.long()
        self.log_prior = self.log_prior.float()
        # The lookup table is the sorted codes; equal neighbours in it are duplicate rows.
        self._sorted_codes, self._order = torch.sort(trigram_codes(self.trigrams))
        dup = int((self._sorted_codes[1:] == self._sorted_codes[:-1]).sum())
        if dup:
            raise BankError(f"{self.source}: trigrams must be unique, found {dup} duplicate rows")

    @property
    def size(self) -> int:
        return self.trigrams.shape[0]

    def to(self, device) -> TrigramBank:
        return TrigramBank(
            self.trigrams.to(device), self.log_prior.to(device), self.provenance, self.source
        )

    def lookup(self, tri: torch.Tensor) -> torch.Tensor:
        """Bank index of each trigram, −1 when out of bank. tri: [..., 3] -> [...] int64."""
        codes = trigram_codes(tri)
        pos = torch.searchsorted(self._sorted_codes, codes).clamp_max(self.size - 1)
        hit = self._sorted_codes[pos] == codes
        return torch.where(hit, self._order[pos], torch.full_like(pos, -1))

    def fingerprint(self) -> str:
        """Content hash (rows and prior), used to check that a checkpoint's bank matches."""
        h = hashlib.sha256(self.trigrams.to(torch.uint8).cpu().numpy().tobytes())
        h.update(self.log_prior.cpu().numpy().astype(np.float32).tobytes())
        return h.hexdigest()[:16]


def check_rows(tri: torch.Tensor, name: str) -> None:
    """Rows must be [N, 3], N ≥ 1, with values in 0..255 (uniqueness: see TrigramBank)."""
    if tri.ndim != 2 or tri.shape[1] != 3 or tri.shape[0] < 1:
        raise BankError(f"{name}: trigrams must have shape [N>=1, 3], got {tuple(tri.shape)}")
    t = tri.long()
    if int(t.min()) < 0 or int(t.max()) > 255:
        raise BankError(
            f"{name}: trigram bytes must lie in 0..255, got range {int(t.min())}..{int(t.max())}"
        )


def bank_from_bytes(
    data: bytes | np.ndarray, size: int, provenance: dict | None = None
) -> TrigramBank:
    """Top-``size`` aligned trigrams of a byte stream by count, ``ρ = log`` normalised count.

    The atlas builds stratified banks (spec §4.2); this is the plain frequency bank used when no
    atlas is at hand (tests, the quick demo). Use training bytes only.
    """
    arr = (
        np.frombuffer(data, dtype=np.uint8)
        if isinstance(data, bytes)
        else np.asarray(data, np.uint8)
    )
    n = len(arr) // 3
    if n < 1:
        raise BankError("bank_from_bytes: need at least 3 bytes of training data")
    tri = arr[: 3 * n].reshape(n, 3).astype(np.int64)
    codes = tri[:, 0] * 65536 + tri[:, 1] * 256 + tri[:, 2]
    uniq, counts = np.unique(codes, return_counts=True)
    # Stable order: by count desc, then code asc, so equal inputs give identical banks.
    order = np.lexsort((uniq, -counts))[:size]
    top, cnt = uniq[order], counts[order].astype(np.float64)
    rows = np.stack([top // 65536, (top // 256) % 256, top % 256], axis=1)
    prior = np.log(cnt / cnt.sum())
    prov = {"source": "bank_from_bytes", "n_trigrams_seen": int(n), "requested": int(size)}
    prov.update(provenance or {})
    return TrigramBank(torch.from_numpy(rows), torch.from_numpy(prior).float(), prov)


def save_bank(bank: TrigramBank, path: str | os.PathLike) -> Path:
    """Write atomically: a temporary file renamed into place."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    arrays = {
        "trigrams": bank.trigrams.to(torch.uint8).cpu().numpy(),
        "log_prior": bank.log_prior.float().cpu().numpy(),
    }
    save_file(arrays, str(tmp), metadata={"provenance": json.dumps(bank.provenance)})
    os.replace(tmp, path)
    return path


def load_bank(path: str | os.PathLike) -> TrigramBank:
    """Read and validate a bank file (no pickle: safetensors + JSON metadata)."""
    path = Path(path)
    if not path.is_file():
        raise BankError(f"bank file {path} does not exist")
    try:
        arrays = load_file(str(path))
        with safe_open(str(path), framework="numpy") as fh:
            meta = fh.metadata() or {}
    except Exception as exc:  # safetensors raises several types on corrupt headers
        raise BankError(f"bank file {path} is not a readable safetensors bank: {exc}") from exc
    if "trigrams" not in arrays or "log_prior" not in arrays:
        raise BankError(
            f"bank file {path} must hold 'trigrams' and 'log_prior', has {sorted(arrays)}"
        )
    tri = torch.from_numpy(arrays["trigrams"].astype(np.int64))
    prior = torch.from_numpy(arrays["log_prior"].astype(np.float32))
    try:
        prov = json.loads(meta.get("provenance", "{}"))
    except json.JSONDecodeError as exc:
        raise BankError(f"bank file {path}: provenance metadata is not JSON: {exc}") from exc
    return TrigramBank(tri, prior, prov, source=f"bank file {path}")
