"""A smoothed n-gram language model: the baseline charrnn's RNN has to beat on held-out text.

Two estimators over any hashable tokens (characters, words, or integer ids):

``kn``
    Interpolated modified Kneser-Ney (Chen & Goodman 1998, "An empirical study of smoothing
    techniques for language modeling", section 3.5 and equation 17). At every order k,

        p_k(w | h) = (c(hw) - D(c(hw))) / c(h.) + gamma(h) * p_{k-1}(w | h'),
        gamma(h)   = (D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.)) / c(h.),

    where h' is h without its oldest token, D(0) = 0, c(h.) = sum_w c(hw) and N_r(h.) is the
    number of distinct w with c(hw) = r (r = 3 meaning 3 or more). The highest order uses raw counts; every
    lower order uses continuation counts N1+(.hw), the number of distinct tokens seen before hw.
    The discounts of each order come from that order's count-of-counts n_r: Y = n1 / (n1 + 2 n2),
    D_r = r - (r + 1) Y n_{r+1} / n_r. When some n_r (r <= 4) is zero or an estimate leaves (0, r),
    as with tiny corpora or the unigram continuation counts of an 85-letter alphabet, all three
    discounts of that order fall back to Ney's single D = n1 / (n1 + 2 n2) (0.5 if n1 or n2 is 0).
    The recursion ends in the uniform distribution over the vocabulary plus <unk>.

``addk``
    Interpolated add-k: p_k(w | h) = (c(hw) + k |V| p_{k-1}(w | h')) / (c(h.) + k |V|) with raw
    counts at every order, ending in the uniform distribution. Each context thus receives k
    pseudo-counts per vocabulary entry, spread like the next lower order instead of evenly; at
    order 1 this is exactly classic add-k, and an unseen context falls through to the lower order.
    (Plain add-k at order 5 would give every unseen 4-character context a uniform distribution,
    a baseline too weak to be worth beating.)

Conventions shared by both:

* Vocabulary: the distinct training tokens plus one ``<unk>`` class, so |V| = types + 1. <unk>
  has no counts; it gets mass only from the uniform distribution at the bottom of the recursion,
  so the distribution over vocabulary + <unk> sums to 1 (``check_normalisation`` verifies it).
  A held-out token missing from the training vocabulary is scored as p(<unk> | context): it is
  counted in ``tokens_scored`` and reported in ``tokens_unknown`` and ``bits_on_unknown``, never
  dropped. For word tokens that is generous: an unseen word's spelling costs nothing, so a
  word model's bits per character is flattered by its unknown words.
* Start of text: no padding symbol. The first positions of the training text contribute the
  n-grams that fit; the start of text counts as one extra distinct left context for continuation
  counts (as a single <s> would). When scoring held-out text, position i uses the up to
  order - 1 held-out tokens before it, so the first positions use the lower-order distributions
  of the same model with shorter contexts; nothing from the training text is used as context.
* Split (the rule charrnn's trainer uses too): the validation part is the last fraction of the
  token sequence, n_val = int(round(N * fraction)); see ``split``.
* Bits per character: for character tokens it is bits per token; for word tokens it is total
  bits over the total characters of the scored tokens. Every tokenizer here keeps every
  character, so the characters scored are exactly the validation text; with word tokens that
  text is the last fraction of the words, so it is not quite the character split's text.

``--tune`` picks the best order (3, 4, 5) for KN and the best order and k for add-k on the
validation split itself. Tuning on the data you report is what n-gram baselines commonly do; it
makes this a generous baseline: an RNN that beats it beats the n-gram's best setting on the
very text being scored.

Usage (pure Python + numpy; jieba only for ``--tokenizer jieba``):

    python -m bench.ngram CORPUS... [--order 5] [--method kn|addk] [--k 0.01]
        [--val-fraction 0.05] [--tokenizer char|word|jieba] [--check] [--tune] [--json]

The report goes to stdout (one JSON document with --json); errors are one ``Error:`` line on
stderr with exit code 2 (1 if --check finds a distribution that does not sum to 1).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Hashable, Mapping, Sequence

import numpy as np

METHODS = ("kn", "addk")
TOKENIZERS = ("char", "word", "jieba")
TUNE_ORDERS = (3, 4, 5)
ADDK_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001, 0.0003, 0.0001)
NORMALISATION_TOLERANCE = 1e-9
# Contexts for --check come from a fixed seed so that two runs check the same contexts.
_CHECK_SEED = 0
_CHECK_CONTEXTS = 8
# Words, runs of whitespace and single other characters: every character lands in some token, so
# "".join(tokens) == text and bits per character cover the whole validation text.
_WORD_PATTERN = re.compile(r"\w+|\s+|[^\w\s]")

Ngram = tuple[int, ...]


@dataclass(frozen=True)
class _Level:
    """One order k of the model, in the form both estimators share.

    p_k(w | h) = (numerators[h + (w,)] + backoff_mass * p_{k-1}(w | h[1:])) / denominator,
    with (denominator, backoff_mass) = contexts[h]; a context missing from ``contexts`` was never
    seen at this order and passes p_{k-1} through unchanged. For every h, the numerators of its
    n-grams plus its backoff mass add up to its denominator, which is what makes p_k sum to 1.
    """

    numerators: Mapping[Ngram, float]
    contexts: Mapping[Ngram, tuple[float, float]]


@dataclass(frozen=True)
class NgramModel:
    """A fitted n-gram model; build it with ``fit`` (or ``build`` from shared ``NgramCounts``).

    ``vocab`` holds the training token types; id ``len(vocab)`` is the <unk> class. ``levels[j]``
    is order j + 1. ``discounts[j]`` holds (D1, D2, D3+) of order j + 1 for KN (empty for add-k),
    and ``discount_sources[j]`` says whether they were "estimated", a "fallback" or "given".
    """

    order: int
    method: str
    k: float | None
    vocab: tuple[Hashable, ...]
    index: Mapping[Hashable, int]
    levels: tuple[_Level, ...]
    discounts: tuple[tuple[float, float, float], ...]
    discount_sources: tuple[str, ...]

    @property
    def unk_id(self) -> int:
        """The id of the <unk> class, which every token outside ``vocab`` maps to."""
        return len(self.vocab)

    @property
    def num_classes(self) -> int:
        """Size of the predicted distribution: the training vocabulary plus <unk>."""
        return len(self.vocab) + 1

    def encode(self, tokens: Sequence[Hashable] | np.ndarray) -> list[int]:
        """Token ids of ``tokens``, with every token outside the training vocabulary as <unk>."""
        unk = self.unk_id
        return [self.index.get(token, unk) for token in _as_list(tokens)]

    def prob_id(self, context_ids: Sequence[int], token_id: int) -> float:
        """p(token_id | the last order - 1 ids of ``context_ids``), a shorter context if fewer."""
        keep = min(len(context_ids), self.order - 1)
        history = tuple(context_ids[len(context_ids) - keep :])
        prob = 1.0 / self.num_classes
        # From order 1 up, so each order interpolates with the one below (Chen & Goodman eq. 17).
        for length in range(keep + 1):
            h = history[keep - length :]
            level = self.levels[length]
            stats = level.contexts.get(h)
            if stats is None:
                continue
            denominator, backoff_mass = stats
            prob = (level.numerators.get(h + (token_id,), 0) + backoff_mass * prob) / denominator
        return prob

    def prob(self, context_tokens: Sequence[Hashable], token: Hashable) -> float:
        """p(token | context_tokens); a token outside the vocabulary gets p(<unk> | context)."""
        return self.prob_id(self.encode(context_tokens), self.index.get(token, self.unk_id))

    def log2_prob(self, context_tokens: Sequence[Hashable], token: Hashable) -> float:
        """log2 p(token | context_tokens), in bits (negative); see ``prob``."""
        return math.log2(self.prob(context_tokens, token))


@dataclass(frozen=True)
class NgramCounts:
    """The counts of one training sequence for every order up to ``max_order``.

    ``raw[j]`` counts the (j + 1)-grams; ``raw_context_totals[j]`` maps each j-token context to
    the sum of ``raw[j]`` over the n-grams it starts; ``continuation[j]`` maps each (j + 1)-gram
    to the number of distinct tokens seen before it (the start of text counting as one), for
    j + 1 < max_order. Models of every order up to ``max_order`` can be built from one instance.
    """

    max_order: int
    vocab: tuple[Hashable, ...]
    index: Mapping[Hashable, int]
    raw: tuple[Counter[Ngram], ...]
    raw_context_totals: tuple[dict[Ngram, int], ...]
    continuation: tuple[Counter[Ngram], ...]


def _as_list(tokens: Sequence[Hashable] | np.ndarray) -> list[Hashable]:
    # numpy integers hash like ints but are slow dictionary keys; a str becomes its characters.
    if isinstance(tokens, np.ndarray):
        return tokens.tolist()
    return list(tokens)


def _context_totals(counts: Mapping[Ngram, int]) -> dict[Ngram, int]:
    totals: dict[Ngram, int] = {}
    for gram, count in counts.items():
        h = gram[:-1]
        totals[h] = totals.get(h, 0) + count
    return totals


def count_ngrams(tokens: Sequence[Hashable] | np.ndarray, max_order: int) -> NgramCounts:
    """Count ``tokens`` (characters, words or int ids) for all orders 1..max_order.

    Raises ValueError for an empty sequence or an order below 1.
    """
    if max_order < 1:
        raise ValueError(f"order must be at least 1, got {max_order}")
    sequence = _as_list(tokens)
    if not sequence:
        raise ValueError("cannot fit an n-gram model on an empty token sequence")
    # First-occurrence order, not set(): set order of strings changes between processes.
    vocab = tuple(dict.fromkeys(sequence))
    index = {token: i for i, token in enumerate(vocab)}
    ids = [index[token] for token in sequence]
    raw = tuple(Counter(zip(*(ids[i:] for i in range(n)))) for n in range(1, max_order + 1))
    continuation = []
    for n in range(1, max_order):
        # Each distinct (n+1)-gram type v+g adds one distinct left neighbour v to g.
        counts = Counter(gram[1:] for gram in raw[n])
        if len(ids) >= n:
            counts[tuple(ids[:n])] += 1
        continuation.append(counts)
    return NgramCounts(
        max_order=max_order,
        vocab=vocab,
        index=index,
        raw=raw,
        raw_context_totals=tuple(_context_totals(c) for c in raw),
        continuation=tuple(continuation),
    )


def modified_kn_discounts(counts: Mapping[Ngram, int]) -> tuple[tuple[float, float, float], str]:
    """Chen & Goodman's (D1, D2, D3+) for one order, from the count-of-counts of ``counts``.

    Returns the discounts and "estimated", or Ney's single discount n1 / (n1 + 2 n2) for all
    three and "fallback" when an n_r (r <= 4) is zero or an estimate D_r leaves (0, r).
    """
    count_of_counts = Counter(counts.values())
    n1, n2, n3, n4 = (count_of_counts.get(r, 0) for r in (1, 2, 3, 4))
    if min(n1, n2, n3, n4) > 0:
        y = n1 / (n1 + 2 * n2)
        estimate = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)
        if all(0 < d < r for r, d in zip((1, 2, 3), estimate)):
            return estimate, "estimated"
    single = n1 / (n1 + 2 * n2) if n1 > 0 and n2 > 0 else 0.5
    return (single, single, single), "fallback"


def _kn_level(counts: Mapping[Ngram, int], d: tuple[float, float, float]) -> _Level:
    numerators: dict[Ngram, float] = {}
    totals: dict[Ngram, float] = {}
    masses: dict[Ngram, float] = {}
    for gram, count in counts.items():
        discount = d[min(count, 3) - 1]
        numerators[gram] = count - discount
        h = gram[:-1]
        totals[h] = totals.get(h, 0) + count
        # gamma(h) c(h.) = sum of what was discounted from h's n-grams (D1 N1 + D2 N2 + D3+ N3+).
        masses[h] = masses.get(h, 0.0) + discount
    return _Level(numerators, {h: (totals[h], masses[h]) for h in totals})


def build(
    counts: NgramCounts,
    order: int,
    method: str = "kn",
    k: float = 0.01,
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModel:
    """Build a model of ``order`` (at most ``counts.max_order``) from shared counts.

    ``method`` is "kn" or "addk"; ``k`` is used by add-k only; ``discounts`` (KN only) gives
    (D1, D2, D3+) for orders 1..order instead of estimating them, each 0 < D_r <= r.
    Raises ValueError for an unknown method or an out-of-range order, k or discount.
    """
    if not 1 <= order <= counts.max_order:
        raise ValueError(f"order must be between 1 and {counts.max_order}, got {order}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
    if method == "addk":
        if not k > 0:
            raise ValueError(f"k must be positive, got {k}")
        pseudo = k * (len(counts.vocab) + 1)
        levels = tuple(
            _Level(counts.raw[j], {h: (total + pseudo, pseudo) for h, total in totals.items()})
            for j, totals in enumerate(counts.raw_context_totals[:order])
        )
        return NgramModel(order, method, k, counts.vocab, counts.index, levels, (), ())
    if discounts is not None and len(discounts) != order:
        raise ValueError(f"give {order} discount triples (one per order), got {len(discounts)}")
    levels_kn, used, sources = [], [], []
    for j in range(order):
        level_counts = counts.raw[j] if j == order - 1 else counts.continuation[j]
        if discounts is None:
            d, source = modified_kn_discounts(level_counts)
        else:
            d, source = tuple(float(x) for x in discounts[j]), "given"
            if len(d) != 3 or not all(0 < x <= r for r, x in zip((1, 2, 3), d)):
                raise ValueError(
                    f"discounts of order {j + 1} must be (D1, D2, D3+) with 0 < D_r <= r; got {d}"
                )
        levels_kn.append(_kn_level(level_counts, d))
        used.append(d)
        sources.append(source)
    return NgramModel(
        order, method, None, counts.vocab, counts.index, tuple(levels_kn), tuple(used), tuple(sources)
    )


def fit(
    tokens: Sequence[Hashable] | np.ndarray,
    order: int,
    method: str = "kn",
    k: float = 0.01,
    discounts: Sequence[tuple[float, float, float]] | None = None,
) -> NgramModel:
    """Fit an n-gram model of ``order`` on ``tokens``: strings, any hashables, or an int id array.

    ``method`` "kn" is interpolated modified Kneser-Ney, "addk" interpolated add-k with ``k``
    (see the module docstring for both). ``discounts`` overrides KN's estimated discounts.
    """
    return build(count_ngrams(tokens, order), order, method, k, discounts)


def split(tokens: Sequence[Any] | np.ndarray, fraction: float) -> tuple[Any, Any]:
    """Cut ``tokens`` into (train, validation), validation being the last ``fraction``.

    n_val = int(round(N * fraction)) (Python's round: halves go to the even integer);
    train = tokens[:N - n_val], val = tokens[N - n_val:]. charrnn's trainer uses the same rule,
    so both models are scored on the same tokens. Raises ValueError unless 0 <= fraction < 1.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"the validation fraction must be at least 0 and below 1, got {fraction}")
    n = len(tokens)
    n_val = int(round(n * fraction))
    return tokens[: n - n_val], tokens[n - n_val :]


def evaluate(model: NgramModel, tokens: Sequence[Hashable] | np.ndarray) -> dict[str, Any]:
    """Score held-out ``tokens``, each given the up to order - 1 held-out tokens before it.

    Returns bits_per_token, nats_per_token, perplexity, tokens_scored (all tokens, the unknown
    ones included as <unk>), tokens_unknown, bits_on_unknown (their share of the total bits),
    bits_per_known_token (the rest over the known tokens, for comparing with a model that
    excludes unknown tokens; None if there are none), total_bits, and for string tokens
    characters_scored and bits_per_char (total bits / total characters; None otherwise).
    """
    sequence = _as_list(tokens)
    if not sequence:
        raise ValueError("nothing to evaluate: the held-out token sequence is empty")
    ids = model.encode(sequence)
    width = model.order - 1
    unk = model.unk_id
    total_bits = 0.0
    unknown_bits = 0.0
    unknown = 0
    for i, token_id in enumerate(ids):
        bits = -math.log2(model.prob_id(ids[max(0, i - width) : i], token_id))
        total_bits += bits
        if token_id == unk:
            unknown += 1
            unknown_bits += bits
    characters = sum(len(t) for t in sequence) if all(isinstance(t, str) for t in sequence) else None
    bits_per_token = total_bits / len(ids)
    known = len(ids) - unknown
    return {
        "bits_per_token": bits_per_token,
        "nats_per_token": bits_per_token * math.log(2),
        "perplexity": 2.0**bits_per_token,
        "tokens_scored": len(ids),
        "tokens_unknown": unknown,
        "bits_on_unknown": unknown_bits,
        "bits_per_known_token": (total_bits - unknown_bits) / known if known else None,
        "total_bits": total_bits,
        "characters_scored": characters,
        "bits_per_char": total_bits / characters if characters else None,
    }


def cloze_log_scores(
    model: NgramModel, left: Sequence[Hashable], right: Sequence[Hashable], candidates: Sequence[int]
) -> np.ndarray:
    """log p(text with c in the blank) − log p(left), for each candidate id c, reading both sides.

    The n-gram probabilities that involve the blank are p(c | the order − 1 tokens before it) and those of
    the next order − 1 tokens after it, whose contexts hold c; every other factor of the whole text's
    probability is the same for all candidates. So P(c | left, right) ∝ exp(the returned score), exactly,
    as whole-text scoring by a left-to-right RNN (charrnn fill) is, but only order − 1 tokens deep.
    """
    width = model.order - 1
    before = model.encode(list(left)[-width:]) if width else []
    after = model.encode(list(right)[:width])
    scores = np.empty(len(candidates))
    for index, candidate in enumerate(candidates):
        text = before + [candidate] + after
        start = len(before)
        total = 0.0
        for position in range(start, len(text)):
            total += math.log(model.prob_id(text[max(0, position - width) : position], text[position]))
        scores[index] = total
    return scores


def check_normalisation(
    model: NgramModel, contexts: Sequence[Sequence[Hashable]], tolerance: float = NORMALISATION_TOLERANCE
) -> float:
    """Check that p(. | context) over the vocabulary plus <unk> sums to 1 for every context.

    Probabilities come from ``prob_id``, the path ``evaluate`` uses. Returns the largest
    |sum - 1|; raises ValueError naming the first context whose sum is off by more than
    ``tolerance``.
    """
    worst = 0.0
    for context in contexts:
        ids = model.encode(context)
        total = math.fsum(model.prob_id(ids, w) for w in range(model.num_classes))
        error = abs(total - 1.0)
        if error > tolerance:
            raise ValueError(
                f"p(. | {list(context)!r}) sums to {total!r}, off by {error:.3g} (tolerance {tolerance:g})"
            )
        worst = max(worst, error)
    return worst


def check_contexts(model: NgramModel, val: Sequence[Hashable], rng: np.random.Generator) -> list[list[Any]]:
    """Contexts worth checking: empty, held-out ones of every length, random and with <unk>.

    Random vocabulary sequences are mostly unseen at the top orders, exercising the back-off
    path; ``object()`` is a token no vocabulary holds.
    """
    width = model.order - 1
    vocab = list(model.vocab)
    contexts: list[list[Any]] = [[]]
    for _ in range(_CHECK_CONTEXTS):
        end = int(rng.integers(0, len(val) + 1))
        length = int(rng.integers(0, width + 1))
        contexts.append(list(val[max(0, end - length) : end]))
    for _ in range(2):
        contexts.append([vocab[int(i)] for i in rng.integers(0, len(vocab), size=width)])
    contexts.append([object()] + (list(val[: width - 1]) if width > 1 else []))
    return contexts


def tune(
    train: Sequence[Hashable] | np.ndarray,
    val: Sequence[Hashable] | np.ndarray,
    orders: Sequence[int] = TUNE_ORDERS,
    ks: Sequence[float] = ADDK_GRID,
) -> dict[str, Any]:
    """Score KN at each of ``orders`` and add-k at each (order, k) on ``val``; pick the best.

    Selection is on ``val`` itself (a generous baseline, see the module docstring). Counting is
    shared by all models. Returns "results" (one dict per model, with its evaluation and times),
    "best_kn", "best_addk" and "count_s".
    """
    start = time.perf_counter()
    counts = count_ngrams(train, max(orders))
    count_s = time.perf_counter() - start

    def score(order: int, method: str, k: float | None) -> dict[str, Any]:
        """Build one model from the shared counts and score it on ``val``, timing both."""
        start = time.perf_counter()
        model = build(counts, order, method, k) if k is not None else build(counts, order, method)
        built = time.perf_counter()
        scores = evaluate(model, val)
        timing = {"build_s": built - start, "evaluate_s": time.perf_counter() - built}
        return {"method": method, "order": order, "k": k, **scores, **timing}

    kn = [score(order, "kn", None) for order in orders]
    addk = [score(order, "addk", k) for order in orders for k in ks]
    best_kn = min(kn, key=lambda r: r["bits_per_token"])
    best_addk = min(addk, key=lambda r: r["bits_per_token"])
    return {"results": kn + addk, "best_kn": best_kn, "best_addk": best_addk, "count_s": count_s}


def read_text(paths: Sequence[str]) -> str:
    """The UTF-8 text of ``paths`` joined, newlines normalised to \\n as charrnn's reader does.

    A leading byte-order mark is dropped (also as charrnn does), so the tokens are the trainer's.
    """
    texts = []
    for path in paths:
        try:
            with open(path, encoding="utf-8-sig") as f:
                texts.append(f.read().replace("\r\n", "\n").replace("\r", "\n"))
        except FileNotFoundError:
            raise ValueError(f"{path}: no such file") from None
        except UnicodeDecodeError as exc:
            raise ValueError(f"{path} is not valid UTF-8 (byte {exc.start}); convert it first") from None
    return "".join(texts)


def tokenize(text: str, kind: str) -> list[str]:
    """Characters, words (``_WORD_PATTERN``), or jieba's precise mode as in charrnn.

    Every kind keeps all characters, so "".join(tokens) == text.
    """
    if kind == "char":
        return list(text)
    if kind == "word":
        return _WORD_PATTERN.findall(text)
    if kind == "jieba":
        try:
            import jieba
        except ImportError:
            raise ValueError("--tokenizer jieba needs jieba: pip install jieba") from None
        jieba.setLogLevel(logging.WARNING)
        return jieba.lcut(text, cut_all=False, HMM=True)
    raise ValueError(f"--tokenizer must be one of {', '.join(TOKENIZERS)}; got {kind!r}")


def _describe(method: str, order: int, k: float | None) -> str:
    return f"KN order {order}" if method == "kn" else f"add-k order {order}, k={k:g}"


def _row(label: str, text: str) -> None:
    print(f"{label:<28} {text}")


def _scores_text(scores: dict[str, Any]) -> str:
    bpc = scores["bits_per_char"]
    return (
        (f"{bpc:.4f} bits/char, " if bpc is not None else "")
        + f"{scores['bits_per_token']:.4f} bits/token, {scores['nats_per_token']:.4f} nats/token, "
        f"perplexity {scores['perplexity']:.3f}"
    )


def _render(report: dict[str, Any]) -> None:
    """Print ``report`` (built by ``_run``) as aligned text lines on stdout."""
    _row("corpus", f"{', '.join(report['corpus'])}: {report['characters']:,} characters, "
         f"{report['tokens']:,} {report['tokenizer']} tokens")
    _row("split", f"train {report['train_tokens']:,}, validation {report['val_tokens']:,} tokens (the last "
         f"{report['val_fraction']:g}); {report['train_types']:,} training types + <unk>")
    if "tune" in report:
        tuned = report["tune"]
        _row("counting", f"{tuned['count_s']:.2f} s (shared by all models below)")
        for r in tuned["results"]:
            _row(_describe(r["method"], r["order"], r["k"]), _scores_text(r))
        for r in (tuned["best_kn"], tuned["best_addk"]):
            _row("best " + _describe(r["method"], r["order"], r["k"]), _scores_text(r))
        _row("unknown", f"{tuned['best_kn']['tokens_unknown']:,} validation tokens not in the training "
             "vocabulary, scored as <unk>")
        _row("time", f"{report['total_s']:.2f} s in all")
        return
    _row(_describe(report["method"], report["order"], report["k"]), _scores_text(report))
    _row("unknown", f"{report['tokens_unknown']:,} of {report['tokens_scored']:,} validation tokens not in "
         f"the training vocabulary, scored as <unk> ({report['bits_on_unknown']:.1f} of "
         f"{report['total_bits']:.1f} bits)")
    if report["tokenizer"] != "char" and report["tokens_unknown"]:
        _row("", "the spelling of unknown words costs nothing here: bits/char is flattered")
    for j, (d, source) in enumerate(zip(report["discounts"], report["discount_sources"])):
        _row(f"discounts order {j + 1}", f"D1={d[0]:.4f} D2={d[1]:.4f} D3+={d[2]:.4f} ({source})")
    _row("time", f"fit {report['fit_s']:.2f} s, evaluate {report['evaluate_s']:.2f} s")
    if "normalisation_max_error" in report:
        _row("normalisation", f"{report['normalisation_contexts']} contexts sum to 1 within "
             f"{report['normalisation_max_error']:.1e}")


def _run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    text = read_text(args.corpus)
    tokens = tokenize(text, args.tokenizer)
    train, val = split(tokens, args.val_fraction)
    if not train or not val:
        raise ValueError(
            f"--val-fraction {args.val_fraction} of {len(tokens)} tokens leaves "
            f"{len(train)} for training and {len(val)} for validation; both must be non-empty"
        )
    report: dict[str, Any] = {
        "corpus": list(args.corpus),
        "tokenizer": args.tokenizer,
        "characters": len(text),
        "tokens": len(tokens),
        "val_fraction": args.val_fraction,
        "train_tokens": len(train),
        "val_tokens": len(val),
        "train_types": len(set(train)),
    }
    if args.tune:
        report["tune"] = tune(train, val)
    else:
        start = time.perf_counter()
        model = fit(train, args.order, args.method, args.k)
        fitted = time.perf_counter()
        scores = evaluate(model, val)
        report.update(
            method=args.method,
            order=args.order,
            k=args.k if args.method == "addk" else None,
            **scores,
            fit_s=fitted - start,
            evaluate_s=time.perf_counter() - fitted,
            discounts=[list(d) for d in model.discounts],
            discount_sources=list(model.discount_sources),
        )
        if args.check:
            contexts = check_contexts(model, val, np.random.default_rng(_CHECK_SEED))
            try:
                report["normalisation_max_error"] = check_normalisation(model, contexts)
            except ValueError as exc:
                print(f"Error: normalisation check failed: {exc}", file=sys.stderr)
                return 1
            report["normalisation_contexts"] = len(contexts)
    report["total_s"] = time.perf_counter() - started
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _render(report)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit code (0, 1 if --check fails, 2 for bad input)."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.ngram",
        description="Validation bits per character of a smoothed n-gram model (the RNN's baseline).",
    )
    parser.add_argument("corpus", nargs="+", metavar="CORPUS", help="UTF-8 text file(s), joined in order")
    parser.add_argument("--order", type=int, default=5, help="n-gram order (default 5)")
    parser.add_argument("--method", choices=METHODS, default="kn", help="kn (default) or addk")
    parser.add_argument("--k", type=float, default=0.01, help="add-k pseudo-count per vocabulary type (0.01)")
    parser.add_argument("--val-fraction", type=float, default=0.05, help="last fraction held out (0.05)")
    parser.add_argument("--tokenizer", choices=TOKENIZERS, default="char", help="char (default), word, jieba")
    parser.add_argument("--check", action="store_true", help="check that distributions sum to 1")
    parser.add_argument("--tune", action="store_true", help="KN at orders 3-5; add-k at 3-5 x a k grid")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    args = parser.parse_args(argv)
    if args.check and args.tune:
        parser.error("--check checks one model; run it without --tune")
    try:
        return _run(args)
    except (OSError, ValueError) as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
