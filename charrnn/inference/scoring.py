"""Scoring text under a model: loss in nats per token, bits per character and perplexity.

Bits per character are total bits over the characters of the scored text, so a word-level model and
a character-level model of the same text can be compared directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

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
# Targets scored side by side at most (the --batch-size streams of one window): a text longer than this
# is scored window after window, so that memory holds a window of ids, never the whole text.
WINDOW_TOKENS = 1 << 21


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


def _score_window(
    params: network.Params, config: ModelConfig, ids: np.ndarray, length: int, token_lengths: np.ndarray,
    kernels: Kernels, on_progress: Callable[[int], None],
) -> tuple[float, int]:
    """(total nats, characters) of the targets ids[1:], cut into streams of ``length`` targets (the last
    may be shorter) scored side by side, each from a zero state. ``on_progress(n)``: n targets done."""
    count = len(ids) - 1
    batch = -(-count // length)  # stream j scores targets j·length ... (j + 1)·length − 1
    # Per position, forward-only work keeps the logits (V values) and every layer's cell cache (at
    # most about 8·H values for an LSTM); the chunk of steps is cut so that both stay bounded.
    width = max(config.vocab_size, 8 * config.hidden_size * config.num_layers)
    chunk = max(1, min(length, _LOGITS_PER_CHUNK // (batch * width)))
    hidden = network.initial_hidden(config, batch)  # carried from chunk to chunk of each stream
    stream_starts = np.arange(batch)[:, None] * length
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
        on_progress(min(count, batch * min(start + chunk, length)))
    if (token_lengths == 1).all():
        characters = count
    else:
        characters = sum(int(token_lengths[ids[i + 1 : i + 1 + (1 << 20)]].sum()) for i in range(0, count, 1 << 20))
    return total_nats, characters


def score_id_blocks(
    params: network.Params,
    config: ModelConfig,
    blocks: Iterable[np.ndarray],
    token_lengths: np.ndarray,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_streams: Callable[[int], None] = lambda streams: None,
    on_progress: Callable[[int], None] = lambda done: None,
) -> Score:
    """Score every token after the first of the text whose ids (N,) arrive in ``blocks``, in order.

    For speed the text is cut into streams run ``batch_size`` side by side, each from a zero state, so
    the first tokens of each stream see less context than they would in one long pass. A text that
    fits in one window (B streams of at most WINDOW_TOKENS // B targets) is cut into B equal streams;
    a longer one into streams of WINDOW_TOKENS // B, scored B at a time, window after window. So at
    most a window of ids and one block are held, however long the text, and the score depends on the
    text alone, not on how it was cut into blocks: scoring a file as it is read equals scoring it
    whole (``score_ids``).

    ``token_lengths`` (V,) gives the characters of each token, for bits per character; ``kernels`` runs
    the cells and the cross-entropy (backend.py). ``on_streams(n)`` hears how many streams run side by
    side before the first is scored (so that a caller can refuse what memory cannot hold);
    ``on_progress(n)`` how many targets have been scored.
    """
    longest = max(1, WINDOW_TOKENS // batch_size)
    window = batch_size * longest  # the targets of a full window
    buffer: np.ndarray = np.zeros(0, dtype=np.int64)
    scored = characters = 0
    total_nats, first = 0.0, True

    def advance(done: int) -> None:
        on_progress(scored + done)

    for block in blocks:
        if not len(block):
            continue
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while len(buffer) > window + 1:  # the text goes on past a full window: score it
            if first:
                on_streams(batch_size)
                first = False
            nats, chars = _score_window(params, config, buffer[: window + 1], longest, token_lengths, kernels,
                                        advance)
            total_nats, characters, scored = total_nats + nats, characters + chars, scored + window
            buffer = buffer[window:]  # its last token is the first input of the next window
    count = len(buffer) - 1
    if count >= 1:
        length = -(-count // batch_size) if first else longest
        if first:
            on_streams(-(-count // length))
        nats, chars = _score_window(params, config, buffer, length, token_lengths, kernels, advance)
        total_nats, characters, scored = total_nats + nats, characters + chars, scored + count
    return Score(scored, characters, total_nats)


def score_ids(
    params: network.Params,
    config: ModelConfig,
    ids: np.ndarray,
    token_lengths: np.ndarray,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_progress: Progress = lambda done, total: None,
) -> Score:
    """Score every token of ``ids`` (N,) after the first, as ``score_id_blocks`` does.

    ``on_progress(done, total)`` hears how many of the N − 1 targets have been scored.
    """
    count = len(ids) - 1
    return score_id_blocks(params, config, [ids], token_lengths, batch_size, kernels,
                           on_progress=lambda done: on_progress(done, count))


def score_chunks(
    params: network.Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    chunks: Iterable[str],
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_streams: Callable[[int], None] = lambda streams: None,
) -> Score:
    """Score text arriving in ``chunks`` (read from a file as it is scored, so that its length does not
    matter), exactly as ``score_text`` scores it whole; tokens outside the vocabulary are left out and
    counted in ``tokens_unknown``.

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    counts = {"known": 0, "unknown": 0}

    def known_ids() -> Iterator[np.ndarray]:
        for ids, unknown in tokenizer.encode_chunks(chunks):
            counts["known"] += len(ids)
            counts["unknown"] += unknown
            yield ids

    score = score_id_blocks(params, config, known_ids(), tokenizer.token_lengths(), batch_size, kernels, on_streams)
    if counts["known"] < 2:
        raise VocabularyError(
            f"none of the text can be scored: it has {counts['known']} token(s) in the model's vocabulary "
            f"and {counts['unknown']} outside it"
        )
    return Score(score.tokens_scored, score.characters_scored, score.total_nats, counts["unknown"])


def score_text(
    params: network.Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    text: str,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
) -> Score:
    """Score ``text``; tokens outside the vocabulary are left out and counted in ``tokens_unknown``.

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    return score_chunks(params, config, tokenizer, [text], batch_size, kernels)
