"""Model quality: what a time budget buys with charrnn's defaults, charrnn against PyTorch at equal time,
words against characters, and all of them against a smoothed n-gram, on every benchmark corpus.

The corpora are bench/corpora.py's (build them first): the Tang poems, The Devil's Dictionary, Debian's
English fortunes and its Chinese fortunes-zh, each cut into its texts with every 20th text held out
(held_out.txt) and the rest for training (train.txt). Every model trains on train.txt and is scored on
held_out.txt, in bits per character of the same text: one split for every row.

Rows (``--models``), per corpus:

  default          ``charrnn train train.txt --max-seconds S`` with nothing else (its defaults decide the
                   model, the validation split, the schedule and the backend), run as a user runs it; its
                   best.npz is scored on held_out.txt with ``charrnn eval``
  rnn, gru, lstm   charrnn's cell with its defaults (the model --cell would give, its initialisation and
                   rate, the backend ``charrnn train`` picks, named in the report) at ``--hidden-size``, at
                   a constant rate, through the training step ``charrnn train`` runs
  torch-rnn,       bench/torch_reference.py's model as a PyTorch user writes it (nn.Embedding(V, H),
  torch-gru        nn.RNN or nn.GRU, nn.Linear, PyTorch's own initialisation), the same hidden size,
                   batch, sequence length, Adagrad (rate, ε) and clipping; by default with the two settings
                   charrnn has matched (a sparse embedding gradient, subnormals flushed to zero);
                   ``--torch-variants plain,matched`` races both side by side
  words            on the Tang poems only: charrnn's vanilla RNN on jieba's words, against the word n-gram

The equal-time rows race: each model trains ``--eval-seconds``, is validated (time not counted) and hands
over to the next, in an order that rotates every round, so a burst of other work on the machine slows
every model alike. Each race is run once per seed (``--seeds``), and the report gives the mean with the
spread (lowest to highest). Last, an interpolated modified Kneser–Ney n-gram (bench/ngram.py, order 3–5
tuned on the held-out text itself, which flatters it) scores the same held-out text; for the default row,
which knows only train.txt's characters, it is compared on the tokens both know.

    python -m bench.corpora                                    # once: the corpora
    python -m bench.quality                                    # the whole table (hours)
    python -m bench.quality --quick                            # every row at tiny budgets (minutes)
    python -m bench.quality --corpus devils --models rnn,torch-rnn --budget-seconds 90 --seeds 0

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
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from charrnn.cli import configure_blas

configure_blas()  # as the charrnn command does, before numpy loads OpenBLAS

import numpy as np  # noqa: E402

from bench import corpora  # noqa: E402
from bench import ngram  # noqa: E402
from bench.machine import machine_info  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig, default_learning_rate  # noqa: E402
from charrnn.data.streams import split_streams  # noqa: E402
from charrnn.data.tokenizer import Tokenizer  # noqa: E402
from charrnn.inference import scoring  # noqa: E402
from charrnn.model import backend, network  # noqa: E402
from charrnn.training import loop  # noqa: E402

MODELS = ("default", "rnn", "torch-rnn", "gru", "torch-gru", "lstm", "words")
DEFAULT_MODELS = ("default", "rnn", "torch-rnn", "gru", "torch-gru", "words")
TORCH_VARIANTS = ("matched", "plain")
LN2 = math.log(2)
DEFAULTS = TrainConfig(max_steps=1)  # charrnn's defaults, which the PyTorch models share where they can
QUICK = {"budget_seconds": 6.0, "eval_seconds": 2.0, "report_at": (4.0,), "default_seconds": 8.0, "seeds": (0,),
         "hidden_size": 64}


@dataclasses.dataclass
class Corpus:
    """One benchmark corpus, tokenized: training ids and held-out ids in the vocabulary of both."""

    label: str
    folder: Path
    tokenizer: Tokenizer
    train_ids: np.ndarray
    val_ids: np.ndarray
    val_chars: int  # characters of the scored held-out tokens (every token after the first)


def read_corpus(folder: Path, kind: str = "char") -> Corpus:
    """train.txt and held_out.txt of ``folder``, tokenized by ``kind`` with the vocabulary of both (sorted, as
    ``charrnn train`` builds it), so that every held-out token has a row in the races' models."""
    train = (folder / "train.txt").read_text(encoding="utf-8")
    held_out = (folder / "held_out.txt").read_text(encoding="utf-8")
    tokenizer, ids = Tokenizer.fit(train + held_out, kind)
    # The boundary in tokens: tokenizing the training text alone gives its token count (jieba never joins
    # a token across it, since every file ends with a line end).
    split = len(train) if kind == "char" else len(Tokenizer.fit(train, kind)[1])
    train_ids, val_ids = ids[:split], ids[split:]
    val_chars = int(tokenizer.token_lengths()[val_ids[1:]].sum())
    return Corpus(folder.name, folder, tokenizer, train_ids, val_ids, val_chars)


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


def charrnn_racer(corpus: Corpus, cell: str, args, seed: int, embed_size: Optional[int] = None,
                  label: str = "") -> Racer:
    """charrnn's ``cell`` model with its defaults (and the benchmark's size, batch and sequence length),
    trained on the kernels ``charrnn train`` picks."""
    model_options = {} if embed_size is None else {"embed_size": embed_size}
    config = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, hidden_size=args.hidden_size, cell=cell, **model_options)
    rate = {} if args.learning_rate is None else {"learning_rate": args.learning_rate}
    train_config = TrainConfig(seq_length=args.seq_length, batch_size=args.batch_size, max_steps=10**12,
                               rng_seed=seed, **rate).settled(config)
    kernels = backend.select("auto")
    trainee = loop.new_trainee(config, train_config, kernels)
    streams = split_streams(corpus.train_ids, args.batch_size, args.seq_length)
    # One untimed step and score of a copy first: the compiled backend compiles its kernels on first use
    # (once per process, or from numba's cache), which is not training time.
    scratch = copy.deepcopy(trainee)
    loop.train_step(scratch, streams, train_config)
    scoring.score_ids(scratch.params, config, corpus.val_ids[:100], corpus.tokenizer.token_lengths(), kernels=kernels)
    lengths = corpus.tokenizer.token_lengths()
    embed = f", E={config.embed_size}" if config.embed_size else ", one table"
    return Racer(
        f"charrnn {label}{cell} H={args.hidden_size}{embed}",
        lambda: loop.train_step(trainee, streams, train_config).loss_nats,
        # Streams warmed up on the text before them: the score of one pass over the held-out text.
        lambda: scoring.score_ids(trainee.params, config, corpus.val_ids, lengths, kernels=kernels).loss_nats,
        lambda: copy.deepcopy(trainee.params),
        args.batch_size * args.seq_length, corpus.val_chars / (len(corpus.val_ids) - 1),
        implementation="charrnn", cell=cell, hidden_size=args.hidden_size, embed_size=config.embed_size,
        learning_rate=train_config.learning_rate, parameters=network.count_parameters(trainee.params), config=config,
        backend=kernels.name, seed=seed,
    )


def torch_racer(corpus: Corpus, cell: str, args, seed: int, variant: str) -> Optional[Racer]:
    """The PyTorch reference's ``cell`` model (``variant``: matched or plain), or None without torch."""
    try:
        from bench import torch_reference
    except ImportError as exc:
        print(f"  skipping PyTorch: {exc}", file=sys.stderr)
        return None
    learning_rate = args.learning_rate if args.learning_rate is not None else default_learning_rate("adagrad", args.hidden_size)
    matched = variant == "matched"
    trainer = torch_reference.make_trainer(
        corpus.tokenizer.vocab_size, args.hidden_size, cell=cell, lr=learning_rate, clip=DEFAULTS.clip,
        seed=seed, seq_length=args.seq_length, initial_accumulator=DEFAULTS.adagrad_initial_accumulator,
        num_threads=args.torch_threads, sparse_embedding=matched, flush_denormal=matched,
    )
    streams = split_streams(corpus.train_ids, args.batch_size, args.seq_length)
    suffix = "" if len(args.torch_variants) == 1 else f" ({variant})"
    return Racer(
        f"PyTorch {cell} H={args.hidden_size}, E={args.hidden_size}{suffix}", lambda: trainer.train_step(streams),
        lambda: trainer.evaluate(corpus.val_ids), lambda: None,
        args.batch_size * args.seq_length, corpus.val_chars / (len(corpus.val_ids) - 1),
        implementation="PyTorch", cell=cell, hidden_size=args.hidden_size, embed_size=args.hidden_size,
        learning_rate=learning_rate, parameters=trainer.parameter_count(), variant=variant, seed=seed,
    )


def run_ngram(train_tokens: list[str], val_tokens: list[str], label: str = "") -> dict[str, Any]:
    """The best interpolated modified Kneser–Ney model of order 3–5 on this split, in bits per character
    (of all held-out characters, and of those the training text has)."""
    best = None
    for order in (3, 4, 5):
        scores = ngram.evaluate(ngram.fit(train_tokens, order, method="kn"), val_tokens)
        if best is None or scores["bits_per_char"] < best[1]["bits_per_char"]:
            best = (order, scores)
    order, scores = best
    known = set(train_tokens)
    known_chars = sum(len(t) for t in val_tokens[1:] if t in known)
    known_bits = scores["total_bits"] - scores["bits_on_unknown"]
    print(f"  {label}Kneser–Ney order {order}: {scores['bits_per_char']:.4f} bits/char", file=sys.stderr, flush=True)
    return {"name": f"{label}Kneser–Ney {order}-gram", "implementation": "n-gram", "order": order,
            "best_val_bits_per_char": scores["bits_per_char"], "tokens_unknown": scores["tokens_unknown"],
            "known_bits_per_char": known_bits / known_chars if known_chars else None}


def run_default(corpus: Corpus, seconds: float, seed: int, workdir: Path, options: Sequence[str] = ()) -> dict[str, Any]:
    """``charrnn train train.txt --max-seconds S`` with nothing else (but the seed, a folder and
    ``options``), then ``charrnn eval`` of its best.npz on held_out.txt: the one-line run a user types."""
    folder = workdir / f"{corpus.label}-seed{seed}{'-'.join(['', *options])}"
    train = [sys.executable, "-m", "charrnn", "train", str(corpus.folder / "train.txt"), "--max-seconds", f"{seconds:g}",
             "--rng-seed", str(seed), "--checkpoint-dir", str(folder), "--cache-dir", str(workdir / "cache"), "--json",
             *options]
    started = time.perf_counter()
    finished = subprocess.run(train, capture_output=True, text=True)
    wall_s = time.perf_counter() - started
    if finished.returncode != 0:
        tail = finished.stderr.strip().splitlines()[-1:] or ["no message"]
        raise RuntimeError(f"charrnn train failed ({finished.returncode}): {tail[0]}")
    summary = json.loads(finished.stdout)
    header = [line for line in finished.stderr.splitlines() if line.startswith(("training:", "model:", "validation:"))]
    evaluated = subprocess.run([sys.executable, "-m", "charrnn", "eval", str(folder / "best.npz"),
                                str(corpus.folder / "held_out.txt"), "--json", "-q"], capture_output=True, text=True)
    if evaluated.returncode != 0:
        raise RuntimeError(f"charrnn eval failed ({evaluated.returncode}): {evaluated.stderr.strip()}")
    score = json.loads(evaluated.stdout)
    unused = max(0.0, seconds - summary["seconds"]) / seconds
    ending = ("early (patience)" if summary["stopped_early"] else "at the budget" if summary["out_of_time"]
              else "at its step or epoch limit")
    print(f"  charrnn train --max-seconds {seconds:g} (seed {seed}): {summary['steps']:,} steps in "
          f"{summary['seconds']:.0f} s, stopped {ending} after "
          f"{summary.get('lr_reductions', 0)} rate reductions; best.npz {score['bits_per_char']:.4f} bits/char on "
          f"held_out.txt ({score['tokens_unknown']} unknown)", file=sys.stderr, flush=True)
    name = " ".join([f"charrnn train --max-seconds {seconds:g}", *options])
    return {"name": name, "implementation": "charrnn-default" if not options else "charrnn-option", "seed": seed,
            "steps": summary["steps"], "train_seconds": summary["seconds"], "wall_seconds": wall_s,
            "stopped_early": summary["stopped_early"], "lr_reductions": summary.get("lr_reductions", 0),
            "budget_unused": unused, "backend": summary["backend"], "header": header,
            "best_val_bits_per_char": score["bits_per_char"], "tokens_unknown": score["tokens_unknown"],
            "best_step": summary["best_step"]}


def sample_text(config: ModelConfig, state: Any, tokenizer: Tokenizer, seed_text: str, length: int) -> str:
    """Text from the best parameters of a charrnn racer, at temperature 0.8 (seeded)."""
    from charrnn.config import SampleConfig
    from charrnn.inference import sampling

    prime = tokenizer.encode(seed_text)
    steps = sampling.generate(state, config, prime, SampleConfig(length=length, temperature=0.8),
                              np.random.default_rng(1))
    return seed_text + tokenizer.decode([int(ids[0]) for ids in steps])


def _load() -> float:
    return os.getloadavg()[0]


def bench_corpus(folder: Path, args) -> list[dict[str, Any]]:
    """All the rows for one corpus: the default run, the character models' races (once per seed), the word
    models' race, the n-grams."""
    corpus = read_corpus(folder)
    print(f"{corpus.label}: vocabulary {corpus.tokenizer.vocab_size}, {len(corpus.train_ids):,} training and "
          f"{len(corpus.val_ids):,} held-out characters; load {_load():.2f}", file=sys.stderr, flush=True)
    result: dict[str, Any] = {
        "corpus": corpus.label, "tokens": "char", "vocab_size": corpus.tokenizer.vocab_size,
        "train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids), "load_before": _load(), "rows": [],
        "sample": None,
    }
    vocab = corpus.tokenizer.vocab
    gram = run_ngram([vocab[i] for i in corpus.train_ids], [vocab[i] for i in corpus.val_ids])
    if "default" in args.models:
        with tempfile.TemporaryDirectory() as workdir:
            for seed in args.seeds:
                result["rows"].append(run_default(corpus, args.default_seconds, seed, Path(workdir)))
                for options in args.default_variants:
                    result["rows"].append(run_default(corpus, args.default_seconds, seed, Path(workdir), options.split()))
    best_state = None
    for seed in args.seeds:
        racers = []
        for model in args.models:
            if model in ("rnn", "gru", "lstm"):
                racers.append(charrnn_racer(corpus, model, args, seed))
            elif model.startswith("torch-"):
                for variant in args.torch_variants:
                    racer = torch_racer(corpus, model.split("-")[1], args, seed, variant)
                    if racer is not None:
                        racers.append(racer)
        if racers:
            race(racers, args.budget_seconds, args.eval_seconds)
        result["rows"] += [racer.result(args.report_at) for racer in racers]
        ours = [r for r in racers if r.facts["implementation"] == "charrnn" and not r.diverged]
        if ours and best_state is None:
            best = min(ours, key=lambda r: r.best[0])
            best_state = (best.facts["config"], best.best[3], best.name)
    result["rows"].append(gram)
    if best_state is not None:
        seed_text = "月" if any("\u4e00" <= ch <= "\u9fff" for ch in vocab[-50:]) else "The "
        result["sample"] = (best_state[2], sample_text(best_state[0], best_state[1], corpus.tokenizer, seed_text,
                                                        args.sample_length))
    result["load_after"] = _load()
    results = [result]
    if "words" in args.models and corpus.label == "tang300":
        results.append(bench_words(folder, args))
    return results


def bench_words(folder: Path, args) -> dict[str, Any]:
    """The vanilla RNN on jieba's words, one-table and embedded, raced; and the word n-gram."""
    logging.getLogger("jieba").setLevel(logging.WARNING)
    corpus = read_corpus(folder, "jieba")
    print(f"{corpus.label} words: vocabulary {corpus.tokenizer.vocab_size:,}, {len(corpus.train_ids):,} training and "
          f"{len(corpus.val_ids):,} held-out words ({corpus.val_chars:,} characters scored)", file=sys.stderr, flush=True)
    load_before = _load()
    rows = []
    for seed in args.seeds:
        racers = [charrnn_racer(corpus, "rnn", args, seed, embed_size=0, label="words "),
                  charrnn_racer(corpus, "rnn", args, seed, embed_size=args.word_embed_size, label="words ")]
        race(racers, args.budget_seconds, args.eval_seconds)
        rows += [racer.result(args.report_at) for racer in racers]
    vocab = corpus.tokenizer.vocab
    rows.append(run_ngram([vocab[i] for i in corpus.train_ids], [vocab[i] for i in corpus.val_ids], "words "))
    return {"corpus": corpus.label, "tokens": "jieba", "vocab_size": corpus.tokenizer.vocab_size,
            "train_tokens": len(corpus.train_ids), "val_tokens": len(corpus.val_ids), "load_before": load_before,
            "load_after": _load(), "rows": rows, "sample": None}


def _bits(value: Optional[float]) -> str:
    return "—" if value is None else f"{value:.3f}"


def _spread(values: list[float]) -> str:
    """The mean of ``values``, with their range when there are several (``2.341 (2.330–2.352)``)."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ({min(values):.3f}–{max(values):.3f})"


def _groups(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Rows of the same model over the seeds, by name, in order of first appearance."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["name"], []).append(row)
    return groups


def markdown(results: list[dict[str, Any]], args) -> str:
    """The report's table: one line per corpus and model, the mean (and range) over the seeds."""
    seeds = len(args.seeds)
    lines = [
        "| corpus | model | backend | parameters | steps | tokens/s | "
        + "".join(f"best by {seconds:g} s | " for seconds in args.report_at)
        + f"best (held-out bits/char{', mean (range) of ' + str(seeds) + ' seeds' if seeds > 1 else ''}) |",
        "| --- | --- | --- | ---: | ---: | ---: | " + "---: | " * len(args.report_at) + "---: |",
    ]
    for result in results:
        label = result["corpus"] + (" (words)" if result["tokens"] == "jieba" else "")
        for name, rows in _groups(result["rows"]).items():
            first = rows[0]
            steps = f"{statistics.mean(r['steps'] for r in rows):,.0f}" if "steps" in first else "—"
            rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
            rate = f"{statistics.mean(rates):,.0f}" if rates else "—"
            params = f"{first['parameters']:,}" if "parameters" in first else "—"
            early = "".join(_spread([r.get("best_by_seconds", {}).get(f"{s:g}") for r in rows]) + " | "
                            for s in args.report_at) if "best_by_seconds" in first else "— | " * len(args.report_at)
            diverged = " (diverged)" if any(r.get("diverged") for r in rows) else ""
            best = _spread([r["best_val_bits_per_char"] for r in rows])
            if first["implementation"] in ("charrnn-default", "charrnn-option"):
                stops = ", ".join(f"{r['train_seconds']:.0f} s{' (early)' if r['stopped_early'] else ''}, best at step "
                                  f"{r['best_step'] if r['best_step'] is not None else '—'}" for r in rows)
                name = f"{name} (trained {stops})"
            lines.append(f"| {label} | {name} | {first.get('backend', '—')} | {params} | {steps} | {rate} | {early}"
                         f"{best}{diverged} |")
    return "\n".join(lines)


def _mean_best(rows: list[dict[str, Any]], key: Optional[str] = None) -> Optional[float]:
    values = [r["best_val_bits_per_char"] if key is None else r.get("best_by_seconds", {}).get(key) for r in rows]
    values = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.mean(values) if values else None


def verdicts(results: list[dict[str, Any]], args) -> list[str]:
    """The targets the benchmark checks, each with its numbers (means over the seeds)."""
    lines = []
    for result in results:
        rows, corpus = result["rows"], result["corpus"]
        gram = next(r for r in rows if r["implementation"] == "n-gram")
        if result["tokens"] == "jieba":
            for name, group in _groups([r for r in rows if r["implementation"] == "charrnn"]).items():
                mine = _mean_best(group)
                lines.append(f"{'PASS' if mine < gram['best_val_bits_per_char'] else 'FAIL'} {corpus} {name}: "
                             f"{mine:.3f} < {gram['name']} {gram['best_val_bits_per_char']:.3f} bits/char")
            continue
        defaults = [r for r in rows if r["implementation"] == "charrnn-default"]
        if defaults:
            mine = _mean_best(defaults)
            target = gram["known_bits_per_char"] if gram["known_bits_per_char"] is not None else gram["best_val_bits_per_char"]
            worst = max(r["best_val_bits_per_char"] for r in defaults)
            lines.append(f"{'PASS' if worst < target else 'FAIL'} {corpus}: charrnn train --max-seconds "
                         f"{args.default_seconds:g} best.npz {mine:.3f} (worst seed {worst:.3f}) < {gram['name']} "
                         f"{target:.3f} bits/char (on the characters train.txt has)")
            for r in defaults:
                idle = r["budget_unused"] > 0.25
                healthy_stop = r["stopped_early"] and r["lr_reductions"] >= DEFAULTS.lr_reductions
                lines.append(f"{'FAIL' if idle and not healthy_stop else 'PASS'} {corpus} seed {r['seed']}: "
                             f"{r['budget_unused']:.0%} of the budget unused"
                             + (f", stopped after its last ({r['lr_reductions']}th) rate reduction" if healthy_stop else ""))
        for cell in ("rnn", "gru"):
            ours = [r for r in rows if r["implementation"] == "charrnn" and r["cell"] == cell]
            for variant in args.torch_variants:
                theirs = [r for r in rows if r["implementation"] == "PyTorch" and r["cell"] == cell
                          and r["variant"] == variant]
                if not (ours and theirs):
                    continue
                budgets = [f"{s:g}" for s in args.report_at] + [None]
                for budget in budgets:
                    mine, other = _mean_best(ours, budget), _mean_best(theirs, budget)
                    if mine is None or other is None:
                        continue
                    at = f"{budget} s" if budget else f"{args.budget_seconds:g} s"
                    lines.append(f"{'PASS' if mine <= other else 'FAIL'} {corpus} {cell} in {at}: charrnn {mine:.3f} "
                                 f"≤ PyTorch ({variant}) {other:.3f} bits/char")
    return lines


def _model_list(text: str) -> tuple[str, ...]:
    models = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in models if name not in MODELS]
    if unknown or not models:
        raise argparse.ArgumentTypeError(f"choose from {','.join(MODELS)}")
    return models


def _numbers(kind: type) -> Callable[[str], tuple]:
    return lambda text: tuple(kind(t) for t in text.split(",") if t.strip())


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=corpora.CORPORA, action="append", help="default: all four")
    parser.add_argument("--corpora-dir", type=Path, default=corpora.DEFAULT_OUT,
                        help=f"where bench/corpora.py wrote them (default {corpora.DEFAULT_OUT})")
    parser.add_argument("--quick", action="store_true",
                        help="tiny budgets, one seed, hidden 64: checks that every row runs, in minutes")
    parser.add_argument("--default-seconds", type=float, default=600.0,
                        help="--max-seconds of the default row's charrnn train (default 600)")
    parser.add_argument("--default-variants", type=lambda text: tuple(t.strip() for t in text.split(",") if t.strip()),
                        default=(), help="also run the default row with each of these option strings, comma-separated "
                                         "(e.g. '--val-split tail,--lr-reductions 0 --no-anneal': today's split and "
                                         "schedule against the defaults)")
    parser.add_argument("--budget-seconds", type=float, default=180.0, help="training time per raced model")
    parser.add_argument("--eval-seconds", type=float, default=10.0, help="training time between validations")
    parser.add_argument("--report-at", type=_numbers(float), default=(90.0,),
                        help="also report the best by these training seconds (default: 90)")
    parser.add_argument("--seeds", type=_numbers(int), default=(0, 1, 2), help="one race per seed (default 0,1,2)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=None,
                        help="Adagrad's, for every raced model (default: charrnn's default rate)")
    parser.add_argument("--word-embed-size", type=int, default=None,
                        help="the embedded word model's size (default: charrnn's default, the hidden size)")
    parser.add_argument("--models", type=_model_list, default=DEFAULT_MODELS,
                        help=f"comma-separated subset of {','.join(MODELS)} (default: {','.join(DEFAULT_MODELS)}; "
                             "the n-gram always runs)")
    parser.add_argument("--torch-variants", type=lambda t: tuple(v for v in t.split(",") if v in TORCH_VARIANTS),
                        default=("matched",),
                        help="matched (sparse embedding gradient, subnormals flushed, as charrnn) and/or plain (as "
                             "nn.Embedding and torch leave them); default matched")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="PyTorch's threads (default: one per core); give 1 with OPENBLAS_NUM_THREADS=1 to race "
                             "both on one core, e.g. beside another benchmark")
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print the report (or JSON)."""
    args = _parse_args(argv)
    names = args.corpus or list(corpora.CORPORA)
    missing = [name for name in names if not (args.corpora_dir / name / "train.txt").exists()]
    if missing:
        print(f"Error: {', '.join(missing)} not in {args.corpora_dir}: run python -m bench.corpora first",
              file=sys.stderr)
        return 2
    machine = machine_info()
    results = [result for name in names for result in bench_corpus(args.corpora_dir / name, args)]
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
          f"{args.torch_threads or 'one per core'}; seeds {','.join(map(str, args.seeds))}")
    print("load (1-minute average) before and after each corpus: "
          + "; ".join(f"{r['corpus']} {r['tokens']} {r['load_before']:.2f} → {r['load_after']:.2f}" for r in results))
    for result in results:
        for row in result["rows"]:
            if row["implementation"] == "charrnn-default" and row["seed"] == args.seeds[0]:
                print(f"{result['corpus']}, the default run's header: " + " | ".join(row["header"]))
    print()
    print(markdown(results, args))
    print()
    for line in verdicts(results, args):
        print(line)
    for result in (r for r in results if r["sample"] is not None):
        print(f"\nSample from the best raced model on {result['corpus']} ({result['sample'][0]}, temperature 0.8):\n")
        print(result["sample"][1])
    return 0


if __name__ == "__main__":
    sys.exit(main())
