"""Model quality at equal wall-clock budgets: charrnn against PyTorch, the cells against each other, words
against characters, and all of them against a smoothed n-gram.

For each corpus the text is tokenized (by characters unless said otherwise; the vocabulary of the whole
corpus, sorted, as ``charrnn train`` builds it) and the last 5% of the tokens held out for validation
(charrnn's --val-fraction rule). Then every model of a group trains for the same wall-clock budget
(time spent validating is not counted), the models taking turns: each trains ``--eval-seconds``, is
validated, and hands over to the next, in an order that rotates every round. So a burst of other work
on the machine slows every model of the group about equally instead of one of them entirely.

Models (``--models``):

  rnn, gru, lstm   charrnn's cell at ``--hidden-size`` with charrnn's defaults (embedding size, learning
                   rate, Adagrad's initial accumulator, initialisation), through its public training API:
                   exactly the step ``charrnn train`` runs
  torch-rnn,       bench/torch_reference.py's model as a PyTorch user writes it (nn.Embedding of size H,
  torch-gru        nn.RNN or nn.GRU, nn.Linear), the same hidden size, batch, sequence length,
                   initialisation, Adagrad (rate and initial accumulator) and clipping as charrnn's
  words            on the Tang poems only, a group of its own: charrnn's vanilla RNN on jieba's words,
                   one-table (--embed-size 0) and with charrnn's default embedding size, scored in bits
                   per character of the same held-out words

Every validation reads the held-out ids as one stream from a zero state, every prediction seeing all
the text before it; the best validation loss is reported (what ``best.npz`` keeps), in bits per
character. Last, an interpolated modified Kneser–Ney n-gram (bench/ngram.py, order 3–5 tuned on the same
validation split, which flatters it) scores the same text.

    python -m bench.quality                                  # both corpora, 180 s per model
    python -m bench.quality --budget-seconds 90 --corpus en
    python -m bench.quality --corpus zh --models words --budget-seconds 60

Requires torch for the PyTorch rows (bench/requirements.txt); without it they are skipped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import datetime
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from charrnn.cli import configure_blas

configure_blas()  # as the charrnn command does, before numpy loads OpenBLAS

import numpy as np  # noqa: E402

from bench import ngram  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.throughput import DEFAULT_CORPORA_DIR  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig, default_learning_rate  # noqa: E402
from charrnn.data.streams import split_streams, split_validation  # noqa: E402
from charrnn.data.tokenizer import Tokenizer  # noqa: E402
from charrnn.inference import scoring  # noqa: E402
from charrnn.model import network  # noqa: E402
from charrnn.training import loop  # noqa: E402

CORPORA = {"zh": "tang300.txt", "en": "devils_dictionary.txt"}
MODELS = ("rnn", "torch-rnn", "gru", "torch-gru", "lstm", "words")
DEFAULT_MODELS = ("rnn", "torch-rnn", "gru", "torch-gru", "words")
LN2 = math.log(2)
DEFAULTS = TrainConfig(max_steps=1)  # charrnn's defaults, which the PyTorch models share


@dataclasses.dataclass
class Corpus:
    """One corpus, tokenized, split, and cut into training streams."""

    label: str
    file: str
    tokenizer: Tokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    val_chars: int  # characters of the scored validation tokens (every token after the first)


def read_corpus(label: str, path: Path, kind: str = "char") -> Corpus:
    """The ``kind`` tokenizer of the whole text, and the training and validation ids."""
    tokenizer, ids = Tokenizer.fit(path.read_text(encoding="utf-8"), kind)
    train_ids, val_ids = split_validation(ids, 0.05)
    val_chars = int(tokenizer.token_lengths()[val_ids[1:]].sum())
    return Corpus(label, path.name, tokenizer, train_ids, val_ids, val_chars)


class Racer:
    """One model in a race: trains in slices of wall-clock time and is validated after each."""

    def __init__(self, name: str, step: Callable[[], float], validate: Callable[[], float],
                 snapshot: Callable[[], Any], tokens_per_step: int, val_chars_per_token: float, **facts: Any) -> None:
        self.name, self.step, self.validate, self.snapshot = name, step, validate, snapshot
        self.tokens_per_step, self.val_chars_per_token = tokens_per_step, val_chars_per_token
        self.facts = facts
        self.trained_s, self.steps, self.diverged = 0.0, 0, False
        self.best: tuple[float, float, int, Any] = (math.inf, 0.0, 0, None)  # bits/char, at s, at step, state
        self.curve: list[tuple[float, int, float]] = []  # (training seconds, steps, validation bits/char)

    def train_until(self, seconds: float) -> None:
        """Train until ``seconds`` of training time in all, then validate (its time not counted)."""
        while self.trained_s < seconds and not self.diverged:
            started = time.perf_counter()
            loss = self.step()
            self.trained_s += time.perf_counter() - started
            self.steps += 1
            self.diverged = not math.isfinite(loss)
        if self.diverged:
            return
        bits_per_char = self.validate() / LN2 / self.val_chars_per_token
        self.curve.append((round(self.trained_s, 1), self.steps, round(bits_per_char, 4)))
        if bits_per_char < self.best[0]:
            self.best = (bits_per_char, self.trained_s, self.steps, self.snapshot())

    def best_by(self, seconds: float) -> Optional[float]:
        """The best validation bits/char among the validations after at most ``seconds`` of training (a
        validation comes a step past its turn's target, hence the allowance of half a second)."""
        found = [bits for at, _, bits in self.curve if at <= seconds + 0.5]
        return min(found) if found else None

    def result(self, report_at: Sequence[float] = ()) -> dict[str, Any]:
        """The row of the report, with the best by each of ``report_at`` seconds."""
        return {
            "name": self.name, "steps": self.steps, "train_seconds": self.trained_s,
            "tokens_per_s": self.steps * self.tokens_per_step / self.trained_s if self.trained_s else None,
            "best_val_bits_per_char": self.best[0], "best_at_seconds": self.best[1], "best_at_step": self.best[2],
            "diverged": self.diverged, "curve": self.curve,
            "best_by_seconds": {f"{seconds:g}": self.best_by(seconds) for seconds in report_at}, **self.facts,
        }


def race(racers: list[Racer], budget_s: float, eval_s: float) -> None:
    """Every racer trains ``eval_s`` at a time, in turn (the order rotating each round), to ``budget_s``."""
    rounds = math.ceil(budget_s / eval_s)
    for round_index in range(rounds):
        target = min(budget_s, (round_index + 1) * eval_s)
        shift = round_index % len(racers)
        for racer in racers[shift:] + racers[:shift]:
            racer.train_until(target)
    for racer in racers:
        print(f"  {racer.name}: {racer.steps:,} steps in {racer.trained_s:.0f} s, best validation "
              f"{racer.best[0]:.4f} bits/char at {racer.best[1]:.0f} s (step {racer.best[2]:,})"
              f"{', diverged' if racer.diverged else ''}", file=sys.stderr, flush=True)


def charrnn_racer(corpus: Corpus, cell: str, args, embed_size: Optional[int] = None, label: str = "") -> Racer:
    """charrnn's ``cell`` model with its defaults (and the benchmark's batch and sequence length)."""
    model_options = {} if embed_size is None else {"embed_size": embed_size}
    config = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, hidden_size=args.hidden_size, cell=cell, **model_options)
    rate = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    train_config = TrainConfig(seq_length=args.seq_length, batch_size=args.batch_size, max_steps=10**12,
                               rng_seed=args.seed, **rate).settled(config)
    trainee = loop.new_trainee(config, train_config)
    streams = split_streams(corpus.train_ids, args.batch_size, args.seq_length)
    lengths = corpus.tokenizer.token_lengths()
    embed = f", E={config.embed_size}" if config.embed_size else ", one table"
    return Racer(
        f"charrnn {label}{cell} H={args.hidden_size}{embed}",
        lambda: loop.train_step(trainee, streams, train_config).loss_nats,
        # One stream from a zero state, as the PyTorch model is validated; nats per token.
        lambda: scoring.score_ids(trainee.params, config, corpus.val_ids, lengths, batch_size=1).loss_nats,
        lambda: copy.deepcopy(trainee.params),
        args.batch_size * args.seq_length, corpus.val_chars / (len(corpus.val_ids) - 1),
        implementation="charrnn", cell=cell, hidden_size=args.hidden_size, embed_size=config.embed_size,
        learning_rate=train_config.learning_rate, parameters=network.count_parameters(trainee.params), config=config,
    )


def torch_racer(corpus: Corpus, cell: str, args) -> Optional[Racer]:
    """The PyTorch reference's ``cell`` model, or None without torch."""
    try:
        import torch_reference
    except ImportError as exc:
        print(f"  skipping PyTorch: {exc}", file=sys.stderr)
        return None
    learning_rate = args.learning_rate if args.learning_rate is not None else default_learning_rate("adagrad", args.hidden_size)
    trainer = torch_reference.make_trainer(
        corpus.tokenizer.vocab_size, args.hidden_size, cell=cell, lr=learning_rate, clip=DEFAULTS.clip,
        seed=args.seed, seq_length=args.seq_length, init_scale=DEFAULTS.init_scale,
        embedding_scale=DEFAULTS.embedding_init_scale, initial_accumulator=DEFAULTS.adagrad_initial_accumulator,
        num_threads=args.torch_threads,
    )
    streams = split_streams(corpus.train_ids, args.batch_size, args.seq_length)
    return Racer(
        f"PyTorch {cell} H={args.hidden_size}, E={args.hidden_size}", lambda: trainer.train_step(streams),
        lambda: trainer.evaluate(corpus.val_ids), lambda: None,
        args.batch_size * args.seq_length, corpus.val_chars / (len(corpus.val_ids) - 1),
        implementation="PyTorch", cell=cell, hidden_size=args.hidden_size, embed_size=args.hidden_size,
        learning_rate=learning_rate, parameters=trainer.parameter_count(),
    )


def run_ngram(corpus: Corpus) -> dict[str, Any]:
    """The best interpolated modified Kneser–Ney model of order 3–5 on this split, in bits per character."""
    vocab = corpus.tokenizer.vocab
    train_tokens, val_tokens = [vocab[i] for i in corpus.train_ids], [vocab[i] for i in corpus.val_ids]
    best = None
    for order in (3, 4, 5):
        scores = ngram.evaluate(ngram.fit(train_tokens, order, method="kn"), val_tokens)
        if best is None or scores["bits_per_char"] < best[1]["bits_per_char"]:
            best = (order, scores)
    order, scores = best
    print(f"  Kneser–Ney order {order}: {scores['bits_per_char']:.4f} bits/char", file=sys.stderr, flush=True)
    return {"name": f"Kneser–Ney {order}-gram", "implementation": "n-gram", "order": order,
            "best_val_bits_per_char": scores["bits_per_char"], "tokens_unknown": scores["tokens_unknown"]}


def sample_text(row: dict[str, Any], state: Any, tokenizer: Tokenizer, seed_text: str, length: int) -> str:
    """Text from the best parameters of a charrnn row, at temperature 0.8 (seeded)."""
    from charrnn.config import SampleConfig
    from charrnn.inference import sampling

    prime = tokenizer.encode(seed_text)
    steps = sampling.generate(state, row["config"], prime, SampleConfig(length=length, temperature=0.8),
                              np.random.default_rng(1))
    return seed_text + tokenizer.decode([int(ids[0]) for ids in steps])


def bench_corpus(label: str, path: Path, args) -> list[dict[str, Any]]:
    """All the rows for one corpus: the character models' race, the word models' race, the n-gram."""
    corpus = read_corpus(label, path)
    print(f"{label}: {path.name}, vocabulary {corpus.tokenizer.vocab_size}, {len(corpus.train_ids):,} training "
          f"and {len(corpus.val_ids):,} validation characters; load {os.getloadavg()[0]:.2f}",
          file=sys.stderr, flush=True)
    racers = []
    for model in args.models:
        if model in ("rnn", "gru", "lstm"):
            racers.append(charrnn_racer(corpus, model, args))
        elif model.startswith("torch-"):
            racer = torch_racer(corpus, model.split("-")[1], args)
            if racer is not None:
                racers.append(racer)
    results = []
    load_before = os.getloadavg()[0]
    if racers:
        race(racers, args.budget_seconds, args.eval_seconds)
    rows = [racer.result(args.report_at) for racer in racers]
    states = {racer.name: racer.best[3] for racer in racers}
    rows.append(run_ngram(corpus))
    ours = [row for row in rows if row["implementation"] == "charrnn" and not row["diverged"]]
    best = min(ours, key=lambda row: row["best_val_bits_per_char"]) if ours else None
    seed_text = "月" if label == "zh" else "The "
    results.append({
        "corpus": label, "file": path.name, "tokens": "char", "vocab_size": corpus.tokenizer.vocab_size,
        "train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids), "load_before": load_before,
        "load_after": os.getloadavg()[0], "rows": rows, "best": best["name"] if best else None,
        "sample": sample_text(best, states[best["name"]], corpus.tokenizer, seed_text, args.sample_length) if best else None,
    })
    if "words" in args.models and label == "zh":
        results.append(bench_words(path, args))
    return results


def bench_words(path: Path, args) -> dict[str, Any]:
    """The vanilla RNN on jieba's words of ``path``, one-table and embedded, raced; and the word n-gram."""
    logging.getLogger("jieba").setLevel(logging.WARNING)
    corpus = read_corpus("zh", path, "jieba")
    print(f"zh words: vocabulary {corpus.tokenizer.vocab_size:,}, {len(corpus.train_ids):,} training and "
          f"{len(corpus.val_ids):,} validation words ({corpus.val_chars:,} characters scored)", file=sys.stderr, flush=True)
    racers = [charrnn_racer(corpus, "rnn", args, embed_size=0, label="words "),
              charrnn_racer(corpus, "rnn", args, embed_size=args.word_embed_size, label="words ")]
    load_before = os.getloadavg()[0]
    race(racers, args.budget_seconds, args.eval_seconds)
    rows = [racer.result(args.report_at) for racer in racers] + [run_ngram(corpus)]
    rows[-1]["name"] = "words " + rows[-1]["name"]
    return {"corpus": "zh", "file": path.name, "tokens": "jieba", "vocab_size": corpus.tokenizer.vocab_size,
            "train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids), "load_before": load_before,
            "load_after": os.getloadavg()[0], "rows": rows, "best": None, "sample": None}


def _bits(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def markdown(results: list[dict[str, Any]], args) -> str:
    """A README-ready table of the results."""
    lines = [
        f"| corpus | model | parameters | steps in {args.budget_seconds:g} s | tokens/s | "
        + "".join(f"best by {seconds:g} s | " for seconds in args.report_at)
        + f"best in {args.budget_seconds:g} s | at s |",
        "| --- | --- | ---: | ---: | ---: | " + "---: | " * len(args.report_at) + "---: | ---: |",
    ]
    for result in results:
        for row in result["rows"]:
            steps = f"{row['steps']:,}" if "steps" in row else "—"
            rate = f"{row['tokens_per_s']:,.0f}" if row.get("tokens_per_s") else "—"
            params = f"{row['parameters']:,}" if "parameters" in row else "—"
            at = f"{row['best_at_seconds']:.0f}" if "best_at_seconds" in row else "—"
            diverged = " (diverged)" if row.get("diverged") else ""
            early = "".join(_bits(row.get("best_by_seconds", {}).get(f"{seconds:g}")) + " | " for seconds in args.report_at)
            lines.append(f"| {result['file']} | {row['name']} | {params} | {steps} | {rate} | {early}"
                         f"{row['best_val_bits_per_char']:.3f}{diverged} | {at} |")
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The claims the benchmark checks, each with its numbers."""
    lines = []
    for result in results:
        if result["tokens"] != "char":
            continue
        rows = result["rows"]
        for cell in ("rnn", "gru"):
            ours = next((r for r in rows if r["implementation"] == "charrnn" and r["cell"] == cell), None)
            theirs = next((r for r in rows if r["implementation"] == "PyTorch" and r["cell"] == cell), None)
            if not (ours and theirs):
                continue
            # (budget, charrnn's best, PyTorch's best) by each reporting time and at the end
            scores = [(budget, ours["best_by_seconds"][budget], theirs["best_by_seconds"][budget])
                      for budget in ours["best_by_seconds"]]
            end = f"{ours['train_seconds']:.0f}"
            if end not in ours["best_by_seconds"]:  # a reporting time at the budget is the end already
                scores.append((end, ours["best_val_bits_per_char"], theirs["best_val_bits_per_char"]))
            for budget, mine, other in scores:
                if mine is not None and other is not None:
                    lines.append(f"{'PASS' if mine <= other else 'FAIL'} {result['file']} {cell} in {budget} s: "
                                 f"charrnn {mine:.3f} ≤ PyTorch {other:.3f} bits/char")
        gram = next(r for r in rows if r["implementation"] == "n-gram")
        ours = [r["best_val_bits_per_char"] for r in rows if r["implementation"] == "charrnn"]
        if ours:
            lines.append(f"{'PASS' if min(ours) < gram['best_val_bits_per_char'] else 'FAIL'} {result['file']}: best "
                         f"RNN {min(ours):.3f} < {gram['name']} {gram['best_val_bits_per_char']:.3f} bits/char")
    return lines


def _model_list(text: str) -> tuple[str, ...]:
    models = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in models if name not in MODELS]
    if unknown or not models:
        raise argparse.ArgumentTypeError(f"choose from {','.join(MODELS)}")
    return models


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=sorted(CORPORA), action="append", help="default: both")
    parser.add_argument("--corpora-dir", type=Path, default=DEFAULT_CORPORA_DIR)
    parser.add_argument("--budget-seconds", type=float, default=180.0, help="training time per model")
    parser.add_argument("--eval-seconds", type=float, default=10.0, help="training time between validations")
    parser.add_argument("--report-at", type=lambda text: tuple(float(t) for t in text.split(",") if t.strip()),
                        default=(90.0,), help="also report the best by these training seconds (default: 90)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adagrad's, for every model (default: charrnn's default rate)")
    parser.add_argument("--word-embed-size", type=int, default=None,
                        help="the embedded word model's size (default: charrnn's default, the hidden size)")
    parser.add_argument("--models", type=_model_list, default=DEFAULT_MODELS,
                        help=f"comma-separated subset of {','.join(MODELS)} (default: {','.join(DEFAULT_MODELS)}; "
                             "the n-gram always runs)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's threads (default: one per core); give 1 with OPENBLAS_NUM_THREADS=1 to race "
                             "both on one core, e.g. beside another benchmark")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print the report (or JSON)."""
    args = _parse_args(argv)
    machine = machine_info()
    results = [result for label in args.corpus or sorted(CORPORA)
               for result in bench_corpus(label, args.corpora_dir / CORPORA[label], args)]
    for result in results:
        for row in result["rows"]:
            row.pop("config", None)
    if args.json:
        print(json.dumps({"machine": machine, "args": vars(args), "results": results}, default=str,
                         ensure_ascii=False, indent=2))
        return 0
    print(f"charrnn quality benchmark, {datetime.date.today()}, {machine.get('cpu')}, {machine.get('cores')} cores")
    print(f"command: python -m bench.quality {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"threads: OPENBLAS_NUM_THREADS={os.environ.get('OPENBLAS_NUM_THREADS', 'unset')}, PyTorch "
          f"{args.torch_threads or 'one per core'}")
    print("load (1-minute average) before and after each race: "
          + "; ".join(f"{r['file']} {r['tokens']} {r['load_before']:.2f} → {r['load_after']:.2f}" for r in results))
    print()
    print(markdown(results, args))
    print()
    for line in verdicts(results):
        print(line)
    for result in (r for r in results if r["sample"] is not None):
        print(f"\nSample from the best model on {result['file']} ({result['best']}, temperature 0.8):\n")
        print(result["sample"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
