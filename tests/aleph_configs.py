"""Tiny AlephLM configs for the tests, by the head names the model card uses.

``pmix8`` and ``apmix_free`` are the card's variants of the pmix and apmix heads (J = 8; the
index-bound apmix mode); every other name is a ``model.head.kind``. Changes take dotted paths,
or ``__`` for the dots as keywords (``codebook__preservation="div"``).
"""

from __future__ import annotations

from geolip.aleph.config import AlephConfig, AlephRunConfig
from geolip.aleph.presets import tiny, with_head
from geolip.config import apply_changes

VARIANTS = {
    "byte": ("byte", {}),
    "kernel": ("kernel", {}),
    "pmix": ("pmix", {}),
    "pmix8": ("pmix", {"head.n_pointers": 8}),
    "apmix": ("apmix", {}),
    "apmix_free": ("apmix", {"head.apmix.mode": "free"}),
}
HEAD_NAMES = tuple(VARIANTS)


def tiny_run(head: str = "byte", **changes) -> AlephRunConfig:
    """The tiny preset with the head ``head`` and model ``changes``."""
    kind, extra = VARIANTS[head]
    run = with_head(tiny(), kind)
    keyed = {f"model.{k}": v for k, v in extra.items()}
    keyed.update({f"model.{k.replace('__', '.')}": v for k, v in changes.items()})
    return apply_changes(run, keyed)


def tiny_cfg(head: str = "byte", **changes) -> AlephConfig:
    """The tiny preset's AlephConfig with the head ``head`` and ``changes``."""
    return tiny_run(head, **changes).model
