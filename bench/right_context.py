"""A corpus whose blanks only the text after them decides: left-only, whole-text and bidirectional filling.

Every line is a random letter, one digit, then a three-letter word that decides the digit (each word
has its digit): ``q5KOB``. Read left to right, the digit follows a random letter, so a model reading
only the left context can do no better than guess among the digits (chance: 1 / the number of words);
read from both sides it is certain. This trains a bidirectional model and a left-to-right one of the
same size for the same number of steps on such lines, then fills the digit of held-out lines
(``x_KOB``) three ways: the bidirectional model, the left-to-right model with the left context only
(its most likely token after ``x``), and the left-to-right model scoring the whole text. Prints the
accuracies and the chance level; ``--json`` prints one JSON document.

    python -m bench.right_context                      # the docs' figures (about a minute on 2 cores)
    python -m bench.right_context --steps 600 --words 16

tests/test_fill.py runs the same corpus with a smaller model as a test (the bidirectional model must
fill at least 90 % of the blanks there; the target here is 95 %).
"""

from __future__ import annotations

import argparse
import json
import string
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def right_context_lines(count: int, words: int, rng: np.random.Generator) -> tuple[list[str], dict[str, str]]:
    """``count`` lines of a random lowercase letter, a digit and the word that decides it; and the
    word -> digit table (``words`` distinct three-letter uppercase words, each with its own digit)."""
    if words > 10:
        digits = [chr(ord("0") + i) for i in range(10)] + list("!#$%&*+=?@")[: words - 10]
    else:
        digits = [chr(ord("0") + i) for i in range(words)]
    vocabulary: dict[str, str] = {}
    while len(vocabulary) < words:
        word = "".join(rng.choice(list(string.ascii_uppercase), size=3))
        vocabulary.setdefault(word, digits[len(vocabulary)])
    table = list(vocabulary.items())
    lines = []
    for _ in range(count):
        word, digit = table[int(rng.integers(len(table)))]
        lines.append(rng.choice(list(string.ascii_lowercase)) + digit + word)
    return lines, vocabulary


def train_model(corpus: Path, folder: Path, bidirectional: bool, args: argparse.Namespace) -> Path:
    """Train one model with the charrnn command line in this process; returns its checkpoint."""
    from click.testing import CliRunner

    from charrnn.cli import cli

    command = ["train", str(corpus), "--steps", str(args.steps), "--hidden-size", str(args.hidden_size),
               "--seq-length", str(args.seq_length), "--batch-size", str(args.batch_size), "--rng-seed", str(args.seed),
               "--learning-rate", str(args.learning_rate), "--val-fraction", "0", "--sample-every", "0",
               "--checkpoint-every", "0", "--cell", args.cell, "--checkpoint-dir", str(folder), "-q",
               "--cache-dir", str(folder / "cache"), "--backend", args.backend]
    if bidirectional:
        command += ["--bidirectional", "--look-ahead", str(args.look_ahead)]
    result = CliRunner().invoke(cli, command, catch_exceptions=False)
    if result.exit_code:
        raise SystemExit(f"training failed: {result.stderr}")
    return folder / "latest.npz"


def fill_accuracies(bidirectional_path: Path, forward_path: Path, held_out: list[str]) -> dict[str, float]:
    """Accuracy of the three ways of filling the digit of every held-out line."""
    from charrnn.checkpoints import checkpoint
    from charrnn.inference.fill import Filler
    from charrnn.model import network

    bidi = checkpoint.load(str(bidirectional_path))
    forward = checkpoint.load(str(forward_path))
    both = Filler(bidi.params, bidi.model_config, bidi.tokenizer, bidi.train_config.seq_length)
    whole = Filler(forward.params, forward.model_config, forward.tokenizer, forward.train_config.seq_length,
                   max_candidates=None)
    right = {"bidirectional": 0, "whole-text": 0, "left-only": 0}
    tokenizer = forward.tokenizer
    newline = tokenizer.encode("\n")
    for line in held_out:
        cloze = line[0] + "_" + line[2:]
        right["bidirectional"] += both.fill(cloze).blanks[0].token == line[1]
        right["whole-text"] += whole.fill(cloze).blanks[0].token == line[1]
        left = np.concatenate([newline, tokenizer.encode(line[0])])[:, None]
        logits, _ = network.step(forward.params, forward.model_config, left, network.initial_hidden(forward.model_config, 1))
        allowed = [tokenizer.vocab.index(d) for d in sorted(set(l[1] for l in held_out)) if d in tokenizer.vocab]
        best = allowed[int(np.argmax(logits[0][allowed]))]
        right["left-only"] += tokenizer.vocab[best] == line[1]
    return {name: count / len(held_out) for name, count in right.items()}


def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Make the corpus, train both models, fill the held-out blanks; the report."""
    rng = np.random.default_rng(args.seed)
    lines, table = right_context_lines(args.lines + args.held_out, args.words, rng)
    corpus = work / "right_context.txt"
    corpus.write_text("\n".join(lines[: args.lines]) + "\n", encoding="utf-8")
    started = time.perf_counter()
    bidi = train_model(corpus, work / "bidirectional", True, args)
    bidi_s = time.perf_counter() - started
    forward = train_model(corpus, work / "forward", False, args)
    forward_s = time.perf_counter() - started - bidi_s
    accuracies = fill_accuracies(bidi, forward, lines[args.lines :])
    return {"words": args.words, "chance": 1 / args.words, "training_lines": args.lines, "held_out": args.held_out,
            "steps": args.steps, "hidden_size": args.hidden_size, "cell": args.cell,
            "train_seconds": {"bidirectional": bidi_s, "left-to-right": forward_s}, "accuracy": accuracies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=4000, help="training lines (4000)")
    parser.add_argument("--held-out", type=int, default=500, help="held-out lines to fill (500)")
    parser.add_argument("--words", type=int, default=8, help="distinct words, and so digits (8: chance 12.5 %%)")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--hidden-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--look-ahead", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=0.05)
    parser.add_argument("--cell", default="gru")
    parser.add_argument("--backend", default="numpy")
    parser.add_argument("--seed", type=int, default=21)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        report = run(args, Path(folder))
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{args.words} words (chance {report['chance']:.1%}), {args.lines} training lines, {args.held_out} held out; "
          f"{args.cell} H={args.hidden_size}, {args.steps} steps each "
          f"({report['train_seconds']['bidirectional']:.1f} s bidirectional, "
          f"{report['train_seconds']['left-to-right']:.1f} s left-to-right)")
    for name, accuracy in report["accuracy"].items():
        print(f"  {name:<14} {accuracy:7.1%} of held-out blanks filled right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
