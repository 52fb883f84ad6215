"""Scoring text under a model: loss in nats per token, bits per character and perplexity.

Bits per character are total bits over the characters of the scored text, so a word-level model and
a character-level model of the same text can be compared directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Optional

# on_progress(tokens scored, tokens to score), called after each window of the text.
Progress = Callable[[int, int], None]

import numpy as np

from charrnn.model import bidirectional, network
from charrnn.model.backend import NUMPY, Kernels
from charrnn.config import ModelConfig
from charrnn.errors import VocabularyError
from charrnn.data.tokenizer import Tokenizer

# Logits held at once while scoring (elements); bounds memory for large vocabularies.
_LOGITS_PER_CHUNK = 4_000_000
# Tokens each stream of a batched score reads before its part of the text, unscored (score_ids).
WARMUP_TOKENS = 500
# unknown_warning speaks up when at least this share of the text's tokens is outside the vocabulary.
UNKNOWN_WARNING_SHARE = 0.05


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

    @property
    def unknown_share(self) -> float:
        """The share of the text's tokens that were outside the vocabulary (and so not scored)."""
        total = self.tokens_unknown + (self.tokens_scored + 1 if self.tokens_scored else 0)
        return self.tokens_unknown / total if total else 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form, with the derived rates."""
        return {
            "tokens_scored": self.tokens_scored,
            "characters_scored": self.characters_scored,
            "tokens_unknown": self.tokens_unknown,
            "unknown_share": self.unknown_share,
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
    window: int = 25,
    look_ahead: int = 0,
    warmup_tokens: int = WARMUP_TOKENS,
) -> Score:
    """Score every token of ``ids`` (N,) after the first, each predicted from the text before it.

    For speed the text is cut into up to ``batch_size`` contiguous streams run side by side. Each
    stream but the first is warmed up first on the ``warmup_tokens`` tokens before its part, which it
    reads without scoring them: so every prediction sees at least that much of the text before it
    (or all of it), as it would in one pass over the whole text, and the score does not depend on
    ``batch_size`` beyond float rounding (the state of a trained RNN keeps next to nothing from
    further back; measured in docs/quality.md). Streams are at least ``warmup_tokens`` long, so
    warming up at most doubles the work. ``token_lengths`` (V,) gives the characters of each token,
    for bits per character. ``kernels`` runs the cells and the cross-entropy (backend.py).
    ``on_progress`` hears how far scoring has got.

    A bidirectional model predicts each token from the text on both sides of it instead, read in
    windows of ``window`` tokens with ``look_ahead`` tokens past each, as it was trained
    (``_bidirectional_nats``); its loss is not comparable with a one-directional model's.
    """
    count = len(ids) - 1
    if count < 1:
        return Score(0, 0, 0.0)
    if config.bidirectional:
        total_nats = _bidirectional_nats(params, config, ids, batch_size, window, look_ahead, kernels, on_progress)
        return Score(count, _characters(ids, token_lengths), total_nats)
    batch = max(1, min(batch_size, count // max(1, warmup_tokens)))
    length = -(-count // batch)  # ceil: stream j scores targets j·length ... (j + 1)·length − 1
    warmup = min(warmup_tokens, length * (batch - 1))  # nothing to warm up on for a single stream
    # Per position, forward-only work keeps the logits (V values) and every layer's cell cache (at
    # most about 8·H values for an LSTM); the chunk of steps is cut so that both stay bounded.
    width = max(config.vocab_size, 8 * config.hidden_size * config.num_layers)
    chunk = max(1, _LOGITS_PER_CHUNK // (batch * width))
    hidden = network.initial_hidden(config, batch)
    # Stream j reads positions j·length − warmup ... (j + 1)·length − 1 and scores those from j·length on;
    # the first stream has no text before it and starts, as one pass would, from the zero state.
    stream_starts = np.arange(batch)[:, None] * length - warmup
    total_nats = 0.0
    start = 0
    while start < warmup + length:
        stop = min(start + chunk, warmup + length)
        if start < warmup < stop:
            stop = warmup  # the warm-up ends a window, so the first stream's state can be reset after it
        # Input positions of this window in every stream (B, w); those before the text or past its
        # end are padding.
        positions = stream_starts + np.arange(start, stop)[None, :]
        scored = (positions < count) & (np.arange(start, stop)[None, :] >= warmup)
        positions = np.clip(positions, 0, count - 1)
        inputs, targets = ids[positions], ids[positions + 1]  # gathered a window at a time, never all ids
        losses, hidden = network.token_losses(params, config, inputs.T, targets.T, hidden, kernels)
        if stop == warmup:
            for state in hidden.values():
                state[0] = 0.0  # the first stream read padding while the others warmed up
        total_nats += float(losses[scored.T].sum())
        on_progress(min(count, batch * max(0, stop - warmup)), count)
        start = stop
    return Score(count, _characters(ids, token_lengths), total_nats)


def _characters(ids: np.ndarray, token_lengths: np.ndarray) -> int:
    """Characters of the scored tokens of ``ids``: all but the first."""
    count = len(ids) - 1
    if (token_lengths == 1).all():
        return count
    return sum(int(token_lengths[ids[i + 1 : i + 1 + (1 << 20)]].sum()) for i in range(0, count, 1 << 20))


def _bidirectional_nats(
    params: network.Params,
    config: ModelConfig,
    ids: np.ndarray,
    batch_size: int,
    window: int,
    look_ahead: int,
    kernels: Kernels,
    on_progress: Progress,
) -> float:
    """Total −log p(x_t | x_<t, x_>t) of every token of ``ids`` after the first, read as the model trains.

    The text is cut into ``batch_size`` streams of equal length (the few tokens left over form one more
    stream of their own), each read in windows of ``window`` targets: the forward state carried from
    window to window, the backward stack reading ``look_ahead`` tokens past each window (as many as the
    text has), so that the score is the training objective on held-out text (bidirectional.py).
    """
    count = len(ids) - 1
    batch = min(batch_size, count)
    length = count // batch
    runs = [(np.arange(batch) * length, length)]  # (first target of each stream, targets per stream)
    if batch * length < count:
        runs.append((np.array([batch * length]), count - batch * length))
    total_nats, done = 0.0, 0
    for starts, run_length in runs:
        hidden = network.initial_hidden(config, len(starts))
        for start in range(0, run_length, window):
            steps = min(window, run_length - start)
            positions = starts[:, None] + np.arange(start, start + steps)[None, :]  # targets − 1, (B, w)
            last_target = int(positions[-1, -1]) + 1
            ahead_count = min(look_ahead, count - last_target)
            ahead = ids[positions[:, -1:] + 2 + np.arange(ahead_count)[None, :]]  # (B, M)
            losses, hidden = bidirectional.token_losses(
                params, config, ids[positions].T, ids[positions + 1].T, hidden, kernels, ahead.T)
            total_nats += float(losses.sum())
            done += losses.size
            on_progress(done, count)
    return total_nats


def unknown_warning(score: Score) -> Optional[str]:
    """A warning when so much of the text was outside the vocabulary that the score flatters the model.

    Unknown tokens are left out, so text that is mostly unknown is scored on its few known tokens only:
    "hello world" under a Chinese model has perplexity 1.5 because only one of its 11 tokens counts.
    """
    if score.unknown_share < UNKNOWN_WARNING_SHARE:
        return None
    total = score.tokens_unknown + score.tokens_scored + (1 if score.tokens_scored else 0)
    return (f"{score.tokens_unknown:,} of the text's {total:,} tokens ({score.unknown_share:.0%}) are outside the "
            "model's vocabulary and left out: the score covers only the rest, and flatters the model on this text")


def score_text(
    params: network.Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    text: str,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_progress: Progress = lambda done, total: None,
    window: int = 25,
    look_ahead: int = 0,
) -> Score:
    """Score ``text`` (a bidirectional model in ``window``s with ``look_ahead``, see score_ids); tokens outside the vocabulary are left out and counted in ``tokens_unknown``.

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    ids, unknown = tokenizer.encode_known(text)
    if len(ids) < 2:
        raise VocabularyError(
            f"none of the text can be scored: it has {len(ids)} token(s) in the model's vocabulary "
            f"and {len(unknown)} outside it"
        )
    score = score_ids(params, config, ids, tokenizer.token_lengths(), batch_size, kernels, on_progress, window,
                      look_ahead)
    return Score(score.tokens_scored, score.characters_scored, score.total_nats, len(unknown))
