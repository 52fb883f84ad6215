"""Scoring text under a model: loss in nats per token, bits per character and perplexity.

Bits per character are total bits over the characters of the scored text, so a word-level model and
a character-level model of the same text can be compared directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Optional

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


def _score_window(
    params: network.Params,
    config: ModelConfig,
    ids: np.ndarray,
    context: int,
    length: int,
    warmup: int,
    token_lengths: np.ndarray,
    kernels: Kernels,
    on_progress: Callable[[int], None],
    share: tuple[int, int] = (0, 1),
) -> tuple[float, int, int]:
    """(total nats, characters, targets) of the targets ids[context + 1:], cut into streams of ``length``
    targets (the last may be shorter) scored side by side. ``on_progress(n)``: n targets done.
    ``share`` (k, n): only the k-th of n contiguous parts of the streams (``score_id_blocks``).

    Each stream first reads the ``warmup`` tokens before its part, unscored. The first ``context`` ids
    are text before the window (already scored): with ``context`` ≥ ``warmup`` every stream warms up on
    real text; with ``context`` 0 the first stream has nothing before it and starts, as one pass over the
    text would, from the zero state.
    """
    count = len(ids) - 1 - context
    batch = -(-count // length)  # stream j scores targets j·length ... (j + 1)·length − 1
    part, parts = share
    first_stream, stop_stream = batch * part // parts, batch * (part + 1) // parts
    first_target, stop_target = first_stream * length, min(count, stop_stream * length)  # of the count
    if stop_stream <= first_stream:
        return 0.0, 0, 0
    # Per position, forward-only work keeps the logits (V values) and every layer's cell cache (at
    # most about 8·H values for an LSTM); the chunk of steps is cut so that both stay bounded.
    width = max(config.vocab_size, 8 * config.hidden_size * config.num_layers)
    chunk = max(1, _LOGITS_PER_CHUNK // (batch * width))
    hidden = network.initial_hidden(config, stop_stream - first_stream)  # carried from chunk to chunk of each stream
    # Stream j reads positions context + j·length − warmup ... and scores those from context + j·length on.
    stream_starts = context + np.arange(first_stream, stop_stream)[:, None] * length - warmup
    last_input = len(ids) - 2
    total_nats = 0.0
    start = 0
    while start < warmup + length:
        stop = min(start + chunk, warmup + length)
        if start < warmup < stop:
            stop = warmup  # the warm-up ends a window, so the first stream's state can be reset after it
        # Input positions of this window in every stream (B, w); those before the text or past its
        # end are padding.
        positions = stream_starts + np.arange(start, stop)[None, :]
        scored = (positions <= last_input) & (np.arange(start, stop)[None, :] >= warmup)
        positions = np.clip(positions, 0, last_input)
        inputs, targets = ids[positions], ids[positions + 1]  # gathered a window at a time, never all ids
        losses, hidden = network.token_losses(params, config, inputs.T, targets.T, hidden, kernels)
        if stop == warmup and context < warmup and first_stream == 0:
            for state in hidden.values():
                state[0] = 0.0  # the first stream read padding while the others warmed up
        total_nats += float(losses[scored.T].sum())
        on_progress(min(stop_target - first_target, (stop_stream - first_stream) * max(0, stop - warmup)))
        start = stop
    scored_ids = ids[context + first_target : context + stop_target + 1]  # the part's targets and the id before
    return total_nats, _characters(scored_ids, token_lengths), stop_target - first_target


def _characters(ids: np.ndarray, token_lengths: np.ndarray) -> int:
    """Characters of the scored tokens of ``ids``: all but the first."""
    count = len(ids) - 1
    if (token_lengths == 1).all():
        return count
    return sum(int(token_lengths[ids[i + 1 : i + 1 + (1 << 20)]].sum()) for i in range(0, count, 1 << 20))


def _bidirectional_window(
    params: network.Params,
    config: ModelConfig,
    ids: np.ndarray,
    batch_size: int,
    window: int,
    look_ahead: int,
    token_lengths: np.ndarray,
    kernels: Kernels,
    on_progress: Callable[[int], None],
    share: tuple[int, int] = (0, 1),
) -> tuple[float, int, int]:
    """(total nats, characters, targets) of −log p(x_t | x_<t, x_>t) for every token of ``ids`` after the
    first, read as the model trains; with ``share`` (k, n) only the k-th of n contiguous parts of the
    streams.

    The text is cut into ``batch_size`` streams of equal length (the few tokens left over form one more
    stream of their own), each read in windows of ``window`` targets: the forward state carried from
    window to window, the backward stack reading ``look_ahead`` tokens past each window (as many as the
    text has), so that the score is the training objective on held-out text (bidirectional.py).
    """
    count = len(ids) - 1
    batch = min(batch_size, count)
    length = count // batch
    streams = batch + (batch * length < count)
    part, parts = share
    first_stream, stop_stream = streams * part // parts, streams * (part + 1) // parts
    if stop_stream <= first_stream:
        return 0.0, 0, 0
    mine = np.arange(first_stream, min(stop_stream, batch))
    # (first target of each stream, targets per stream, first target of the run's last stream of all)
    runs = [(mine * length, length, (batch - 1) * length)]
    if stop_stream > batch:  # the leftover stream
        runs.append((np.array([batch * length]), count - batch * length, batch * length))
    first_target, stop_target = first_stream * length, count if stop_stream == streams else stop_stream * length
    total_nats, done = 0.0, 0
    for starts, run_length, last_start in runs:
        if not len(starts):
            continue
        hidden = network.initial_hidden(config, len(starts))
        for start in range(0, run_length, window):
            steps = min(window, run_length - start)
            positions = starts[:, None] + np.arange(start, start + steps)[None, :]  # targets − 1, (B, w)
            # The window's look-ahead is what the text has past its last stream's window, in a share too.
            last_target = last_start + start + steps
            ahead_count = min(look_ahead, count - last_target)
            ahead = ids[positions[:, -1:] + 2 + np.arange(ahead_count)[None, :]]  # (B, M)
            losses, hidden = bidirectional.token_losses(
                params, config, ids[positions].T, ids[positions + 1].T, hidden, kernels, ahead.T)
            total_nats += float(losses.sum())
            done += losses.size
            on_progress(done)
    return total_nats, _characters(ids[first_target : stop_target + 1], token_lengths), stop_target - first_target


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


def score_id_blocks(
    params: network.Params,
    config: ModelConfig,
    blocks: Iterable[np.ndarray],
    token_lengths: np.ndarray,
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_streams: Callable[[int], None] = lambda streams: None,
    on_progress: Callable[[int], None] = lambda done: None,
    window: int = 25,
    look_ahead: int = 0,
    warmup_tokens: int = WARMUP_TOKENS,
    share: tuple[int, int] = (0, 1),
) -> Score:
    """Score every token after the first of the text whose ids (N,) arrive in ``blocks``, in order.

    For speed the text is cut into streams run side by side. Each stream but the text's first is warmed
    up on the ``warmup_tokens`` tokens before its part, which it reads without scoring them: so every
    prediction sees at least that much of the text before it (or all of it), as in one pass over the
    whole text, and the score does not depend on ``batch_size`` beyond float rounding (the state of a
    trained RNN keeps next to nothing from further back; measured in docs/quality.md).

    A text that fits in one window (WINDOW_TOKENS targets) is cut into up to ``batch_size`` equal streams
    of at least ``warmup_tokens`` each; a longer one into streams of WINDOW_TOKENS // ``batch_size``,
    scored ``batch_size`` at a time, window after window, each window keeping the ``warmup_tokens``
    before it. So at most a window of ids and one block are held, however long the text, and the score
    depends on the text alone, not on how it was cut into blocks: scoring a file as it is read equals
    scoring it whole (``score_ids``).

    A bidirectional model predicts each token from the text on both sides of it instead, read in
    windows of ``window`` tokens with ``look_ahead`` tokens past each, as it was trained
    (``_bidirectional_window``, once per window of the text, no warm-up); its loss is not comparable
    with a one-directional model's.

    ``token_lengths`` (V,) gives the characters of each token, for bits per character; ``kernels`` runs
    the cells and the cross-entropy (backend.py). ``on_streams(n)`` hears how many streams run side by
    side before the first is scored (so that a caller can refuse what memory cannot hold);
    ``on_progress(n)`` how many targets have been scored.

    ``share`` (k, n) scores only the k-th of n contiguous parts of each window's streams, for n
    processes that share the work (training/distributed.py): the n parts' totals add up to the whole
    text's, each computed as in the whole.
    """
    warmup_tokens = 0 if config.bidirectional else warmup_tokens
    longest = max(1, WINDOW_TOKENS // batch_size)
    full = batch_size * longest  # the targets of a full window
    buffer: np.ndarray = np.zeros(0, dtype=np.int64)
    context = scored = characters = 0  # context: ids at the buffer's head that are warm-up text only
    total_nats, first = 0.0, True

    def advance(done: int) -> None:
        on_progress(scored + done)

    def score(ids: np.ndarray, length: int) -> tuple[float, int, int]:
        if config.bidirectional:
            return _bidirectional_window(params, config, ids, batch_size, window, look_ahead, token_lengths, kernels,
                                         advance, share)
        warmup = context if context else min(warmup_tokens, length * (-(-(len(ids) - 1) // length) - 1))
        return _score_window(params, config, ids, context, length, warmup, token_lengths, kernels, advance, share)

    for block in blocks:
        if not len(block):
            continue
        buffer = np.concatenate([buffer, block]) if len(buffer) else block
        while len(buffer) - context > full + 1:  # the text goes on past a full window: score it
            if first:
                on_streams(batch_size)
                first = False
            nats, chars, targets = score(buffer[: context + full + 1], longest)
            total_nats, characters, scored = total_nats + nats, characters + chars, scored + targets
            keep = min(warmup_tokens, context + full)
            buffer = buffer[context + full - keep :]  # the window's last target is the next one's first input
            context = keep
    count = len(buffer) - 1 - context
    if count >= 1:
        if first:  # the whole text in one window: equal streams, each at least warmup_tokens long
            batch = max(1, min(batch_size, count // max(1, warmup_tokens)))
            length = -(-count // batch)
            on_streams(-(-count // length))
        else:
            length = longest
        nats, chars, targets = score(buffer, length)
        total_nats, characters, scored = total_nats + nats, characters + chars, scored + targets
    return Score(scored, characters, total_nats)


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
    share: tuple[int, int] = (0, 1),
) -> Score:
    """Score every token of ``ids`` (N,) after the first, as ``score_id_blocks`` does (``share`` too).

    ``on_progress(done, total)`` hears how many of the N − 1 targets have been scored.
    """
    count = len(ids) - 1
    return score_id_blocks(params, config, [ids], token_lengths, batch_size, kernels,
                           on_progress=lambda done: on_progress(done, count), window=window, look_ahead=look_ahead,
                           warmup_tokens=warmup_tokens, share=share)


def score_chunks(
    params: network.Params,
    config: ModelConfig,
    tokenizer: Tokenizer,
    chunks: Iterable[str],
    batch_size: int = 32,
    kernels: Kernels = NUMPY,
    on_streams: Callable[[int], None] = lambda streams: None,
    window: int = 25,
    look_ahead: int = 0,
) -> Score:
    """Score text arriving in ``chunks`` (read from a file as it is scored, so that its length does not
    matter), exactly as ``score_text`` scores it whole; tokens outside the vocabulary are left out and
    counted in ``tokens_unknown``. A bidirectional model reads ``window``s with ``look_ahead`` (score_id_blocks).

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    counts = {"known": 0, "unknown": 0}

    def known_ids() -> Iterator[np.ndarray]:
        for ids, unknown in tokenizer.encode_chunks(chunks):
            counts["known"] += len(ids)
            counts["unknown"] += unknown
            yield ids

    score = score_id_blocks(params, config, known_ids(), tokenizer.token_lengths(), batch_size, kernels, on_streams,
                            window=window, look_ahead=look_ahead)
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
    window: int = 25,
    look_ahead: int = 0,
) -> Score:
    """Score ``text`` whole, as ``score_chunks`` scores it read in pieces; tokens outside the vocabulary are
    left out and counted in ``tokens_unknown``.

    Raises VocabularyError when fewer than two known tokens remain, so nothing can be scored.
    """
    return score_chunks(params, config, tokenizer, [text], batch_size, kernels, window=window, look_ahead=look_ahead)
