"""Argument types of the AlephLM commands (``pipelines.aleph.cli``): each parses one flag's
value or refuses it with one line saying what was expected."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from geolip.aleph.experiments.names import OPS
from pipelines.cli import int_at_least

MAX_SAMPLE_BYTES = 10_000_000
"""The most bytes ``geolip aleph sample`` generates in one call (hours of decoding on a CPU)."""
# The experiment names the head once had on the command line, and what they are now.
FORMER_HEADS = {
    "pmix8": "--head pmix --set model.head.n_pointers=8",
    "apmix_free": "--head apmix --set model.head.apmix.mode=free",
}


def head_kind(value: str) -> str:
    """``--head``: a head kind; a former experiment name is refused with its spelling now."""
    if value in FORMER_HEADS:
        raise argparse.ArgumentTypeError(f"{value!r} is now spelled {FORMER_HEADS[value]}")
    return value


def int_at_least_because(low: int, why: str) -> Callable[[str], int]:
    """``int_at_least(low)`` whose refusal of a too-small number says why ``low`` is the
    minimum."""
    parse = int_at_least(low)

    def checked(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            return parse(text)  # refused as not a whole number
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low} ({why}), got {value}")
        return value

    checked.__name__ = parse.__name__
    return checked


def sample_bytes(text: str) -> int:
    """``--bytes``: a whole number in ``1..MAX_SAMPLE_BYTES``."""
    value = int_at_least(1)(text)
    if value > MAX_SAMPLE_BYTES:
        raise argparse.ArgumentTypeError(f"must be <= {MAX_SAMPLE_BYTES:,}, got {value:,}")
    return value


def temperature(text: str) -> float:
    """``--temperature``: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def utf8_text(text: str) -> str:
    """``--prompt``: text that is valid UTF-8 (argv bytes that are not arrive as surrogate
    escapes; they are refused with the first bad byte and its position)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError as exc:  # a lone surrogate that no argv byte makes
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8 (character {text[exc.start]!r} at position {exc.start})"
        ) from None
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise argparse.ArgumentTypeError(
            f"not valid UTF-8 (byte {raw[exc.start]:#04x} at position {exc.start})"
        ) from None
    return raw.decode("utf-8")


def ablation_ops(text: str) -> tuple[str, ...]:
    """``--ops``: a comma-separated list of known ablations (``OPS``), at least one."""
    ops = tuple(op.strip() for op in text.split(",") if op.strip())
    bad = [op for op in ops if op not in OPS]
    if bad or not ops:
        what = f"unknown ablation {bad[0]!r}" if bad else "no ablation given"
        raise argparse.ArgumentTypeError(f"{what}; valid ones: {', '.join(OPS)}")
    return ops
