"""Streaming generation with a constant-memory hub state."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from geolip.aleph.heads import BankContext
from geolip.aleph.model import AlephLM


@torch.no_grad()
def sample_trigram(
    model: AlephLM,
    h: torch.Tensor,
    generator: torch.Generator,
    temperature: float = 1.0,
    ctx: BankContext | None = None,
) -> torch.Tensor:
    """Draw the next trigram from the model's full distribution. h: [B, d] -> [B, 3] int64.

    Exact for both mixtures: choose the bank with probability g, else the tail (for ``switch``
    the tail is conditioned on leaving the bank, by rejection). ``temperature`` sharpens the tail
    bytes and the bank distribution; the gate is left as trained. ``ctx``: a precomputed
    ``model.bank_context()``, so a generation loop scores the bank features once, not per token.
    """
    tail = torch.softmax(model.tail(h) / temperature, dim=-1)  # [B, 3, 256]

    def draw_tail() -> torch.Tensor:
        return torch.multinomial(tail.reshape(-1, 256), 1, generator=generator).view(-1, 3)

    x = draw_tail()
    if model.cfg.head.kind == "byte":
        return x
    ctx = ctx if ctx is not None else model.bank_context()
    gate = torch.sigmoid(model.gate(h).squeeze(-1).float())
    use_bank = torch.rand(gate.shape, generator=generator) < gate.cpu()
    log_q = model.head.all_log_q(h, ctx) / temperature
    j = torch.multinomial(torch.softmax(log_q, -1), 1, generator=generator).squeeze(-1)
    from_bank = model.bank.trigrams[j]
    if model.cfg.head.mixture == "switch":
        for _ in range(64):  # tail mass outside the bank is ≥ 1e-6 by construction
            redo = model.bank.lookup(x) >= 0
            if not bool(redo.any()):
                break
            x = torch.where(redo.unsqueeze(-1), draw_tail(), x)
    return torch.where(use_bank.to(x.device).unsqueeze(-1), from_bank, x)


def _pad_prompt(prompt: bytes) -> bytes:
    # Trigram framing needs whole trigrams; left-pad with newlines (a document boundary).
    return b"\n" * ((-len(prompt)) % 3) + prompt


def stream(
    model: AlephLM,
    prompt: bytes,
    n_bytes: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    allow_long_prompt: bool | None = None,
) -> Iterator[bytes]:
    """Continue ``prompt`` by ``n_bytes`` bytes, one trigram at a time, as an iterator.

    Yields each sampled trigram's 3 bytes as it is drawn (the last one cut so the total is
    exactly ``max(n_bytes, 0)``); nothing is kept between chunks but the hub state (the per-layer
    ``M``/``z`` of ``model.step``, fixed shapes) and the last hidden state ``h: [1, d]``, so
    memory stays constant however long the output. Positions restart every T trigrams with the
    hub state carried (as in streamed training).

    The checks and the prompt's prefill (``[1, ceil(len/3), 3]`` trigrams, segment by segment)
    run when ``stream`` is called, so a prompt longer than the position table of a model trained
    without streaming (``n_segments == 1``) is a ``ValueError`` here, not at the first chunk.
    """
    model.eval()
    cfg, dev = model.cfg, next(model.parameters()).device
    data = _pad_prompt(prompt or b"\n\n\n")
    tri = torch.tensor(list(data), dtype=torch.long, device=dev).view(1, -1, 3)  # [1, n, 3]
    T, n = cfg.seq_trigrams, tri.shape[1]
    streams = cfg.n_segments > 1 if allow_long_prompt is None else allow_long_prompt
    if n > T and not streams:
        raise ValueError(
            f"prompt is {n} trigrams ({len(prompt)} bytes) but the position table holds {T} "
            f"trigrams ({3 * T} bytes) and this model was trained without streaming; shorten it"
        )
    state, h = None, None
    with torch.no_grad():
        for s0 in range(0, n, T):  # prefill segment by segment
            hs, state, _ = model.backbone(tri[:, s0 : s0 + T], state, pos0=0)
            h = hs[:, -1]  # [1, d]
    return _decode(model, h, state, n % T or T, n_bytes, temperature, seed)


@torch.no_grad()
def _decode(
    model: AlephLM,
    h: torch.Tensor,
    state,
    pos: int,
    n_bytes: int,
    temperature: float,
    seed: int,
) -> Iterator[bytes]:
    """The sampling loop of ``stream``: h ``[1, d]`` and ``state`` after the prompt; ``pos`` the
    position of the next trigram in its segment (1..T). Yields ``bytes`` of length 3 (<= 3 last)."""
    cfg, T = model.cfg, model.cfg.seq_trigrams
    gen = torch.Generator().manual_seed(seed)
    ctx = model.bank_context() if cfg.head.kind != "byte" else None
    left = n_bytes
    while left > 0:
        nxt = sample_trigram(model, h, gen, temperature, ctx)  # [1, 3]
        chunk = bytes(nxt[0].tolist())[:left]
        left -= len(chunk)
        yield chunk
        if left <= 0:
            return
        if pos == T:  # segment rollover: positions restart, the state carries the past
            pos = 0
        h, state = model.step(nxt, pos, state, inplace=True)  # the loop owns the state
        pos += 1


def generate(
    model: AlephLM,
    prompt: bytes,
    n_bytes: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    allow_long_prompt: bool | None = None,
) -> bytes:
    """Continue ``prompt`` by ``n_bytes`` bytes: ``b"".join(stream(...))`` (same arguments, same
    bytes for the same seed), for callers that want the whole text at once."""
    chunks = stream(
        model,
        prompt,
        n_bytes,
        temperature=temperature,
        seed=seed,
        allow_long_prompt=allow_long_prompt,
    )
    return b"".join(chunks)
