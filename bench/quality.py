"""Model quality at equal wall-clock budgets: charrnn against PyTorch, vanilla RNN against GRU and LSTM,
and both against a smoothed character n-gram.

For each corpus the text is tokenized by characters (the vocabulary of the whole corpus, sorted, as
``charrnn train`` builds it) and the last 5% held out for validation (charrnn's --val-fraction rule).
Then, one after another so they never share the cores:

1. charrnn's vanilla RNN (its public training API: exactly the step ``charrnn train`` runs),
2. bench/torch_reference.py's vanilla RNN, with the same hidden size, batch, sequence length,
   initialisation, Adagrad learning rate and clipping,
3. charrnn's GRU and LSTM, their hidden sizes chosen so their parameter counts match the RNN's,

each train for the same wall-clock budget (time spent validating is not counted). Every
``--eval-seconds`` of training each is validated the same way: the held-out ids read as one stream
from a zero state, every prediction seeing all the text before it, in nats per token; the best
validation loss is reported (what ``best.npz`` keeps), in bits per character. Last, an interpolated
modified Kneser–Ney n-gram (bench/ngram.py, order tuned on the same validation split, which flatters
it) scores the same text.

    python bench/quality.py                      # both corpora, 180 s per model (about 25 minutes)
    python bench/quality.py --budget-seconds 30 --corpus en
    python bench/quality.py --corpus en --models rnn,gru --budget-seconds 600   # longer, fewer models

Requires torch for the PyTorch rows (bench/requirements.txt); without it they are skipped.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from charrnn.cli import configure_blas

configure_blas()  # as the charrnn command does, before numpy loads OpenBLAS

import numpy as np  # noqa: E402

import ngram  # noqa: E402  (bench/ngram.py, beside this file, as are the next two)
from machine import machine_info  # noqa: E402
from throughput import DEFAULT_CORPORA_DIR  # noqa: E402

from charrnn.config import ModelConfig, TrainConfig  # noqa: E402
from charrnn.data.streams import split_streams, split_validation  # noqa: E402
from charrnn.inference import scoring  # noqa: E402
from charrnn.model import network  # noqa: E402
from charrnn.training import loop  # noqa: E402
from charrnn.data.tokenizer import Tokenizer  # noqa: E402

CORPORA = {"zh": "tang300.txt", "en": "devils_dictionary.txt"}
MODELS = ("rnn", "torch", "gru", "lstm")  # charrnn's vanilla RNN, PyTorch's, and charrnn's gated cells
LN2 = math.log(2)


def read_corpus(path: Path) -> tuple[Tokenizer, np.ndarray, np.ndarray]:
    """The character tokenizer of the whole text, and the training and validation ids."""
    tokenizer, ids = Tokenizer.fit(path.read_text(encoding="utf-8"), "char")
    train_ids, val_ids = split_validation(ids, 0.05)
    return tokenizer, train_ids, val_ids


def parameter_count(cell: str, hidden: int, vocab_size: int) -> int:
    """Parameters of a one-layer charrnn model."""
    config = ModelConfig(vocab_size=vocab_size, hidden_size=hidden, cell=cell)
    return sum(int(np.prod(shape)) for shape in network.param_shapes(config).values())


def matching_hidden_size(cell: str, vocab_size: int, target_parameters: int) -> int:
    """The hidden size at which a one-layer ``cell`` model has the parameter count closest to the target."""
    return min(range(1, 4096), key=lambda hidden: abs(parameter_count(cell, hidden, vocab_size) - target_parameters))


def charrnn_val_nats(params: network.Params, config: ModelConfig, val_ids: np.ndarray) -> float:
    """Validation loss per token, one stream from a zero state (the torch reference's procedure)."""
    lengths = np.ones(config.vocab_size, dtype=np.int64)
    return scoring.score_ids(params, config, val_ids, lengths, batch_size=1).loss_nats


def race(
    name: str,
    step: Callable[[], float],
    validate: Callable[[], float],
    snapshot: Callable[[], Any],
    budget_s: float,
    eval_s: float,
    tokens_per_step: int,
) -> dict[str, Any]:
    """Train with ``step`` for ``budget_s`` seconds of training time, validating every ``eval_s``."""
    trained_s, steps, best = 0.0, 0, (math.inf, 0.0, None)
    next_eval = eval_s
    curve = []
    while trained_s < budget_s:
        started = time.perf_counter()
        loss = step()
        trained_s += time.perf_counter() - started
        steps += 1
        if not math.isfinite(loss):
            break
        if trained_s >= next_eval or trained_s >= budget_s:
            val = validate()
            curve.append((round(trained_s, 1), steps, val / LN2))
            if val < best[0]:
                best = (val, trained_s, snapshot())
            next_eval += eval_s
    print(f"  {name}: {steps:,} steps in {trained_s:.0f} s, best validation {best[0] / LN2:.4f} bits/char "
          f"at {best[1]:.0f} s", file=sys.stderr, flush=True)
    return {
        "name": name, "steps": steps, "train_seconds": trained_s, "tokens_per_s": steps * tokens_per_step / trained_s,
        "best_val_bits_per_char": best[0] / LN2, "best_at_seconds": best[1], "curve": curve, "best_state": best[2],
    }


def run_charrnn(cell: str, hidden: int, tokenizer: Tokenizer, train_ids, val_ids, args) -> dict[str, Any]:
    """charrnn's ``cell`` model raced for the budget; the result keeps the best parameters."""
    config = ModelConfig(vocab_size=tokenizer.vocab_size, hidden_size=hidden, cell=cell)
    train_config = TrainConfig(seq_length=args.seq_length, batch_size=args.batch_size, learning_rate=args.learning_rate,
                               max_steps=10**12, rng_seed=args.seed)
    trainee = loop.new_trainee(config, train_config)
    streams = split_streams(train_ids, args.batch_size, args.seq_length)
    result = race(
        f"charrnn {cell} H={hidden}",
        lambda: loop.train_step(trainee, streams, train_config).loss_nats,
        lambda: charrnn_val_nats(trainee.params, config, val_ids),
        lambda: copy.deepcopy(trainee.params),
        args.budget_seconds, args.eval_seconds, args.batch_size * args.seq_length,
    )
    result.update(implementation="charrnn", cell=cell, hidden_size=hidden, parameters=network.count_parameters(trainee.params),
                  config=config)
    return result


def charrnn_init() -> dict[str, float]:
    """charrnn's default initial weight scales, for the PyTorch model (same hyperparameters)."""
    defaults = TrainConfig(max_steps=1)
    return {"init_scale": defaults.init_scale, "embedding_scale": defaults.embedding_init_scale}


def run_torch(hidden: int, tokenizer: Tokenizer, train_ids, val_ids, args) -> Optional[dict[str, Any]]:
    """The PyTorch reference's vanilla RNN raced for the budget, or None without torch."""
    try:
        import torch_reference
    except ImportError as exc:
        print(f"  skipping PyTorch: {exc}", file=sys.stderr)
        return None
    trainer = torch_reference.make_trainer(
        tokenizer.vocab_size, hidden, cell="rnn", lr=args.learning_rate, seed=args.seed,
        seq_length=args.seq_length, **charrnn_init(),
    )
    streams = split_streams(train_ids, args.batch_size, args.seq_length)
    result = race(
        f"PyTorch rnn H={hidden}", lambda: trainer.train_step(streams), lambda: trainer.evaluate(val_ids),
        lambda: None, args.budget_seconds, args.eval_seconds, args.batch_size * args.seq_length,
    )
    result.update(implementation="PyTorch", cell="rnn", hidden_size=hidden, parameters=trainer.parameter_count())
    return result


def run_ngram(tokenizer: Tokenizer, train_ids, val_ids) -> dict[str, Any]:
    """The best interpolated modified Kneser–Ney model of order 3–5 on this split."""
    train_tokens, val_tokens = [tokenizer.vocab[i] for i in train_ids], [tokenizer.vocab[i] for i in val_ids]
    best = None
    for order in (3, 4, 5):
        scores = ngram.evaluate(ngram.fit(train_tokens, order, method="kn"), val_tokens)
        if best is None or scores["bits_per_token"] < best[1]["bits_per_token"]:
            best = (order, scores)
    order, scores = best
    print(f"  Kneser–Ney order {order}: {scores['bits_per_token']:.4f} bits/char", file=sys.stderr, flush=True)
    return {"name": f"Kneser–Ney {order}-gram", "implementation": "n-gram", "order": order,
            "best_val_bits_per_char": scores["bits_per_token"], "tokens_unknown": scores["tokens_unknown"]}


def sample_text(result: dict[str, Any], tokenizer: Tokenizer, seed_text: str, length: int) -> str:
    """Text from the best parameters of a charrnn result, at temperature 0.8 (seeded)."""
    from charrnn.inference import sampling
    from charrnn.config import SampleConfig

    prime = tokenizer.encode(seed_text)
    steps = sampling.generate(result["best_state"], result["config"], prime,
                            SampleConfig(length=length, temperature=0.8), np.random.default_rng(1))
    return seed_text + tokenizer.decode([int(ids[0]) for ids in steps])


def bench_corpus(label: str, path: Path, args) -> dict[str, Any]:
    """All the rows for one corpus."""
    tokenizer, train_ids, val_ids = read_corpus(path)
    print(f"{label}: {path.name}, vocabulary {tokenizer.vocab_size}, {len(train_ids):,} training and "
          f"{len(val_ids):,} validation characters", file=sys.stderr, flush=True)
    rows = []
    if "rnn" in args.models:
        rows.append(run_charrnn("rnn", args.hidden_size, tokenizer, train_ids, val_ids, args))
    torch_row = run_torch(args.hidden_size, tokenizer, train_ids, val_ids, args) if "torch" in args.models else None
    if torch_row is not None:
        rows.append(torch_row)
    rnn_parameters = parameter_count("rnn", args.hidden_size, tokenizer.vocab_size)
    for cell in ("gru", "lstm"):
        if cell in args.models:
            hidden = matching_hidden_size(cell, tokenizer.vocab_size, rnn_parameters)
            rows.append(run_charrnn(cell, hidden, tokenizer, train_ids, val_ids, args))
    rows.append(run_ngram(tokenizer, train_ids, val_ids))
    ours = [r for r in rows if r["implementation"] == "charrnn"]
    best = min(ours, key=lambda r: r["best_val_bits_per_char"]) if ours else None
    seed_text = "月" if label == "zh" else "The "
    return {
        "corpus": label, "file": path.name, "vocab_size": tokenizer.vocab_size, "train_chars": len(train_ids),
        "val_chars": len(val_ids), "rows": rows, "best": best["name"] if best else None,
        "sample": sample_text(best, tokenizer, seed_text, args.sample_length) if best else None,
    }


def markdown(results: list[dict[str, Any]], args) -> str:
    """A README-ready table of the results."""
    lines = [
        f"| corpus | model | parameters | steps in {args.budget_seconds:g} s | tokens/s | best validation bits/char |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for row in result["rows"]:
            steps = f"{row['steps']:,}" if "steps" in row else "—"
            rate = f"{row['tokens_per_s']:,.0f}" if "tokens_per_s" in row else "—"
            params = f"{row['parameters']:,}" if "parameters" in row else "—"
            lines.append(f"| {result['file']} | {row['name']} | {params} | {steps} | {rate} | "
                         f"{row['best_val_bits_per_char']:.3f} |")
    return "\n".join(lines)


def verdicts(results: list[dict[str, Any]]) -> list[str]:
    """The claims the benchmark checks, each with its numbers."""
    lines = []
    for result in results:
        rows = {row["name"].split(" H=")[0]: row for row in result["rows"]}
        ours, theirs = rows.get("charrnn rnn"), rows.get("PyTorch rnn")
        if ours and theirs:
            ok = ours["best_val_bits_per_char"] <= theirs["best_val_bits_per_char"]
            lines.append(f"{'PASS' if ok else 'FAIL'} {result['file']}: charrnn {ours['best_val_bits_per_char']:.3f} "
                         f"≤ PyTorch {theirs['best_val_bits_per_char']:.3f} bits/char")
        gram = next(r for r in result["rows"] if r["implementation"] == "n-gram")
        ours = [r["best_val_bits_per_char"] for r in result["rows"] if r["implementation"] == "charrnn"]
        if not ours:
            continue
        best_rnn = min(ours)
        lines.append(f"{'PASS' if best_rnn < gram['best_val_bits_per_char'] else 'FAIL'} {result['file']}: best RNN "
                     f"{best_rnn:.3f} < {gram['name']} {gram['best_val_bits_per_char']:.3f} bits/char")
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
    parser.add_argument("--hidden-size", type=int, default=256, help="of the vanilla RNNs")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=0.02,
                        help="Adagrad's, for every model (0.1, charrnn's default, is too high at hidden 256)")
    parser.add_argument("--models", type=_model_list, default=MODELS,
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all; the n-gram always runs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sample-length", type=int, default=300)
    parser.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print the report (or JSON)."""
    args = _parse_args(argv)
    machine = machine_info()
    results = [bench_corpus(label, args.corpora_dir / CORPORA[label], args) for label in args.corpus or sorted(CORPORA)]
    for result in results:
        for row in result["rows"]:
            row.pop("best_state", None)
            row.pop("config", None)
    if args.json:
        print(json.dumps({"machine": machine, "args": vars(args), "results": results}, default=str,
                         ensure_ascii=False, indent=2))
        return 0
    print(f"charrnn quality benchmark, {datetime.date.today()}, {machine.get('cpu')}, {machine.get('cores')} cores")
    print(f"command: python bench/quality.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
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
