"""Scoring text under a model: loss in nats per token, bits per character and perplexity.

Bits per character are total bits over the characters of the scored text, so a word-level model and
a character-level model of the same text can be compared directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

# on_progress(tokens scored, tokens to score), called after each window of the text.
Progress = Callable[[int, int], None]

import numpy as np

from charrnn.model import fpu, network
from charrnn.model.backend import NUMPY, Kernels
from charrnn.config import ModelConfig
from charrnn.errors import VocabularyError
from charrnn.data.tokenizer import Tokenizer

# Logits held at once while scoring (elements); bounds memory for large vocabularies.
_LOGITS_PER_CHUNK = 4_000_000


@dataclass(frozen=True)
class Score:
    """Totals of a scored text; the rates are derived from them."""

    tokens_scored: int
    characters_scored: int
    total_nats: float
    tokens_unknown: int = 0  # tokens of the text outside the vocabulary, left out of the score

    @property
    def loss_nats(self) -> float:
        """Mean cross-entropy per scored token, in nats."""
        return self.total_nats / self.tokens_scored if self.tokens_scored else math.nan

    @property
    def bits_per_token(self) -> float:
        """Mean cross-entropy per scored token, in bits."""
        return self.loss_nats / math.log(2)

    @property
    def bits_per_char(self) -> float:
        """Total bits over the characters of the scored tokens."""
        return self.total_nats / math.log(2) / self.characters_scored if self.characters_scored else math.nan

    @property
    def perplexity(self) -> float:
        """exp(loss per token); infinite for a model that has diverged."""
        if not self.tokens_scored:
            return math.nan
        return math.exp(self.loss_nats) if self.loss_nats < 700 else math.inf

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, with the derived rates."""
        return {
            "tokens_scored": self.tokens_scored,
            "characters_scored": self.characters_scored,
            "tokens_unknown": self.tokens_unknown,
            "loss_nats": self.loss_nats,
            "bits_per_token": self.bits_per_token,
            "bits_per_char": self.bits_per_char,
            "perplexity": self.perplexity,
        }


def score_ids(
    params: network.Params,
    config: ModelConfig,
    ids: np.ndarray,
    token_lengths: np.ndarray,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_progress: Progress = lambda done, total: None,
    share: tuple[int, int] = (0, 1),
) -> Score:
    """Score every token of ``ids`` (N,) after the first, each predicted from all the text before it.

    For speed the text is cut into ``batch_size`` contiguous streams run side by side, each from a zero
    state, so the first tokens of each stream see less context than they would in one long pass.
    ``token_lengths`` (V,) gives the characters of each token, for bits per character. ``kernels``
    runs the cells and the cross-entropy (backend.py). ``on_progress`` hears how far scoring has got.

    ``share`` (k, n) scores only the k-th of n contiguous parts of the streams, for n processes that
    share the work (training/distributed.py): the n parts' totals add up to the whole text's.
    """
    count = len(ids) - 1
    if count < 1:
        return Score(0, 0, 0.0)
    batch = min(batch_size, count)
    length = -(-count // batch)  # ceil: stream j scores targets j·length ... (j + 1)·length − 1
    part, parts = share
    first_stream, stop_stream = batch * part // parts, batch * (part + 1) // parts
    first_target, stop_target = min(count, first_stream * length), min(count, stop_stream * length)
    if stop_target <= first_target:
        return Score(0, 0, 0.0)
    count_scored = stop_target - first_target
    batch = stop_stream - first_stream
    # Per position, forward-only work keeps the logits (V values) and every layer's cell cache (at
    # most about 8·H values for an LSTM); the chunk of steps is cut so that both stay bounded.
    width = max(config.vocab_size, 8 * config.hidden_size * config.num_layers)
    chunk = max(1, min(length, _LOGITS_PER_CHUNK // (batch * width)))
    hidden = network.initial_hidden(config, batch)
    stream_starts = np.arange(first_stream, stop_stream)[:, None] * length
    total_nats = 0.0
    for start in range(0, length, chunk):
        # Target positions of this window in every stream (B, w); the ones past the text are padding.
        positions = stream_starts + np.arange(start, min(start + chunk, length))[None, :]
        scored = positions < count
        positions = np.minimum(positions, count - 1)
        inputs, targets = ids[positions], ids[positions + 1]  # gathered a window at a time, never all ids
        with fpu.flushing():  # exp of very negative logits would otherwise crawl through subnormals
            losses, hidden = network.token_losses(params, config, inputs.T, targets.T, hidden, kernels)
        total_nats += float(losses[scored.T].sum())
        on_progress(min(count_scored, batch * min(start + chunk, length)), count_scored)
    if (token_lengths == 1).all():
        characters = count_scored
    else:
        characters = sum(int(token_lengths[ids[i + 1 : min(i + 1 + (1 << 20), stop_target + 1)]].sum())
                         for i in range(first_target, stop_target, 1 << 20))
    return Score(count_scored, characters, total_nats)


def score_text(
    params: network.Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    text: str,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_progress: Progress = lambda done, total: None,
) -> Score:
    """Score ``text``; tokens outside the vocabulary are left out and counted in ``tokens_unknown``.

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    ids, unknown = tokenizer.encode_known(text)
    if len(ids) < 2:
        raise VocabularyError(
            f"none of the text can be scored: it has {len(ids)} token(s) in the model's vocabulary "
            f"and {len(unknown)} outside it"
        )
    score = score_ids(params, config, ids, tokenizer.token_lengths(), batch_size, kernels, on_progress)
    return Score(score.tokens_scored, score.characters_scored, score.total_nats, len(unknown))
