"""The default learning rate, measured: a sweep of rates at hidden 256, and the default at every size.

``--sweep`` races charrnn's vanilla RNN (and ``--cells``) at hidden 256 with its defaults on both bundled
corpora, once at each of ``--rates`` (default: the default rate times 1/4, 1/2, 1, 2 and 4), for the
same wall-clock budget, the runs taking turns as in bench/quality.py, and reports each run's best
validation bits per character (one stream from a zero state, the last 5% of the tokens held out). The
default should end within 0.05 bits/char of the best rate.

``--sizes`` trains every cell at every hidden size of ``--hidden-sizes`` on each vocabulary (English
characters, 85; Chinese characters, 2,580; English words cut by jieba, the 10,000 most frequent) with
the defaults, for ``--steps`` steps of batch 32 and sequence 25 through the training loop that
``charrnn train`` runs, DivergenceWatch included, and reports the highest smoothed training loss against
a uniform guess (ln V), the loss at the end, and whether the run diverged.

    python -m bench.learning_rate --sweep                 # about 16 minutes
    python -m bench.learning_rate --sizes                 # about half an hour
    python -m bench.learning_rate --sizes --hidden-sizes 64,1024 --cells gru --steps 100
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from charrnn.cli import configure_blas

configure_blas()  # as the charrnn command does, before numpy loads OpenBLAS

from bench import quality  # noqa: E402
from bench.throughput import DEFAULT_CORPORA_DIR, machine_info  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig, default_learning_rate  # noqa: E402
from charrnn.data import token_cache  # noqa: E402
from charrnn.data.streams import split_streams, split_validation  # noqa: E402
from charrnn.errors import TrainingError  # noqa: E402
from charrnn.training import loop  # noqa: E402

DEFAULTS = TrainConfig(max_steps=1)
SWEEP_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)
# (label, corpus file, tokenizer, vocabulary cap)
VOCABULARIES = (("en chars", "devils_dictionary.txt", "char", None), ("zh chars", "tang300.txt", "char", None),
                ("en words", "devils_dictionary.txt", "jieba", 10_000))
WORD_TOKENS = 10_000


def sweep(args) -> list[dict[str, Any]]:
    """Race each cell at each rate on both corpora; one row per run."""
    rows = []
    for label, file in (("en", quality.CORPORA["en"]), ("zh", quality.CORPORA["zh"])):
        corpus = quality.read_corpus(label, args.corpora_dir / file)
        for cell in args.cells:
            racers = []
            for rate in args.rates:
                race_args = argparse.Namespace(hidden_size=args.hidden_size, seq_length=25, batch_size=32,
                                               learning_rate=rate, seed=args.seed)
                racer = quality.charrnn_racer(corpus, cell, race_args)
                racer.name = f"{cell} lr={rate:g}"
                racers.append(racer)
            load = os.getloadavg()[0]
            print(f"{file}, {cell}: rates {', '.join(f'{r:g}' for r in args.rates)}; load {load:.2f}",
                  file=sys.stderr, flush=True)
            quality.race(racers, args.budget_seconds, args.eval_seconds)
            for racer, rate in zip(racers, args.rates):
                row = racer.result()
                row.pop("config", None)
                rows.append({**row, "corpus": file, "rate": rate, "load_before": load, "load_after": os.getloadavg()[0]})
    return rows


def _vocabulary(file: str, kind: str, cap: Optional[int], corpora_dir: Path):
    """The tokenizer of ``file`` (its ``cap`` most frequent tokens, as --max-vocab keeps) and its training
    streams, tokenized as ``charrnn train`` does, through a cache of its own."""
    logging.getLogger("jieba").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory() as cache_dir:
        prepared = token_cache.prepare([str(corpora_dir / file)], kind, "utf-8", cap, cache_dir)
        ids = prepared.ids.astype("int32")  # a copy, before the cache goes
    train_ids, _ = split_validation(ids, 0.05)
    return prepared.tokenizer, split_streams(train_ids, 32, 25)


def sizes(args) -> list[dict[str, Any]]:
    """Train every cell at every size on every vocabulary with the defaults; one row per run."""
    rows = []
    for label, file, kind, cap in VOCABULARIES:
        tokenizer, streams = _vocabulary(file, kind, cap, args.corpora_dir)
        guess = math.log(tokenizer.vocab_size)
        for cell, optimizer in ((cell, optimizer) for cell in args.cells for optimizer in args.optimizers):
            for hidden in args.hidden_sizes:
                model_config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, cell=cell)
                train_config = TrainConfig(max_steps=args.steps, rng_seed=args.seed, optimizer=optimizer)
                trainee = loop.new_trainee(model_config, train_config)
                highest, diverged, started = 0.0, None, time.perf_counter()
                try:
                    for result in loop.train_steps(trainee, streams, train_config):
                        highest = max(highest, result.smoothed_loss_nats)
                except TrainingError as exc:
                    diverged = str(exc)
                last = trainee.progress.smoothed_loss_nats
                row = {"vocabulary": label, "vocab_size": tokenizer.vocab_size, "cell": cell, "optimizer": optimizer,
                       "hidden_size": hidden,
                       "embed_size": model_config.embed_size,
                       "learning_rate": train_config.settled(model_config).learning_rate,
                       "steps": trainee.progress.step, "uniform_nats": guess, "highest_smoothed_nats": highest,
                       "last_smoothed_nats": last, "diverged": diverged, "seconds": time.perf_counter() - started,
                       "load": os.getloadavg()[0]}
                rows.append(row)
                print(f"  {label} (V {tokenizer.vocab_size:,}) {cell} {optimizer} H={hidden}: highest {highest:.2f}, last {last:.2f} "
                      f"nats/token (ln V {guess:.2f}){'; DIVERGED: ' + diverged if diverged else ''}",
                      file=sys.stderr, flush=True)
    return rows


def sweep_table(rows: list[dict[str, Any]], default_rate: float) -> list[str]:
    """The sweep as Markdown, one line per corpus and cell, ``default_rate`` in bold."""
    rates = sorted({row["rate"] for row in rows})
    lines = ["| corpus | cell | " + " | ".join(f"lr {rate:g}" for rate in rates) + " | default − best |",
             "| --- | --- | " + " | ".join("---:" for _ in rates) + " | ---: |"]
    for key in dict.fromkeys((row["corpus"], row["cell"]) for row in rows):
        found = {row["rate"]: row for row in rows if (row["corpus"], row["cell"]) == key}
        best = min(row["best_val_bits_per_char"] for row in found.values())
        cells = []
        for rate in rates:
            text = f"{found[rate]['best_val_bits_per_char']:.3f}" if rate in found else "—"
            cells.append(f"**{text}**" if rate == default_rate else text)
        default = found.get(default_rate)
        gap = f"{default['best_val_bits_per_char'] - best:.3f}" if default else "—"
        lines.append(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + f" | {gap} |")
    return lines


def sizes_table(rows: list[dict[str, Any]]) -> list[str]:
    """The size scan as Markdown: highest and last smoothed loss over ln V for each run."""
    hidden_sizes = sorted({row["hidden_size"] for row in rows})
    lines = ["| vocabulary | cell | optimizer | " + " | ".join(f"H {h}" for h in hidden_sizes) + " |",
             "| --- | --- | --- | " + " | ".join("---" for _ in hidden_sizes) + " |"]
    for key in dict.fromkeys((row["vocabulary"], row["vocab_size"], row["cell"], row["optimizer"]) for row in rows):
        found = {row["hidden_size"]: row for row in rows
                 if (row["vocabulary"], row["vocab_size"], row["cell"], row["optimizer"]) == key}
        cells = []
        for hidden in hidden_sizes:
            row = found.get(hidden)
            if row is None:
                cells.append("—")
            elif row["diverged"]:
                cells.append("**diverged**")
            else:
                cells.append(f"{row['highest_smoothed_nats']:.2f} → {row['last_smoothed_nats']:.2f}")
        lines.append(f"| {key[0]} (V {key[1]:,}, ln V {math.log(key[1]):.2f}) | {key[2]} | {key[3]} | "
                     + " | ".join(cells) + " |")
    return lines


def _numbers(kind: type, text: str) -> tuple:
    try:
        return tuple(kind(item) for item in text.split(",") if item.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"a comma-separated list of numbers, got {text!r}") from None


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="race rates at hidden 256 on both corpora")
    parser.add_argument("--sizes", action="store_true", help="train the default at every size and vocabulary")
    parser.add_argument("--corpora-dir", type=Path, default=DEFAULT_CORPORA_DIR)
    parser.add_argument("--cells", type=lambda text: _numbers(str, text), default=("rnn",),
                        help="comma-separated cells (default: rnn)")
    parser.add_argument("--rates", type=lambda text: _numbers(float, text), default=None,
                        help="comma-separated (default: the default rate at --hidden-size times 1/4, 1/2, 1, 2, 4)")
    parser.add_argument("--hidden-size", type=int, default=256, help="of the sweep")
    parser.add_argument("--budget-seconds", type=float, default=90.0, help="training time per run of the sweep")
    parser.add_argument("--eval-seconds", type=float, default=10.0)
    parser.add_argument("--hidden-sizes", type=lambda text: _numbers(int, text), default=(64, 128, 256, 512, 1024))
    parser.add_argument("--steps", type=int, default=300, help="steps of each run of the size scan")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON on stdout")
    parser.add_argument("--optimizers", type=lambda text: _numbers(str, text), default=("adagrad",),
                        help="comma-separated optimizers of the size scan, each at its default rate (default: adagrad)")
    args = parser.parse_args(argv)
    if not (args.sweep or args.sizes):
        parser.error("give --sweep, --sizes or both")
    if args.rates is None:
        args.rates = tuple(default_learning_rate("adagrad", args.hidden_size) * factor for factor in SWEEP_FACTORS)
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run what the options ask for and print the tables (or JSON)."""
    args = _parse_args(argv)
    machine = machine_info()
    sweep_rows = sweep(args) if args.sweep else []
    size_rows = sizes(args) if args.sizes else []
    if args.json:
        print(json.dumps({"machine": machine, "args": vars(args), "sweep": sweep_rows, "sizes": size_rows},
                         default=str, ensure_ascii=False, indent=2))
        return 0
    print(f"charrnn learning-rate benchmark, {datetime.date.today()}, {machine.get('cpu')}, {machine.get('cores')} cores")
    print(f"command: python -m bench.learning_rate {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"defaults: learning rate {default_learning_rate('adagrad', args.hidden_size):g} at hidden "
          f"{args.hidden_size} (Adagrad; times 256/H above 256), Adagrad initial accumulator "
          f"{DEFAULTS.adagrad_initial_accumulator:g}, embedding size the hidden size")
    if sweep_rows:
        print(f"\nBest validation bits/char after {args.budget_seconds:g} s of training, hidden {args.hidden_size}:\n")
        print("\n".join(sweep_table(sweep_rows, default_learning_rate("adagrad", args.hidden_size))))
    if size_rows:
        print(f"\nHighest → last smoothed training loss (nats/token) in {args.steps} steps with the defaults:\n")
        print("\n".join(sizes_table(size_rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
