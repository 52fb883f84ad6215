"""How much a model learns per token: held-out bits/char after equal numbers of steps (not equal time).

The equal-time races of bench/quality.py mix two things: how fast an implementation runs and how much
the model learns from each batch. This script takes speed out: charrnn's vanilla RNN (or ``--cell``)
with its current initialisation, with the former one (every weight N(0, 0.01²), the embedding
N(0, 0.5²)), and the PyTorch reference with PyTorch's own initialisation, each trained for the same
steps on the same batches (batch 32, sequence 25, Adagrad at charrnn's default rate, clip 5) and scored
on the same held-out text every ``--every`` steps. Load on the machine changes only how long it takes.

    python -m bench.corpora
    python -m bench.per_token --corpus fortunes-zh --steps 600 --every 200

``--relu`` instead trains the vanilla cell with relu on the Tang poems (data/tang300.txt, hidden 128) from
several initialisations and rates, and reports each run's highest step loss (against 2 ln V, which a
healthy start stays below) and the mean of its last 20 step losses, in nats/token:

    python -m bench.per_token --relu --steps 150
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from charrnn.cli import configure_blas

configure_blas()

import numpy as np  # noqa: E402

from bench import corpora  # noqa: E402
from bench.quality import read_corpus  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig, default_learning_rate  # noqa: E402
from charrnn.data.streams import split_streams  # noqa: E402
from charrnn.inference import scoring  # noqa: E402
from charrnn.training import loop  # noqa: E402

VARIANTS = ("charrnn", "charrnn-former-init", "torch")
FORMER = {"init_scale": 0.01, "embedding_init_scale": 0.5}


def curve(variant: str, corpus, args) -> list[tuple[int, float]]:
    """(step, held-out bits/char) every ``args.every`` steps for one variant."""
    streams = split_streams(corpus.train_ids, 32, 25)
    val_ids = corpus.val_ids[: args.val_tokens + 1]
    chars = float(corpus.tokenizer.token_lengths()[val_ids[1:]].sum())
    rate = default_learning_rate("adagrad", args.hidden_size)
    if variant == "torch":
        from bench import torch_reference

        trainer = torch_reference.make_trainer(corpus.tokenizer.vocab_size, args.hidden_size, cell=args.cell, lr=rate,
                                               clip=5.0, seed=args.seed, seq_length=25, num_threads=1,
                                               sparse_embedding=True, flush_denormal=True)
        step = lambda: trainer.train_step(streams)  # noqa: E731
        score = lambda: trainer.evaluate(val_ids) * (len(val_ids) - 1)  # noqa: E731
    else:
        config = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, hidden_size=args.hidden_size, cell=args.cell)
        train_config = TrainConfig(max_steps=10**9, rng_seed=args.seed, learning_rate=rate,
                                   **(FORMER if variant == "charrnn-former-init" else {}))
        trainee = loop.new_trainee(config, train_config)
        lengths = corpus.tokenizer.token_lengths()
        step = lambda: loop.train_step(trainee, streams, train_config)  # noqa: E731
        score = lambda: scoring.score_ids(trainee.params, config, val_ids, lengths).total_nats  # noqa: E731
    points = []
    for done in range(1, args.steps + 1):
        step()
        if done % args.every == 0:
            points.append((done, score() / math.log(2) / chars))
    return points


# (label, activation, weights: former (N(0, 0.01²), embedding N(0, 0.5²)), identity recurrence (IRNN),
# uniform recurrence, or charrnn's defaults; learning rate or None for the default)
RELU_RUNS = (
    ("relu, former weights", "relu", "former", 0.02),
    ("relu, identity recurrence (IRNN)", "relu", "identity", 0.02),
    ("relu, identity recurrence (IRNN)", "relu", "identity", 0.002),
    ("relu, uniform recurrence", "relu", "uniform", 0.02),
    ("relu, uniform recurrence", "relu", "uniform", 0.005),
    ("relu, former weights", "relu", "former", 0.005),
    ("relu at its defaults", "relu", "defaults", None),
    ("tanh at its defaults", "tanh", "defaults", None),
)


def relu_runs(args) -> int:
    """Train the relu cell from each of RELU_RUNS and print the table."""
    from charrnn.data.tokenizer import Tokenizer

    text = (Path(__file__).resolve().parent.parent / "data" / "tang300.txt").read_text(encoding="utf-8")
    tokenizer, ids = Tokenizer.fit(text, "char")
    streams = split_streams(ids, 32, 25)
    guess = math.log(tokenizer.vocab_size)
    print(f"tang300.txt, vanilla cell, hidden 128, vocabulary {tokenizer.vocab_size} (2 ln V = {2 * guess:.1f}), "
          f"{args.steps} steps, seed {args.seed}")
    print("| run | rate | highest loss | last 20 |\n| --- | ---: | ---: | ---: |")
    for label, activation, weights, rate in RELU_RUNS:
        config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=128, activation=activation)
        scales = FORMER if weights != "defaults" else {}
        train_config = TrainConfig(max_steps=10**9, rng_seed=args.seed, **scales,
                                   **({} if rate is None else {"learning_rate": rate})).settled(config)
        trainee = loop.new_trainee(config, train_config)
        rng = np.random.default_rng(args.seed + 1)
        if weights == "identity":
            trainee.params["W_hh"][...] = np.eye(128)
        elif weights == "uniform":
            trainee.params["W_hh"][...] = rng.uniform(-1 / math.sqrt(128), 1 / math.sqrt(128), (128, 128))
        losses = [loop.train_step(trainee, streams, train_config).loss_nats for _ in range(args.steps)]
        print(f"| {label} | {train_config.learning_rate:g} | {max(losses):,.1f} | {np.mean(losses[-20:]):.2f} |",
              flush=True)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print each variant's curve and a table of them (or, with --relu, the relu table)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", choices=corpora.CORPORA, default="fortunes-zh")
    parser.add_argument("--corpora-dir", type=Path, default=corpora.DEFAULT_OUT)
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated subset of {','.join(VARIANTS)}")
    parser.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--every", type=int, default=200)
    parser.add_argument("--val-tokens", type=int, default=5000, help="score the first N held-out tokens")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--relu", action="store_true", help="the relu cell's first steps instead (see above)")
    args = parser.parse_args(argv)
    if args.relu:
        return relu_runs(args)
    corpus = read_corpus(args.corpora_dir / args.corpus)
    rows = {}
    for variant in args.variants.split(","):
        started = time.perf_counter()
        rows[variant] = curve(variant, corpus, args)
        print(f"{variant}: {', '.join(f'{s}: {b:.3f}' for s, b in rows[variant])} ({time.perf_counter() - started:.0f} s)",
              file=sys.stderr, flush=True)
    steps = [s for s, _ in next(iter(rows.values()))]
    print(f"{args.corpus}, {args.cell} H={args.hidden_size}, vocabulary {corpus.tokenizer.vocab_size}, seed {args.seed}; "
          f"held-out bits/char of the first {args.val_tokens:,} held-out tokens after N steps")
    print("| variant | " + " | ".join(f"step {s:,}" for s in steps) + " |")
    print("| --- | " + " | ".join("---:" for _ in steps) + " |")
    for variant, points in rows.items():
        print(f"| {variant} | " + " | ".join(f"{b:.3f}" for _, b in points) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
