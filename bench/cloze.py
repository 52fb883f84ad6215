"""Cloze evaluation: one token of each held-out line masked, filled four ways (issue 21).

For each corpus this trains two charrnn models for the same wall-clock time (``--seconds`` each, the
same size and settings): a bidirectional one (``train --bidirectional``) and a left-to-right one; fits a
Kneser-Ney n-gram model (bench/ngram.py) on the same training tokens; then masks one token at a seeded
random position of every held-out line (the corpus's last 5 %, as training holds it out; lines of at
least ``--min-tokens`` tokens, the newline excluded) and fills it with

  bidirectional   the bidirectional model: p(x | line before, line after)           (charrnn fill)
  whole-text      the left-to-right model scoring the whole line with each candidate (charrnn fill)
  left-only       the left-to-right model with the text before the blank only: p(x | line before)
  Kneser-Ney      the n-gram model scoring both sides: p(x | before) · p(next order − 1 tokens | …, x)

Every method reads the line alone, after and before a newline, and ranks every token but the newline.
It reports top-1 and top-5 accuracy, bits per masked token (−log2 of the probability given to the true
token) and the milliseconds each method takes per blank, as a Markdown table per corpus.

    python -m bench.cloze data/tang300.txt data/devils_dictionary.txt --seconds 120
    python -m bench.cloze data/tang300.txt --seconds 30 --blanks 100 --json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench import ngram

METHODS = ("bidirectional", "whole-text", "left-only", "Kneser-Ney")
MARKER = "\x01"


def train(corpus: Path, folder: Path, bidirectional: bool, args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """One model trained for ``args.seconds`` with the charrnn command line; (its checkpoint, train --json)."""
    from click.testing import CliRunner

    from charrnn.cli import cli

    command = ["train", str(corpus), "--max-seconds", str(args.seconds), "--steps", "1000000", "--eval-every", "0",
               "--sample-every", "0", "--checkpoint-every", "0", "--patience", "0", "--hidden-size",
               str(args.hidden_size), "--cell", args.cell, "--rng-seed", str(args.seed), "--checkpoint-dir",
               str(folder), "--cache-dir", str(folder / "cache"), "--backend", args.backend, "--json", "-q"]
    if bidirectional:
        command += ["--bidirectional", "--look-ahead", str(args.look_ahead)]
    result = CliRunner().invoke(cli, command, catch_exceptions=False)
    if result.exit_code:
        raise SystemExit(f"training failed: {result.stderr}")
    return folder / "latest.npz", json.loads(result.stdout)


def held_out_lines(ckpt: Any, corpus: Path, min_tokens: int) -> list[list[int]]:
    """The held-out part of ``corpus`` (as training split it off), cut into lines of token ids."""
    from charrnn.data.corpus import read_corpus
    from charrnn.data.streams import split_validation

    ids, _ = ckpt.tokenizer.encode_known(read_corpus([str(corpus)]).text)
    _, held = split_validation(ids, ckpt.train_config.val_fraction)
    newline = ckpt.tokenizer.vocab.index("\n")
    lines, current = [], []
    for token in held.tolist()[1:]:  # the first may be the middle of a line
        if token == newline:
            if len(current) >= min_tokens:
                lines.append(current)
            current = []
        else:
            current.append(token)
    return lines


class Tally:
    """Top-1, top-5 and bits of one method over the blanks, and its time."""

    def __init__(self) -> None:
        self.top1 = self.top5 = self.count = self.missed = 0
        self.bits = 0.0
        self.seconds = 0.0

    def add(self, ranked_ids: np.ndarray, probabilities: np.ndarray, truth: int, seconds: float) -> None:
        self.count += 1
        self.top1 += int(ranked_ids[0] == truth)
        self.top5 += int(truth in ranked_ids[:5])
        found = np.flatnonzero(ranked_ids == truth)
        if len(found):
            self.bits += -math.log2(max(float(probabilities[found[0]]), 1e-300))
        else:  # whole-text scoring with --candidates N never scored it: probability 0
            self.missed += 1
        self.seconds += seconds

    def report(self) -> dict[str, float]:
        """top-1, top-5, bits per masked token (infinite if a true token was never scored; then also the
        bits over the blanks whose truth was scored) and milliseconds per blank."""
        scored = self.count - self.missed
        return {"top1": self.top1 / self.count, "top5": self.top5 / self.count,
                "bits": self.bits / self.count if not self.missed else math.inf,
                "bits_where_scored": self.bits / scored if scored else None, "missed": self.missed,
                "ms_per_blank": 1000 * self.seconds / self.count}


def evaluate(corpus: Path, bidi_path: Path, forward_path: Path, args: argparse.Namespace) -> dict[str, Any]:
    from charrnn.checkpoints import checkpoint
    from charrnn.inference.fill import Filler
    from charrnn.model import network

    bidi, forward = checkpoint.load(str(bidi_path)), checkpoint.load(str(forward_path))
    tokenizer = forward.tokenizer
    vocab = tokenizer.vocab
    newline = vocab.index("\n")
    lines = held_out_lines(forward, corpus, args.min_tokens)
    rng = np.random.default_rng(args.seed)
    picked = rng.permutation(len(lines))[: args.blanks]
    # The n-gram model on the same training tokens (the same split rule as charrnn's).
    from charrnn.data.corpus import read_corpus
    from charrnn.data.streams import split_validation

    all_ids, _ = tokenizer.encode_known(read_corpus([str(corpus)]).text)
    train_ids, _ = split_validation(all_ids, forward.train_config.val_fraction)
    started = time.perf_counter()
    kn = ngram.fit([vocab[i] for i in train_ids.tolist()], args.order)
    kn_fit_s = time.perf_counter() - started
    candidates = [i for i in range(len(vocab)) if i != newline and vocab[i] != tokenizer.unknown]
    kn_candidates = kn.encode([vocab[i] for i in candidates])
    fillers = {
        "bidirectional": Filler(bidi.params, bidi.model_config, bidi.tokenizer, bidi.train_config.seq_length,
                                top_k=len(vocab), blank=MARKER),
        "whole-text": Filler(forward.params, forward.model_config, tokenizer, forward.train_config.seq_length,
                             max_candidates=args.candidates, top_k=len(vocab), blank=MARKER),
    }
    tallies = {name: Tally() for name in METHODS}
    index_of = {token: i for i, token in enumerate(vocab)}
    for line_number in picked.tolist():
        line = lines[line_number]
        position = int(rng.integers(len(line)))
        truth = line[position]
        # The blank marker is a control character no corpus holds (an underscore may be text).
        text = tokenizer.decode(line[:position]) + MARKER + tokenizer.decode(line[position + 1 :])
        for name, filler in fillers.items():
            t0 = time.perf_counter()
            blank = filler.fill(text).blanks[0]
            seconds = time.perf_counter() - t0
            ranked = np.array([index_of[c.token] for c in blank.candidates])
            tallies[name].add(ranked, np.array([c.probability for c in blank.candidates]), truth, seconds)
        t0 = time.perf_counter()
        left = np.array([newline] + line[:position])[:, None]
        logits, _ = network.step(forward.params, forward.model_config, left, network.initial_hidden(forward.model_config, 1))
        z = logits[0].astype(np.float64)[candidates]
        p = np.exp(z - z.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        tallies["left-only"].add(np.array(candidates)[order], p[order], truth, time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores = ngram.cloze_log_scores(kn, [vocab[i] for i in [newline] + line[:position]],
                                        [vocab[i] for i in line[position + 1 :] + [newline]], kn_candidates)
        p = np.exp(scores - scores.max())
        p /= p.sum()
        order = np.argsort(-p, kind="stable")
        tallies["Kneser-Ney"].add(np.array(candidates)[order], p[order], truth, time.perf_counter() - t0)
    return {"lines": len(lines), "blanks": len(picked), "vocab_size": len(vocab), "kn_order": args.order,
            "kn_fit_s": kn_fit_s, "candidates": args.candidates,
            "methods": {name: tally.report() for name, tally in tallies.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cloze evaluation of charrnn fill (issue 21).")
    parser.add_argument("corpus", nargs="+", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0, help="training time of each model (60)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--look-ahead", type=int, default=0)
    parser.add_argument("--blanks", type=int, default=300, help="held-out lines masked, one token each (300)")
    parser.add_argument("--min-tokens", type=int, default=5, help="shortest line used (5 tokens)")
    parser.add_argument("--candidates", type=lambda v: None if v == "all" else int(v), default=None,
                        help="whole-text candidates per blank (default all: exact bits)")
    parser.add_argument("--order", type=int, default=5, help="Kneser-Ney order (5)")
    parser.add_argument("--backend", default="numpy", help="training backend (numpy: no compile time in the budget)")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    report: dict[str, Any] = {"load_average_at_start": os.getloadavg()[0], "settings": {
        k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "corpus"}, "corpora": {}}
    for corpus in args.corpus:
        with tempfile.TemporaryDirectory() as folder:
            bidi, bidi_run = train(corpus, Path(folder) / "bidi", True, args)
            forward, forward_run = train(corpus, Path(folder) / "forward", False, args)
            result = evaluate(corpus, bidi, forward, args)
        result["training"] = {name: {"steps": run["steps"], "tokens": run["tokens"], "seconds": run["seconds"],
                                     "val_loss_nats": run["val_loss_nats"]}
                              for name, run in (("bidirectional", bidi_run), ("left-to-right", forward_run))}
        report["corpora"][corpus.name] = result
        if not args.json:
            _print(corpus.name, result, args)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(f"load average at start: {report['load_average_at_start']:.1f}")
    return 0


def _print(name: str, result: dict[str, Any], args: argparse.Namespace) -> None:
    training = result["training"]
    print(f"{name}: {result['blanks']} blanks in {result['lines']} held-out lines, vocabulary {result['vocab_size']:,}; "
          f"{args.cell} H={args.hidden_size}, {args.seconds:g} s of training each (bidirectional "
          f"{training['bidirectional']['steps']:,} steps, left-to-right {training['left-to-right']['steps']:,}); "
          f"Kneser-Ney order {result['kn_order']}")
    print("| method | top-1 | top-5 | bits per masked token | ms per blank |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for method, r in result["methods"].items():
        bits = f"{r['bits']:.2f}" if math.isfinite(r["bits"]) else (
            f"∞ (truth unscored in {r['missed']}; {r['bits_where_scored']:.2f} over the rest)")
        print(f"| {method} | {r['top1']:.1%} | {r['top5']:.1%} | {bits} | {r['ms_per_blank']:.1f} |")
    print()


if __name__ == "__main__":
    sys.exit(main())
