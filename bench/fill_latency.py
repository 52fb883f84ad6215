"""How long ``charrnn fill`` takes from process start to answer, for vocabularies up to 6,000 (issue 21).

For each vocabulary size (85: English characters; 2,600: the Tang poems; 6,000: a synthetic CJK corpus)
this writes a sampling-only checkpoint of charrnn's default size (an untrained model: the work is the
same as a trained one's) twice, left-to-right and bidirectional, then times real ``charrnn fill``
processes on one 50-character line with one blank in the middle: the bidirectional method, and
whole-text scoring with the default --candidates (256) and with every token (--candidates all). Each
time is the best of ``--repeats`` runs (other work only slows a run down); ``charrnn --version`` is timed
as the start-up floor. The target: within 0.3 s.

    python -m bench.fill_latency
    python -m bench.fill_latency --vocab 6000 --repeats 5 --hidden-size 256
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def write_checkpoint(path: Path, vocab_size: int, bidirectional: bool, args: argparse.Namespace) -> list[str]:
    """A sampling-only checkpoint of a model with ``vocab_size`` tokens (CJK ideographs and a newline);
    returns the vocabulary."""
    from charrnn.checkpoints import checkpoint
    from charrnn.checkpoints.checkpoint import Checkpoint, CorpusInfo
    from charrnn.checkpoints.metadata import MODEL, run_identity
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.data.tokenizer import Tokenizer
    from charrnn.model import network
    from charrnn.progress import Progress

    vocab = sorted(["\n"] + [chr(0x4E00 + i) for i in range(vocab_size - 1)])
    tokenizer = Tokenizer("char", tuple(vocab))
    model = ModelConfig(vocab_size=vocab_size, hidden_size=args.hidden_size, cell=args.cell,
                        bidirectional=bidirectional)
    train = TrainConfig(max_steps=1, learning_rate=0.02)
    rng = np.random.default_rng(0)
    params = network.init_params(model, rng, 0.05, 0.5)
    ckpt = Checkpoint(model, train, tokenizer, params, {}, {}, Progress(), rng.bit_generator.state, CorpusInfo(),
                      run_identity(model, train, tokenizer), contents=MODEL)
    checkpoint.write(ckpt, str(path))
    return vocab


def best_seconds(command: list[str], repeats: int) -> tuple[float, float]:
    """The shortest wall time of ``repeats`` runs of ``command`` (each must succeed), and the shortest CPU
    time (user + system, all its threads): on a busy machine the wall time waits for a core, and the CPU
    time is what the run itself costs (an upper bound of its wall time on an idle machine whenever it
    keeps one core busy at a time)."""
    walls, cpus = [], []
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        subprocess.run(command, check=True, capture_output=True)
        walls.append(time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return min(walls), min(cpus)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab", type=int, action="append", help="vocabulary sizes (85, 2600, 6000)")
    parser.add_argument("--hidden-size", type=int, default=128)
    parser.add_argument("--cell", default="rnn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    sizes = args.vocab or [85, 2600, 6000]
    executable = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or "charrnn"
    rows: list[dict[str, Any]] = []
    load = os.getloadavg()[0]
    startup = best_seconds([executable, "--version"], args.repeats)
    with tempfile.TemporaryDirectory() as folder:
        for size in sizes:
            forward, bidi = Path(folder) / f"forward{size}.npz", Path(folder) / f"bidi{size}.npz"
            vocab = write_checkpoint(forward, size, False, args)
            write_checkpoint(bidi, size, True, args)
            rng = np.random.default_rng(size)
            letters = [vocab[int(i)] for i in rng.integers(1, size, size=50)]
            letters[25] = "_"
            line = "".join(letters)
            runs = {
                "bidirectional": [executable, "fill", "-c", str(bidi), line, "-q"],
                "whole-text, 256 candidates": [executable, "fill", "-c", str(forward), line, "-q"],
                "whole-text, every token": [executable, "fill", "-c", str(forward), line, "-q", "--candidates", "all"],
            }
            for method, command in runs.items():
                wall, cpu = best_seconds(command, args.repeats)
                rows.append({"vocab_size": size, "method": method, "seconds": wall, "cpu_seconds": cpu})
    if args.json:
        print(json.dumps({"load_average_at_start": load, "startup_s": startup[0], "startup_cpu_s": startup[1],
                          "hidden_size": args.hidden_size,
                          "cell": args.cell, "rows": rows}, indent=2))
        return 0
    print(f"charrnn fill of one 50-character line with one blank (position 26), {args.cell} H={args.hidden_size}, "
          f"best of {args.repeats} processes; charrnn --version takes {startup[0]:.3f} s ({startup[1]:.3f} s CPU); "
          f"load average {load:.1f}")
    print("| vocabulary | method | seconds from start | CPU seconds |")
    print("| ---: | --- | ---: | ---: |")
    for row in rows:
        print(f"| {row['vocab_size']:,} | {row['method']} | {row['seconds']:.3f} | {row['cpu_seconds']:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
