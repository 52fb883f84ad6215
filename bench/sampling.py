"""Sampling speed and start-up time: the two things a user waits for outside training.

1. Tokens/s of ``charrnn sample``'s generation loop (charrnn.sample.generate, the code the command
   runs) for one stream and for N streams generated together as one batch (``--num-samples N``), at
   hidden 256 with a vocabulary of 6,000 (issue 6's target: at least 2,000 tokens/s for one stream).
2. Start-up: the seconds ``charrnn --help`` and a character-level ``charrnn sample`` spend on top of
   the bare Python interpreter, measured as wall time of the real commands (best of several runs)
   minus ``python -c pass``, and the import time ``python -X importtime`` reports for the modules
   they load (issue 6's target: under 0.3 s).

    python bench/sampling.py [--vocab-size 6000] [--hidden-size 256] [--length 2000] [--json]
"""

from __future__ import annotations

import argparse
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


def sampling_rates(vocab_size: int, hidden_size: int, length: int, streams: Sequence[int]) -> list[dict[str, Any]]:
    """Tokens/s of generate() for each number of streams, on a randomly initialised model."""
    from charrnn import model, sample
    from charrnn.config import ModelConfig, SampleConfig

    config = ModelConfig(vocab_size=vocab_size, hidden_size=hidden_size)
    params = model.init_params(config, np.random.default_rng(0), init_scale=0.1)
    rows = []
    for count in streams:
        settings = SampleConfig(length=length, num_samples=count, temperature=0.8, top_k=None)
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            for _ in sample.generate(params, config, np.array([1, 2, 3]), settings, np.random.default_rng(1)):
                pass
            best = min(best, time.perf_counter() - started)
        rows.append({"streams": count, "tokens": length * count, "seconds": best,
                     "tokens_per_s": length * count / best, "steps_per_s": length / best})
    return rows


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
    """Measure and print (or --json) both figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=6000)
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--length", type=int, default=2000, help="tokens generated per stream")
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rates = sampling_rates(args.vocab_size, args.hidden_size, args.length, args.streams)
    with tempfile.TemporaryDirectory() as tmp:
        times = startup(tmp)
    if args.json:
        print(json.dumps({"sampling": rates, "startup": times}, indent=2))
        return 0
    print(f"sampling, hidden {args.hidden_size}, vocabulary {args.vocab_size:,} (charrnn.sample.generate):")
    for row in rates:
        print(f"  {row['streams']:>3} stream(s): {row['tokens_per_s']:>9,.0f} tokens/s "
              f"({row['steps_per_s']:,.0f} steps/s)")
    one = rates[0]["tokens_per_s"] if rates[0]["streams"] == 1 else None
    if one is not None:
        print(f"  {'PASS' if one >= 2000 else 'FAIL'}: one stream at {one:,.0f} tokens/s (target ≥ 2,000)")
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
