"""Filling the blanks of a text: which token is missing where ``_`` stands, from the text on both sides.

Two methods, chosen by the model (the result names the one used):

- **bidirectional**: a ``--bidirectional`` model gives p(x | text before, text after) directly
  (model/bidirectional.py): one pass of each stack, a softmax over the vocabulary.
- **whole-text**: a left-to-right model scores each candidate c by the probability of the whole text
  with c in the blank, p(left) · p(c | left) · p(right | left, c); p(left) is the same for every
  candidate, so P(c | left, right) ∝ p(c | left) · p(right | left, c). The candidates run as a batch of
  streams from the state after the left text, one stream each, through the right text. Only the
  ``max_candidates`` tokens most likely after the left text are scored (all of them if there are no
  more): the others would need the right text to make up for a left-context probability far below
  theirs. The share of p(· | left) the scored ones hold is reported (``coverage``).

Each text is one line: it is read as following a newline and followed by one (when the vocabulary has
the newline), as the lines of the corpus were, and no blank is filled with a newline or with the
unknown-token marker. Several blanks are filled jointly, most confident first: every blank not yet filled
is scored with the text up to the nearest other unfilled blank on each side (no context is read across
an unknown token), the one whose best candidate is the most probable is filled with it, and the rest are
scored again with it in place; a blank's candidates are those of the round that filled it.

Nothing here prints; the command (cli/fill_command.py) renders the results.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from charrnn.config import ModelConfig
from charrnn.data.tokenizer import Tokenizer
from charrnn.errors import CharRNNError, VocabularyError
from charrnn.model import bidirectional, network
from charrnn.model.backend import NUMPY, Kernels

BLANK = "_"
BIDIRECTIONAL, WHOLE_TEXT = "bidirectional", "whole-text"
# The whole-text method scores at most this many candidates per blank by default: the cost is
# candidates × right-hand tokens × H·V (the output layer of every stream), measured in docs/fill.md.
DEFAULT_CANDIDATES = 256
# Logits of the candidate streams held at once (elements), as in scoring.py.
_LOGITS_PER_CHUNK = 4_000_000
NEWLINE = "\n"


class FillError(CharRNNError):
    """A text that cannot be filled as given: no blank, or a run of blanks longer than the model reads."""


@dataclass(frozen=True)
class Candidate:
    """One token that could fill a blank, with its probability given the text around it."""

    token: str
    probability: float


@dataclass(frozen=True)
class Blank:
    """One filled blank: where it was, what filled it and what else could have."""

    offset: int  # character offset of the blank's marker in the text
    order: int  # 1 for the blank filled first, 2 for the next, ...
    token: str  # what filled it: the most probable candidate
    candidates: tuple[Candidate, ...]  # the most probable, best first (as many as asked for)
    scored: int  # candidates scored (the whole vocabulary for the bidirectional method)
    coverage: float  # the share of p(· | left) the scored candidates hold (whole-text method; else 1)
    left_tokens: int  # context read on each side (to the text's end or the next unfilled blank)
    right_tokens: int


@dataclass(frozen=True)
class Filled:
    """A text with every blank filled."""

    text: str  # as given
    filled: str  # the text with each blank's token in place of its marker
    blanks: tuple[Blank, ...]  # in the order they appear in the text
    unknown: tuple[str, ...] = ()  # tokens outside the vocabulary, read as the unknown-token marker


@dataclass(frozen=True)
class _Scores:
    """A blank's candidates scored: ids best first, their probabilities, how many, what share of p(·|left)."""

    ids: np.ndarray
    probabilities: np.ndarray
    coverage: float


class Filler:
    """Fills texts with one model: a bidirectional one, or a left-to-right one by whole-text scoring."""

    def __init__(
        self,
        params: network.Params,
        config: ModelConfig,
        tokenizer: Tokenizer,
        window: int,
        kernels: Kernels = NUMPY,
        max_candidates: Optional[int] = DEFAULT_CANDIDATES,
        top_k: int = 5,
        blank: str = BLANK,
    ) -> None:
        if not blank:
            raise FillError("the blank marker must not be empty; give --blank a string such as _")
        self.params, self.config, self.tokenizer, self.kernels = params, config, tokenizer, kernels
        self.window, self.top_k, self.blank = window, top_k, blank
        self.method = BIDIRECTIONAL if config.bidirectional else WHOLE_TEXT
        vocab = tokenizer.vocab
        self.newline = vocab.index(NEWLINE) if NEWLINE in vocab else None
        allowed = np.ones(len(vocab), dtype=bool)
        for banned in (self.newline, tokenizer.unknown_id):
            if banned is not None:
                allowed[banned] = False
        if not allowed.any():
            raise FillError("the model's vocabulary has no token that can fill a blank")
        self.allowed = allowed
        self.possible_tokens = int(allowed.sum())  # what a blank may hold: not a newline, not <unk>
        self.max_candidates = max_candidates

    # --- reading a text ----------------------------------------------------------------------------------

    def _segments(self, text: str) -> tuple[list[list[int]], list[int], list[str]]:
        """The token ids between the blanks (one list more than there are blanks), the character offset
        of every blank, and the tokens outside the vocabulary (read as <unk>, when the model has it)."""
        pieces = text.split(self.blank)
        offsets, position = [], 0
        for piece in pieces[:-1]:
            position += len(piece)
            offsets.append(position)
            position += len(self.blank)
        segments, unknown_all = [], []
        for index, piece in enumerate(pieces):
            ids, unknown = self.tokenizer.encode_known(piece)
            if unknown and self.tokenizer.unknown is None:
                # Dropping them would join the text around them as if they were not there.
                beside = [f"blank {number}" for number, edge in ((index, piece[:1]), (index + 1, piece[-1:]))
                          if 1 <= number <= len(offsets) and edge and self.tokenizer.encode_known(edge)[1]]
                where = f" (next to {' and '.join(beside)})" if beside else ""
                raise VocabularyError(
                    f"the text has tokens outside the model's vocabulary{where}: "
                    f"{', '.join(map(repr, dict.fromkeys(unknown)))}; remove or replace them (a model "
                    "trained with --max-vocab reads such tokens as <unk>)"
                )
            segments.append([int(i) for i in ids])
            unknown_all += unknown
        return segments, offsets, unknown_all

    def _check_runs(self, segments: list[list[int]], offsets: list[int]) -> None:
        run, start = 0, 0
        for index in range(len(offsets)):
            if run and not segments[index]:
                run += 1
            else:
                run, start = 1, index
            if run > self.window:
                raise FillError(
                    f"{run} blanks in a row (from character {offsets[start]}) are more than the model's window "
                    f"of {self.window} tokens (--seq-length it was trained with): it never learned to guess so "
                    f"much at once; give at most {self.window} blanks in a row"
                )

    # --- scoring one blank --------------------------------------------------------------------------------

    def _scores(self, left: list[int], right: list[int]) -> _Scores:
        if self.method == BIDIRECTIONAL:
            return self._bidirectional(left, right)
        return self._whole_text(left, right)

    def _ranked(self, ids: np.ndarray, log_scores: np.ndarray, coverage: float) -> _Scores:
        order = np.argsort(-log_scores, kind="stable")
        shifted = np.exp(log_scores[order] - log_scores[order[0]])
        return _Scores(ids[order], shifted / shifted.sum(), coverage)

    def _bidirectional(self, left: list[int], right: list[int]) -> _Scores:
        logits = bidirectional.blank_logits(self.params, self.config, np.array(left, dtype=np.int64)[:, None],
                                            np.array(right, dtype=np.int64)[:, None], self.kernels)[0]
        ids = np.flatnonzero(self.allowed)
        return self._ranked(ids, logits.astype(np.float64)[ids], 1.0)

    def _whole_text(self, left: list[int], right: list[int]) -> _Scores:
        config, params = self.config, self.params
        hidden = network.initial_hidden(config, 1)
        allowed = np.flatnonzero(self.allowed)
        if left:
            logits, hidden = network.step(params, config, np.array(left, dtype=np.int64)[:, None], hidden, self.kernels)
            z = logits[0].astype(np.float64)
            log_left = z - (z.max() + np.log(np.exp(z - z.max()).sum()))  # log p(· | left)
        else:  # nothing before the blank (a vocabulary without newlines): every candidate alike a priori
            log_left = np.zeros(config.vocab_size)
        ranked = allowed[np.argsort(-log_left[allowed], kind="stable")]
        candidates = ranked if self.max_candidates is None else ranked[: self.max_candidates]
        left_mass = np.exp(log_left[allowed])
        coverage = float(np.exp(log_left[candidates]).sum() / left_mass.sum())
        log_scores = log_left[candidates].copy()
        if right:
            right_ids = np.array(right, dtype=np.int64)
            steps = len(right_ids)
            per_chunk = max(1, _LOGITS_PER_CHUNK // (steps * max(config.vocab_size, 8 * config.hidden_size)))
            for start in range(0, len(candidates), per_chunk):
                chunk = candidates[start : start + per_chunk]
                count = len(chunk)
                inputs = np.empty((steps, count), dtype=np.int64)  # (R, C): the candidate, then the right text
                inputs[0] = chunk
                inputs[1:] = right_ids[:-1, None]
                targets = np.broadcast_to(right_ids[:, None], (steps, count))
                state = {key: np.repeat(value, count, axis=0) for key, value in hidden.items()}
                losses, _ = network.token_losses(params, config, inputs, np.ascontiguousarray(targets), state,
                                                 self.kernels)
                log_scores[start : start + count] -= losses.sum(axis=0)  # + log p(right | left, c)
        return self._ranked(candidates, log_scores, coverage)

    # --- filling ------------------------------------------------------------------------------------------

    def fill(self, text: str) -> Filled:
        """Fill every blank of ``text`` (one line); raises FillError or VocabularyError for a text that
        cannot be filled (no blank, unknown tokens without <unk>, too long a run of blanks)."""
        if self.blank not in text:
            raise FillError(f"the text has no blank: mark each missing token with {self.blank}"
                            + (" (or choose the marker with --blank)" if self.blank == BLANK else ""))
        segments, offsets, unknown = self._segments(text)
        self._check_runs(segments, offsets)
        # One sequence of slots: the tokens, with None for each blank, between a newline on each side.
        edge = [] if self.newline is None else [self.newline]
        slots: list[Optional[int]] = list(edge)
        blank_slots = []
        for index, segment in enumerate(segments):
            slots += segment
            if index < len(offsets):
                blank_slots.append(len(slots))
                slots.append(None)
        slots += edge
        unfilled = set(range(len(blank_slots)))
        chosen: dict[int, tuple[int, _Scores, int, int]] = {}
        cache: dict[tuple[tuple[int, ...], tuple[int, ...]], _Scores] = {}
        while unfilled:
            best = None
            for number in sorted(unfilled):
                slot = blank_slots[number]
                start = slot
                while start > 0 and slots[start - 1] is not None:
                    start -= 1
                stop = slot + 1
                while stop < len(slots) and slots[stop] is not None:
                    stop += 1
                left, right = tuple(slots[start:slot]), tuple(slots[slot + 1 : stop])
                scores = cache.get((left, right))
                if scores is None:
                    scores = cache[(left, right)] = self._scores(list(left), list(right))  # type: ignore[arg-type]
                if best is None or scores.probabilities[0] > best[1].probabilities[0]:
                    best = (number, scores, len(left), len(right))
            number, scores, left_count, right_count = best  # type: ignore[misc]
            slots[blank_slots[number]] = int(scores.ids[0])
            chosen[number] = (len(chosen) + 1, scores, left_count, right_count)
            unfilled.remove(number)
        vocab = self.tokenizer.vocab
        blanks = []
        for number, offset in enumerate(offsets):
            order, scores, left_count, right_count = chosen[number]
            shown = min(self.top_k, len(scores.ids))
            candidates = tuple(Candidate(vocab[int(i)], float(p))
                               for i, p in zip(scores.ids[:shown], scores.probabilities[:shown]))
            blanks.append(Blank(offset, order, vocab[int(scores.ids[0])], candidates, len(scores.ids),
                                scores.coverage, left_count, right_count))
        pieces = text.split(self.blank)
        filled = "".join(piece + (blanks[i].token if i < len(blanks) else "") for i, piece in enumerate(pieces))
        return Filled(text, filled, tuple(blanks), tuple(unknown))

    def describe_method(self) -> str:
        """One line saying how the blanks are filled."""
        if self.method == BIDIRECTIONAL:
            return ("bidirectional: p(token | text before, text after) from the model's left-to-right and "
                    "right-to-left stacks")
        limit = "every token" if self.max_candidates is None else f"the {self.max_candidates} tokens most likely"
        return (f"whole-text: each candidate scored by the probability of the whole text with it in the blank "
                f"(a left-to-right model; {limit} after the text before the blank)")
