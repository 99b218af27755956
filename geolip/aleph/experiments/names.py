"""The controller contrast's closed vocabularies, importable without torch (the CLI's choices)."""

from __future__ import annotations

OPS = ("permute", "randomize", "rotate", "signflip")
"""Codebook ablations (spec §10.1): permute rows, re-draw them, rotate all, flip signs."""
SCOPES = ("all", "routing", "head")
"""Which codebook readers see the ablation: everyone, the hub only, or the bank head only."""
