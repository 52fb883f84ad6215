"""Sampling and evaluation speed, and start-up time: what a user waits for outside training.

1. Tokens/s of ``charrnn sample``'s generation loop (charrnn.inference.sampling.generate, the code the command
   runs) for one stream and for N streams generated together as one batch (``--num-samples N``), at
   hidden 256 with a vocabulary of 6,000 (issue 6's target: at least 2,000 tokens/s for one stream),
   and tokens/s of scoring text (charrnn.inference.scoring.score_ids, the code ``charrnn eval`` runs), each
   with every backend of ``--backend`` (numpy, the reference; numba, the compiled kernels), the
   backends taking turns round by round.
2. Start-up: the seconds ``charrnn --help`` and a character-level ``charrnn sample`` spend on top of
   the bare Python interpreter, measured as wall time of the real commands (best of several runs)
   minus ``python -c pass``, and the import time ``python -X importtime`` reports for the modules
   they load (issue 6's target: under 0.3 s).

    python -m bench.sampling [--vocab-size 6000] [--hidden-size 256] [--length 2000] [--backend numpy,numba]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def sampling_rates(
    vocab_size: int, hidden_size: int, length: int, streams: Sequence[int], backends: Sequence[str], cell: str,
    rounds: int = 3,
) -> list[dict[str, Any]]:
    """Tokens/s of generate() for each number of streams and backend, on a randomly initialised model.

    The best of ``rounds`` rounds; within a round the backends take turns.
    """
    from charrnn.inference import sampling
    from charrnn.model import backend, network
    from charrnn.config import ModelConfig, SampleConfig

    config = ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, cell=cell)
    params = network.init_params(config, np.random.default_rng(0), init_scale=0.1)
    kernels = {name: backend.select(name) for name in backends}
    for table in kernels.values():  # compile (or load from numba's cache) before timing
        for _ in sampling.generate(params, config, np.array([1]), SampleConfig(length=2), np.random.default_rng(1),
                                 kernels=table):
            pass
    rows = []
    for count in streams:
        settings = SampleConfig(length=length, num_samples=count, temperature=0.8, top_k=None)
        best = {name: float("inf") for name in backends}
        for _ in range(rounds):
            for name, table in kernels.items():
                started = time.perf_counter()
                for _ in sampling.generate(params, config, np.array([1, 2, 3]), settings, np.random.default_rng(1),
                                         kernels=table):
                    pass
                best[name] = min(best[name], time.perf_counter() - started)
        for name in backends:
            rows.append({"backend": name, "streams": count, "tokens": length * count, "seconds": best[name],
                         "tokens_per_s": length * count / best[name], "steps_per_s": length / best[name]})
    return rows


def evaluation_rates(
    vocab_size: int, hidden_size: int, tokens: int, backends: Sequence[str], cell: str, rounds: int = 3
) -> list[dict[str, Any]]:
    """Tokens/s of score_ids() over ``tokens`` random ids for each backend (best of ``rounds``, alternating)."""
    from charrnn.inference import scoring
    from charrnn.model import backend, network
    from charrnn.config import ModelConfig

    config = ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size, cell=cell)
    params = network.init_params(config, np.random.default_rng(0), init_scale=0.1)
    ids = np.random.default_rng(2).integers(vocab_size, size=tokens)
    lengths = np.ones(vocab_size, dtype=np.int64)
    kernels = {name: backend.select(name) for name in backends}
    for table in kernels.values():
        scoring.score_ids(params, config, ids[:100], lengths, kernels=table)
    best = {name: float("inf") for name in backends}
    for _ in range(rounds):
        for name, table in kernels.items():
            started = time.perf_counter()
            scoring.score_ids(params, config, ids, lengths, kernels=table)
            best[name] = min(best[name], time.perf_counter() - started)
    return [{"backend": name, "tokens": tokens, "seconds": best[name], "tokens_per_s": tokens / best[name]}
            for name in backends]


def _best_wall(command: list[str], cwd: str, runs: int = 7) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(command, cwd=cwd, check=True, capture_output=True)
        best = min(best, time.perf_counter() - started)
    return best


def _import_seconds(python_code: str, cwd: str) -> tuple[float, list[tuple[str, float]]]:
    """Total import time -X importtime reports for ``python_code``, and the slowest top-level imports."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", python_code], cwd=cwd, capture_output=True,
                          text=True, check=True)
    total, top = 0, []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match and len(match.group(3)) == 1:  # top-level imports: their cumulative times add up
            cumulative = int(match.group(2))
            total += cumulative
            top.append((match.group(4), cumulative / 1e6))
    return total / 1e6, sorted(top, key=lambda item: -item[1])[:5]


def startup(tmp: str) -> dict[str, Any]:
    """Wall and import time of ``charrnn --help`` and of a character-level ``charrnn sample``."""
    charrnn = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or "charrnn"
    corpus = Path(tmp) / "poems.txt"
    corpus.write_text((REPO / "data" / "tang300.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    subprocess.run([charrnn, "train", str(corpus), "--steps", "2", "--hidden-size", "32", "-q"], cwd=tmp, check=True)
    interpreter = _best_wall([sys.executable, "-c", "pass"], tmp)
    help_wall = _best_wall([charrnn, "--help"], tmp)
    sample_wall = _best_wall([charrnn, "sample", "--seed", "月", "--length", "20", "-q"], tmp)
    help_imports, help_top = _import_seconds("from charrnn.cli import main\ntry: main(['--help'])\nexcept SystemExit: pass", tmp)
    sample_imports, sample_top = _import_seconds(
        "from charrnn.cli import main\ntry: main(['sample', '--seed', '月', '--length', '20', '-q'])\n"
        "except SystemExit: pass", tmp)
    return {
        "interpreter_s": interpreter,
        "help": {"wall_s": help_wall, "over_interpreter_s": help_wall - interpreter, "imports_s": help_imports,
                 "slowest_imports": help_top},
        "sample": {"wall_s": sample_wall, "over_interpreter_s": sample_wall - interpreter,
                   "imports_s": sample_imports, "slowest_imports": sample_top},
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Measure and print (or --json) all the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=6000)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--cell", choices=("rnn", "gru", "lstm"), default="rnn")
    parser.add_argument("--length", type=int, default=2000, help="tokens generated per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--eval-tokens", type=int, default=200_000, help="tokens scored by the evaluation")
    parser.add_argument("--backend", default="numpy,numba",
                        help="comma-separated backends to measure (numba is skipped where it is not installed)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    backends = [name.strip() for name in args.backend.split(",") if name.strip()]
    if not backends or set(backends) - {"numpy", "numba"}:
        parser.error(f"--backend takes a comma-separated subset of numpy,numba; got {args.backend!r}")
    skipped = "numba" in backends and importlib.util.find_spec("numba") is None
    if skipped:
        backends.remove("numba")
    if not backends:
        parser.error("no backend left to measure: numba is not installed (pip install '.[fast]')")
    rates = sampling_rates(args.vocab_size, args.hidden_size, args.length, args.streams, backends, args.cell)
    scoring = evaluation_rates(args.vocab_size, args.hidden_size, args.eval_tokens, backends, args.cell)
    with tempfile.TemporaryDirectory() as tmp:
        times = startup(tmp)
    if args.json:
        print(json.dumps({"sampling": rates, "evaluation": scoring, "startup": times}, indent=2))
        return 0
    if skipped:
        print("note: numba is not installed, so the numba backend was skipped (pip install '.[fast]')")
    print(f"sampling, {args.cell}, hidden {args.hidden_size}, vocabulary {args.vocab_size:,} "
          "(charrnn.inference.sampling.generate), best of 3 rounds, backends alternating:")
    for row in rates:
        print(f"  {row['backend']:<6} {row['streams']:>3} stream(s): {row['tokens_per_s']:>9,.0f} tokens/s "
              f"({row['steps_per_s']:,.0f} steps/s)")
    for row in rates:
        if row["streams"] == 1:
            one = row["tokens_per_s"]
            print(f"  {'PASS' if one >= 2000 else 'FAIL'}: {row['backend']}, one stream at {one:,.0f} tokens/s "
                  "(target ≥ 2,000)")
    print(f"evaluation of {args.eval_tokens:,} tokens (charrnn.inference.scoring.score_ids, 32 streams):")
    for row in scoring:
        print(f"  {row['backend']:<6} {row['tokens_per_s']:>9,.0f} tokens/s")
    print(f"start-up (best of 7; bare interpreter {times['interpreter_s'] * 1e3:.0f} ms):")
    for name in ("help", "sample"):
        row = times[name]
        slow = ", ".join(f"{module} {seconds * 1e3:.0f} ms" for module, seconds in row["slowest_imports"])
        print(f"  charrnn {name:<6} {row['over_interpreter_s'] * 1e3:5.0f} ms over the interpreter; imports "
              f"{row['imports_s'] * 1e3:.0f} ms ({slow})")
        print(f"  {'PASS' if row['over_interpreter_s'] < 0.3 else 'FAIL'}: charrnn {name} under 0.3 s of start-up")
    return 0


if __name__ == "__main__":
    sys.exit(main())
