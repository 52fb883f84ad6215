"""Training speed late in a run, where gradients and optimizer averages shrink towards subnormal floats.

A float32 below 1.2e-38 is subnormal, and x86 processors compute with one in microcode, on some models
up to a hundred times slower. Late in training the output columns of very improbable tokens get
gradients far below that scale's square root, and the averages of RMSProp and Adam decay towards zero
wherever a token stays out of the batch; charrnn keeps every such value out of the subnormal range by
arithmetic. This benchmark trains a model for many steps once (``--train-steps``, saved to ``--state``
and reused), then times further steps from that state with each backend, alternating rounds, and counts
the subnormal floats left in the parameters, the optimizer state and one step's gradients.

    python -m bench.late_training --state /tmp/tang-late.npz --train-steps 3000 --backend numpy,numba
    python -m bench.late_training --state /tmp/tang-late.npz --optimizer adam ...  (a state of its own)
    python -m bench.late_training --state /tmp/v6000-adam.npz --synthetic --optimizer adam --hidden-size 128

With the synthetic corpus most characters stay out of the batch for hundreds of steps, and Adam's
averages of their embedding rows decay towards zero: the census then counts the subnormal floats the
textbook update (optim.update_plain) would leave in the optimizer state, and those charrnn's leaves (none).

The state file holds plain arrays (no pickle), so two checkouts of charrnn can time the same state.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from bench.machine import REPO_ROOT, machine_info

DEFAULT_CORPUS = REPO_ROOT.parent / "shared" / "corpora" / "tang300.txt"


def subnormal_count(array: np.ndarray) -> int:
    """How many elements of a floating-point ``array`` are subnormal (nonzero, below the smallest normal)."""
    magnitudes = np.abs(array)
    return int(np.count_nonzero((magnitudes > 0) & (magnitudes < np.finfo(array.dtype).tiny)))


def new_trainee(args, vocab_size: int, backend_name: str):
    """A charrnn trainee and its TrainConfig, as ``charrnn train`` builds them for these options."""
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.model import backend
    from charrnn.training import loop

    model_config = ModelConfig(vocab_size=vocab_size, hidden_size=args.hidden_size, cell=args.cell)
    train_config = TrainConfig(seq_length=args.seq_length, batch_size=args.batch_size, optimizer=args.optimizer,
                               max_steps=10**9, rng_seed=0)
    return loop.new_trainee(model_config, train_config, backend.select(backend_name)), train_config


def corpus_streams(args) -> tuple[int, np.ndarray]:
    """(vocabulary size, the (B, L) streams) of the corpus, tokenized as characters."""
    from charrnn.data.streams import split_streams
    from charrnn.data.tokenizer import Tokenizer

    if args.synthetic:
        from throughput import write_synthetic_corpus  # bench/throughput.py, beside this file

        args.corpus = args.state.with_suffix(".corpus.txt")
        if not args.corpus.exists():
            write_synthetic_corpus(args.corpus)
    with open(args.corpus, encoding="utf-8", newline=None) as f:
        tokenizer, ids = Tokenizer.fit(f.read(), "char")
    return tokenizer.vocab_size, np.ascontiguousarray(split_streams(ids, args.batch_size, args.seq_length))


def save_state(trainee, path: Path) -> None:
    """The trainee's arrays and position, as plain arrays in an .npz."""
    arrays = {f"param.{k}": v for k, v in trainee.params.items()}
    arrays.update({f"optimizer.{k}": v for k, v in trainee.optimizer_state.items()})
    arrays.update({f"hidden.{k}": v for k, v in trainee.hidden.items()})
    progress = trainee.progress
    arrays["progress"] = np.array([progress.step, progress.position, progress.epoch, progress.tokens_seen])
    np.savez(path, **arrays)


def load_state(trainee, path: Path) -> None:
    """Put the arrays ``save_state`` wrote into ``trainee`` (built with the same options)."""
    with np.load(path, allow_pickle=False) as saved:
        for prefix, target in (("param.", trainee.params), ("optimizer.", trainee.optimizer_state),
                               ("hidden.", trainee.hidden)):
            for key in target:
                target[key] = saved[prefix + key].copy()
        step, position, epoch, tokens_seen = (int(v) for v in saved["progress"])
    trainee.progress.step, trainee.progress.position = step, position
    trainee.progress.epoch, trainee.progress.tokens_seen = epoch, tokens_seen


def census(trainee, streams: np.ndarray, train_config) -> dict[str, int]:
    """Subnormal floats in the parameters, the optimizer state and one step's gradients, and the gradient
    elements whose square would be subnormal (or underflow) if it were computed."""
    from charrnn.model import network, ops, optim

    start = trainee.progress.position
    chunk = streams[:, start : start + train_config.seq_length + 1].T
    result = network.loss_and_grads(trainee.params, trainee.model_config, np.ascontiguousarray(chunk[:-1]),
                                    np.ascontiguousarray(chunk[1:]), trainee.hidden, None, None, trainee.kernels)
    grads = [g.values if isinstance(g, ops.SparseRows) else g for g in result.grads.values()]
    root_tiny = np.sqrt(np.finfo(np.float32).tiny)
    # The same step by the textbook arithmetic (optim.update_plain), on copies.
    textbook_state = {name: value.copy() for name, value in trainee.optimizer_state.items()}
    optim.update_plain(
        train_config.optimizer, {name: value.copy() for name, value in trainee.params.items()},
        {name: ops.SparseRows(g.rows, g.values.copy()) if isinstance(g, ops.SparseRows) else g.copy()
         for name, g in result.grads.items()},
        textbook_state, learning_rate=train_config.settled(trainee.model_config).learning_rate, clip=train_config.clip,
    )
    return {
        "subnormal_parameters": sum(subnormal_count(p) for p in trainee.params.values()),
        "subnormal_optimizer_state": sum(subnormal_count(s) for s in trainee.optimizer_state.values()
                                         if s.dtype.kind == "f"),
        "subnormal_optimizer_state_after_a_textbook_step": sum(
            subnormal_count(s) for s in textbook_state.values() if s.dtype.kind == "f"),
        "subnormal_gradients": sum(subnormal_count(g) for g in grads),
        "gradients_below_root_tiny": sum(int(np.count_nonzero((g != 0) & (np.abs(g) < root_tiny))) for g in grads),
        "gradient_elements": sum(g.size for g in grads),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="UTF-8 text (default: the Tang poems)")
    parser.add_argument("--synthetic", action="store_true",
                        help="train on throughput.py's synthetic corpus instead: 6,000 characters with Zipf "
                             "frequencies, many of them once a pass (written beside --state)")
    parser.add_argument("--state", type=Path, required=True, help="the trained state: written if missing, else read")
    parser.add_argument("--train-steps", type=int, default=3000, help="steps trained to make a missing --state")
    parser.add_argument("--train-backend", default="numba", help="backend that trains the missing --state")
    parser.add_argument("--backend", default="numpy,numba", help="comma-separated backends to time")
    parser.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    parser.add_argument("--optimizer", default="adagrad", choices=("adagrad", "rmsprop", "adam"))
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--steps", type=int, default=40, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)

    from charrnn.training import loop

    vocab_size, streams = corpus_streams(args)
    if not args.state.exists():
        trainee, train_config = new_trainee(args, vocab_size, args.train_backend)
        started = time.perf_counter()
        for _ in range(args.train_steps):
            loop.train_step(trainee, streams, train_config)
        print(f"trained {args.train_steps} steps in {time.perf_counter() - started:.0f} s, loss "
              f"{trainee.progress.smoothed_loss_nats:.3f} nats; saved to {args.state}")
        save_state(trainee, args.state)

    backends = args.backend.split(",")
    best = {name: 0.0 for name in backends}
    counts = {}
    for _ in range(args.rounds):
        for name in backends:
            trainee, train_config = new_trainee(args, vocab_size, name)
            load_state(trainee, args.state)
            for _ in range(args.warmup):
                loop.train_step(trainee, streams, train_config)
            started = time.perf_counter()
            for _ in range(args.steps):
                loop.train_step(trainee, streams, train_config)
            seconds = time.perf_counter() - started
            best[name] = max(best[name], args.steps * streams.shape[0] * args.seq_length / seconds)
            counts[name] = census(trainee, streams, train_config)
    report = {"machine": machine_info(), "state": str(args.state), "cell": args.cell, "optimizer": args.optimizer,
              "tokens_per_s": best, "census": counts}
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
