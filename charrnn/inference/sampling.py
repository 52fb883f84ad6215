"""Drawing token ids from a trained model, one step at a time, for several streams at once.

This module knows ids and probabilities only; turning ids into text is the tokenizer's job.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np

from charrnn.model import network
from charrnn.model.backend import NUMPY, Kernels
from charrnn.config import ModelConfig, SampleConfig


def next_token_distribution(logits: np.ndarray, temperature: float, top_k: int | None) -> np.ndarray:
    """Probabilities (S, V) of the next token from ``logits`` (S, V), in float64.

    p ∝ exp((z − max z) / temperature); with ``top_k``, all but the k largest logits of each row get
    p = 0. ``temperature`` > 0 may be as small as the smallest normal float64.
    """
    scaled = logits.astype(np.float64)
    # Shift before dividing: every value is then ≤ 0 with the largest exactly 0, so a tiny temperature
    # can only push the others towards −inf (probability 0), which is the greedy limit it stands for,
    # and never overflow to +inf (which made NaN probabilities). The overflow to −inf is that limit.
    scaled -= scaled.max(axis=1, keepdims=True)
    with np.errstate(over="ignore"):
        scaled /= temperature
    vocab = scaled.shape[1]
    if top_k is not None and top_k < vocab:
        kth_largest = np.partition(scaled, vocab - top_k, axis=1)[:, vocab - top_k, None]
        scaled[scaled < kth_largest] = -np.inf
    np.exp(scaled, out=scaled)
    scaled /= scaled.sum(axis=1, keepdims=True)
    return scaled


def choose(probs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One id per row of ``probs`` (S, V), drawn by inverting each row's cumulative distribution."""
    cumulative = np.cumsum(probs, axis=1)
    draws = rng.random((probs.shape[0], 1)) * cumulative[:, -1:]
    ids = (cumulative <= draws).sum(axis=1)
    return np.minimum(ids, probs.shape[1] - 1)


def banned_ids(unknown_id: Optional[int], allow_unknown: bool = False) -> tuple[int, ...]:
    """The ids sampling must never emit: the unknown-token marker of a --max-vocab model, unless allowed.

    The marker stands for many rare tokens at once; emitting it would print ``<unk>`` into the text.
    """
    return () if unknown_id is None or allow_unknown else (unknown_id,)


def pick_next(
    logits: np.ndarray, config: SampleConfig, rng: np.random.Generator, banned: Sequence[int] = ()
) -> np.ndarray:
    """The next id (S,) for each stream, by argmax or by sampling as ``config`` says.

    ``banned`` ids (such as the unknown-token marker) are never chosen.
    """
    if len(banned):
        logits = logits.copy()
        logits[:, list(banned)] = -np.inf
    if config.is_greedy:
        return np.argmax(logits, axis=1)
    return choose(next_token_distribution(logits, config.temperature, config.top_k), rng)


def generate(
    params: network.Params,
    model_config: ModelConfig,
    prime_ids: np.ndarray,
    config: SampleConfig,
    rng: np.random.Generator,
    banned: Sequence[int] = (),
    kernels: Kernels = NUMPY,
) -> Iterator[np.ndarray]:
    """Yield ``config.length`` arrays of shape (S,): the ids generated at each step, S = num_samples.

    ``prime_ids`` (P,), P ≥ 1, is fed to every stream first to set the state; the first yielded ids
    are the model's continuation of it. All S streams advance together as one batch. ``banned`` ids
    are never generated. ``kernels`` runs the cells (backend.py).
    """
    num_streams = config.num_samples
    hidden = network.initial_hidden(model_config, num_streams)
    prime = np.repeat(np.asarray(prime_ids).reshape(-1, 1), num_streams, axis=1)  # (P, S)
    logits, hidden = network.step(params, model_config, prime, hidden, kernels)
    for position in range(config.length):
        ids = pick_next(logits, config, rng, banned)
        yield ids
        if position + 1 < config.length:
            logits, hidden = network.step(params, model_config, ids, hidden, kernels)
