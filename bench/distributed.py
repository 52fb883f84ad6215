"""Data-parallel training under MPI, measured: N = 1 against N = 2 processes, and mpiexec's own cost (issue 22).

For each configuration (a bundled corpus at a hidden size; by default the Tang poems and The Devil's
Dictionary at H = 256 and 512, --batch-size 64, --seq-length 25) this trains, alternating round-robin
over several rounds, each time in fresh processes:

  plain     one process started without MPI, as ``charrnn train`` runs by itself;
  mpiexec1  the same under ``mpiexec -n 1`` (the MPI start-up and the launcher's thread settings);
  mpiexec2  ``mpiexec -n 2``: two processes, each on half of the batch's streams, one all-reduce per step.

Every process runs one thread, on a core of its own (N = 2: one core each): BLAS, numba and charrnn's
own pools. Two cores do not always give twice the arithmetic (cores that share a physical core, or a
memory bus, or a host with other guests), so each configuration also measures the ceiling: the step's
largest product, (B/2·T) × H by H × V in float32, on one core alone and on both cores at once (two
processes), the second's summed rate over the first's. Each run goes through the code ``charrnn train`` runs (training.session.open_session,
training.runner.run_session, the gradient exchange of training/distributed.py), with validation,
sampling and checkpoints off while it is timed. It prints tokens/s of the whole batch (the best round
by default, or the median), the ratios N = 2 ÷ N = 1 and mpiexec1 ÷ plain, and for N = 2 the bytes each
all-reduce carries, its time in the step (waiting for the slower process included), the time of a bare
all-reduce of that buffer, and the share of a step spent communicating; then the machine and a
Markdown table. ``--json`` prints one JSON document instead.

    python -m bench.distributed                                   # the figures of docs/distributed.md
    python -m bench.distributed --config zh --hidden-sizes 512    # the issue's target alone
    python -m bench.distributed --config en --hidden-sizes 256 --rounds 1 --steps 5

Needs the mpi extra (pip install '.[mpi]': mpi4py and the MPICH wheel's mpiexec beside this Python).
Targets on a 2-core machine: mpiexec2 ≥ 1.6 × the tokens/s of plain at H = 512, --batch-size 64, Tang
poems; mpiexec1 within 3 % of plain.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from bench.machine import REPO_ROOT, machine_info

CONFIGS = {"zh": "tang300.txt", "en": "devils_dictionary.txt"}  # bundled in data/
VARIANTS = ("plain", "mpiexec1", "mpiexec2")
THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
# Bare all-reduces timed after training, of the gradient buffer's size.
ALLREDUCE_REPEATS = 50
RUN_TIMEOUT_S = 1800


def mpiexec_path() -> Optional[str]:
    """The mpiexec beside this Python (the mpi extra's MPICH), else the first on PATH."""
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


# --- the worker: one training run in this process (one rank of an MPI job, or alone) -------------------


def _rank_from_environment() -> int:
    from charrnn.mpi_environment import RANK_VARIABLES

    for name in RANK_VARIABLES:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


def worker(args: argparse.Namespace) -> int:
    """Train ``args.warmup`` + ``args.steps`` steps; the root prints one JSON line of measurements."""
    if hasattr(os, "sched_setaffinity"):
        # One core per process, chosen before any thread pool sizes itself from the cores it may use.
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[_rank_from_environment() % len(cores)]})

    from charrnn.config import ComputeConfig, DataConfig, ModelConfig, ScheduleConfig, TrainConfig
    from charrnn.model.workspace import Workspace
    from charrnn.training import distributed, loop, runner
    from charrnn.training.session import TrainRequest, open_session

    group = distributed.join()
    total_steps = args.warmup + args.steps
    request = TrainRequest(
        corpus_paths=(str(args.corpus),),
        model=ModelConfig(hidden_size=args.hidden_size, cell=args.cell),
        train=TrainConfig(batch_size=args.batch_size, seq_length=args.seq_length, max_steps=total_steps,
                          val_fraction=0.0, rng_seed=1),
        data=DataConfig(cache_dir=str(args.cache_dir)),
        schedule=ScheduleConfig(checkpoint_dir=str(args.checkpoint_dir), eval_every=0, sample_every=0,
                                checkpoint_every=0),
        overwrite=True,
        explicit=frozenset({"batch_size"}),
        compute=ComputeConfig(backend=args.backend),
    )
    session = open_session(request, group=group)
    session.trainee.workspace = Workspace(threads=1)
    try:
        started = exchanged_s = 0.0
        step_seconds: list[float] = []
        for event in runner.run_session(session):
            if not isinstance(event, loop.StepResult):
                continue
            exchange = session.trainee.combine
            if event.step == args.warmup:
                group.barrier()  # every process starts the timed steps together
                started = time.perf_counter()
                exchanged_s = exchange.seconds if exchange is not None else 0.0
            elif event.step > args.warmup:
                step_seconds.append(event.seconds)
            if event.step == total_steps:
                elapsed_s = time.perf_counter() - started
                exchanged_s = (exchange.seconds if exchange is not None else 0.0) - exchanged_s
        exchange = session.trainee.combine
        bytes_per_step = exchange.bytes_per_step if exchange is not None else 0
        bare_s = _bare_allreduce_s(group, exchange) if exchange is not None else 0.0
    finally:
        session.close()
    if group.is_root:
        tokens = args.steps * args.batch_size * args.seq_length
        print(json.dumps({
            "processes": group.size,
            "backend": session.trainee.kernels.name,
            "parameters": sum(p.size for p in session.trainee.params.values()),
            "vocab_size": session.model_config.vocab_size,
            "tokens_per_s": tokens / elapsed_s,
            "seconds_per_step": elapsed_s / args.steps,
            "median_step_s": statistics.median(step_seconds),
            "allreduce_bytes_per_step": bytes_per_step,
            "allreduce_in_step_s": exchanged_s / args.steps,
            "allreduce_bare_s": bare_s,
        }), flush=True)
    return 0


def _bare_allreduce_s(group, exchange) -> float:
    """Seconds of one all-reduce of the exchange's buffer with nothing else running: the processes meet at
    a barrier first, so no waiting for the slower one is counted."""
    buffer = exchange.buffer.copy()
    times = []
    for _ in range(ALLREDUCE_REPEATS):
        group.barrier()
        started = time.perf_counter()
        group.sum_in_place(buffer)
        times.append(time.perf_counter() - started)
        buffer[...] = 0  # sums of sums would overflow into infinities, whose arithmetic may be slower
    return statistics.median(times)


# --- the ceiling: what two cores give to two processes of pure arithmetic ------------------------------


def gemm_worker(args: argparse.Namespace) -> int:
    """Repeat an (M × K)·(K × N) float32 product on core ``args.core`` for ``args.gemm_seconds``; print GFLOP/s."""
    if hasattr(os, "sched_setaffinity"):
        cores = sorted(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cores[args.core % len(cores)]})
    import numpy as np

    rows, inner, columns = (int(size) for size in args.gemm.split(","))
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, inner), dtype=np.float32)
    b = rng.standard_normal((inner, columns), dtype=np.float32)
    out = np.empty((rows, columns), dtype=np.float32)
    np.matmul(a, b, out=out)
    products, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.gemm_seconds:
        np.matmul(a, b, out=out)
        products += 1
    print(json.dumps({"gflop_s": 2 * rows * inner * columns * products / (time.perf_counter() - started) / 1e9}))
    return 0


def ceiling(shape: tuple[int, int, int], seconds: float) -> dict[str, float]:
    """GFLOP/s of the product ``shape`` on one core alone, and summed over two processes on two cores at once."""
    def start(core: int) -> subprocess.Popen:
        command = [sys.executable, "-m", "bench.distributed", "--gemm", ",".join(map(str, shape)), "--core", str(core),
                   "--gemm-seconds", str(seconds)]
        return subprocess.Popen(command, cwd=REPO_ROOT, env=_environment(), stdout=subprocess.PIPE, text=True)

    def rate(process: subprocess.Popen) -> float:
        stdout, _ = process.communicate(timeout=RUN_TIMEOUT_S)
        return json.loads(stdout)["gflop_s"]

    alone = rate(start(0))
    pair = [start(0), start(1)]
    together = sum(rate(process) for process in pair)
    return {"one_core_gflop_s": alone, "two_cores_gflop_s": together, "two_core_ceiling": together / alone}


# --- the driver: rounds of every variant, side by side ---------------------------------------------------


def _command(variant: str, worker_args: list[str], mpiexec: str) -> list[str]:
    python = [sys.executable, "-m", "bench.distributed", "--worker", *worker_args]
    if variant == "plain":
        return python
    return [mpiexec, "-n", variant[-1], *python]


def _environment() -> dict[str, str]:
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("PMI_", "PMIX_", "OMPI_", "MPI_LOCAL", "CHARRNN_"))}
    env.update({name: "1" for name in THREAD_VARIABLES})  # one thread per process, in every variant
    return env


def run_variant(variant: str, worker_args: list[str], mpiexec: str) -> dict[str, Any]:
    """One training run of ``variant``; its measurements."""
    run = subprocess.run(_command(variant, worker_args, mpiexec), cwd=REPO_ROOT, env=_environment(),
                         capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    if run.returncode != 0:
        raise SystemExit(f"Error: the {variant} run failed (exit {run.returncode}):\n{run.stderr.strip()}")
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def measure(args: argparse.Namespace, corpus: Path, hidden_size: int, workspace: Path, mpiexec: str) -> dict[str, Any]:
    """Every variant's best (or median) round for one configuration."""
    worker_args = [
        "--corpus", str(corpus), "--hidden-size", str(hidden_size), "--batch-size", str(args.batch_size),
        "--seq-length", str(args.seq_length), "--cell", args.cell, "--backend", args.backend,
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--cache-dir", str(workspace / "cache"),
    ]
    rounds: dict[str, list[dict[str, Any]]] = {variant: [] for variant in VARIANTS}
    for round_index in range(args.rounds):
        for variant in VARIANTS:
            folder = tempfile.mkdtemp(prefix=f"{variant}-", dir=workspace)  # each run's checkpoint of its own
            result = run_variant(variant, [*worker_args, "--checkpoint-dir", folder], mpiexec)
            rounds[variant].append(result)
            if not args.json:
                print(f"  round {round_index + 1}: {variant:<9} {result['tokens_per_s']:>9,.0f} tokens/s", file=sys.stderr)
    chosen = {}
    for variant, results in rounds.items():
        ordered = sorted(results, key=lambda result: result["tokens_per_s"])
        chosen[variant] = ordered[-1] if args.statistic == "best" else ordered[len(ordered) // 2]
        chosen[variant]["rounds_tokens_per_s"] = [result["tokens_per_s"] for result in results]
    two = chosen["mpiexec2"]
    shape = (args.batch_size // 2 * args.seq_length, hidden_size, two["vocab_size"])
    limits = max((ceiling(shape, args.gemm_seconds) for _ in range(args.rounds)), key=lambda c: c["two_core_ceiling"])
    return {
        **limits,
        "corpus": corpus.name,
        "hidden_size": hidden_size,
        "batch_size": args.batch_size,
        "seq_length": args.seq_length,
        "parameters": two["parameters"],
        "vocab_size": two["vocab_size"],
        "backend": two["backend"],
        "variants": chosen,
        "speedup_n2": two["tokens_per_s"] / chosen["plain"]["tokens_per_s"],
        "mpiexec1_vs_plain": chosen["mpiexec1"]["tokens_per_s"] / chosen["plain"]["tokens_per_s"],
        "allreduce_bytes_per_step": two["allreduce_bytes_per_step"],
        "allreduce_in_step_s": two["allreduce_in_step_s"],
        "allreduce_bare_s": two["allreduce_bare_s"],
        "compute_s_per_step_n1": chosen["plain"]["seconds_per_step"],
        "communicating_share": two["allreduce_in_step_s"] / two["seconds_per_step"],
        "bare_share": two["allreduce_bare_s"] / two["seconds_per_step"],
    }


def predicted_speedup(compute_s: float, bytes_per_step: int, processes: int, bandwidth_bytes_s: float) -> float:
    """Tokens/s of ``processes`` ranks over one's, for a step of ``compute_s`` on one rank and an all-reduce of
    ``bytes_per_step``: each rank computes 1/N of the step, then a ring all-reduce sends and receives
    2·(N − 1)/N of the buffer over a link of ``bandwidth_bytes_s`` (latency left out: microseconds per
    message against milliseconds of data here)."""
    communicate_s = 2 * (processes - 1) / processes * bytes_per_step / bandwidth_bytes_s
    return compute_s / (compute_s / processes + communicate_s)


def scaling_table(rows: list[dict[str, Any]], bandwidths_gb_s: list[float], processes: list[int]) -> list[str]:
    """The scaling model's predicted speedups, as a Markdown table: a row per configuration and bandwidth."""
    lines = [
        "| corpus | H | one step on one core | all-reduce MB | link GB/s | " +
        " | ".join(f"N={n}" for n in processes) + " |",
        "| --- | ---: | ---: | ---: | ---: | " + " | ".join("---:" for _ in processes) + " |",
    ]
    for row in rows:
        compute_s, size = row["compute_s_per_step_n1"], row["allreduce_bytes_per_step"]
        for gb_s in bandwidths_gb_s:
            speedups = [predicted_speedup(compute_s, size, n, gb_s * 1e9) for n in processes]
            lines.append(
                f"| {row['corpus']} | {row['hidden_size']} | {compute_s * 1e3:.0f} ms | {size / 1e6:.1f} | {gb_s:g} | " +
                " | ".join(f"{speedup:.1f}×" for speedup in speedups) + " |"
            )
    return lines


def table(rows: list[dict[str, Any]]) -> list[str]:
    """The measurements as a Markdown table."""
    lines = [
        "| corpus | H | parameters | plain tokens/s | mpiexec -n 1 | mpiexec -n 2 | N=2 ÷ N=1 | two-core ceiling "
        "| mpiexec1 ÷ plain | all-reduce MB/step | all-reduce in step | bare all-reduce | step communicating |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        variants = row["variants"]
        lines.append(
            f"| {row['corpus']} | {row['hidden_size']} | {row['parameters']:,} "
            f"| {variants['plain']['tokens_per_s']:,.0f} | {variants['mpiexec1']['tokens_per_s']:,.0f} "
            f"| {variants['mpiexec2']['tokens_per_s']:,.0f} | {row['speedup_n2']:.2f}× | {row['two_core_ceiling']:.2f}× "
            f"| {row['mpiexec1_vs_plain']:.3f} "
            f"| {row['allreduce_bytes_per_step'] / 1e6:.1f} | {row['allreduce_in_step_s'] * 1e3:.1f} ms "
            f"| {row['allreduce_bare_s'] * 1e3:.1f} ms | {row['communicating_share']:.1%} |"
        )
    return lines


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="all", help=f"corpora: {', '.join(CONFIGS)} or all (default)")
    parser.add_argument("--hidden-sizes", default="256,512", help="comma-separated hidden sizes (default 256,512)")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, split among the processes")
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--cell", default="rnn", choices=("rnn", "gru", "lstm"))
    parser.add_argument("--backend", default="auto", choices=("auto", "numpy", "numba"),
                        help="as charrnn train's --backend (auto: numba where installed)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps before them")
    parser.add_argument("--rounds", type=int, default=3, help="runs of every variant, taken in turns")
    parser.add_argument("--statistic", default="best", choices=("best", "median"), help="of the rounds")
    parser.add_argument("--gemm-seconds", type=float, default=2.0,
                        help="how long each measurement of the two-core ceiling repeats its product")
    parser.add_argument("--bandwidths", default="12.5,1.25,0.125",
                        help="link speeds in GB/s for the scaling model (default: 100 Gb/s InfiniBand, 10 and 1 Gb/s "
                             "Ethernet)")
    parser.add_argument("--model-processes", default="2,4,8,16,32",
                        help="process counts the scaling model predicts for (default 2,4,8,16,32)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    # A run of one configuration in this process (what the driver starts, under mpiexec or alone).
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--hidden-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cache-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gemm", help=argparse.SUPPRESS)  # M,K,N: a product timed on --core, for the ceiling
    parser.add_argument("--core", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args)
    if args.gemm:
        return gemm_worker(args)

    mpiexec = mpiexec_path()
    if mpiexec is None:
        parser.error("no mpiexec found: install the mpi extra (pip install '.[mpi]') or put an MPI's mpiexec on PATH")
    names = list(CONFIGS) if args.config == "all" else args.config.split(",")
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        parser.error(f"unknown --config {', '.join(unknown)}; choose from {', '.join(CONFIGS)} or all")
    if args.batch_size % 2:
        parser.error("--batch-size must split between 2 processes: give an even number")
    if args.warmup < 1 or args.steps < 1:
        parser.error("--warmup and --steps must be at least 1")
    hidden_sizes = [int(size) for size in args.hidden_sizes.split(",")]
    bandwidths_gb_s = [float(value) for value in args.bandwidths.split(",")]
    model_processes = [int(value) for value in args.model_processes.split(",")]
    info = machine_info()
    rows = []
    with tempfile.TemporaryDirectory(prefix="charrnn-bench-distributed-") as folder:
        for name in names:
            corpus = REPO_ROOT / "data" / CONFIGS[name]
            for hidden_size in hidden_sizes:
                if not args.json:
                    print(f"{corpus.name}, H={hidden_size}, B={args.batch_size}, T={args.seq_length}:", file=sys.stderr)
                rows.append(measure(args, corpus, hidden_size, Path(folder), mpiexec))
    command = "python -m bench.distributed " + " ".join(argv if argv is not None else sys.argv[1:])
    for row in rows:
        row["predicted_speedup"] = {
            f"{gb_s:g} GB/s": {n: predicted_speedup(row["compute_s_per_step_n1"], row["allreduce_bytes_per_step"], n,
                                                    gb_s * 1e9) for n in model_processes}
            for gb_s in bandwidths_gb_s
        }
    if args.json:
        print(json.dumps({"machine": info, "command": command.strip(), "rows": rows}, indent=2, ensure_ascii=False))
        return 0
    print(f"machine: {info['cpu']}, {info['cores_usable']} usable cores, {info['os']}, Python {info['python']}, "
          f"numpy {info['numpy']} ({info['blas']}), numba {info['numba']}, charrnn {info['charrnn_revision']}, "
          f"{info['date']}")
    print(f"command: {command.strip()}")
    print(f"each process one thread on a core of its own; {args.statistic} of {args.rounds} rounds of "
          f"{args.steps} timed steps after {args.warmup}; backend {rows[0]['backend'] if rows else args.backend}")
    for row in rows:
        variants = row["variants"]
        print(f"{row['corpus']} H={row['hidden_size']} ({row['parameters']:,} parameters, V={row['vocab_size']:,}): "
              f"plain {variants['plain']['tokens_per_s']:,.0f}, mpiexec -n 1 {variants['mpiexec1']['tokens_per_s']:,.0f}, "
              f"mpiexec -n 2 {variants['mpiexec2']['tokens_per_s']:,.0f} tokens/s; N=2 ÷ N=1 {row['speedup_n2']:.2f}× "
              f"(two-core ceiling {row['two_core_ceiling']:.2f}×: the step's largest product at "
              f"{row['one_core_gflop_s']:.1f} GFLOP/s on one core, {row['two_cores_gflop_s']:.1f} on two), "
              f"mpiexec1 ÷ plain {row['mpiexec1_vs_plain']:.3f}; all-reduce {row['allreduce_bytes_per_step'] / 1e6:.2f} MB "
              f"per step, {row['allreduce_in_step_s'] * 1e3:.2f} ms in the step ({row['communicating_share']:.1%} of it), "
              f"{row['allreduce_bare_s'] * 1e3:.2f} ms bare ({row['bare_share']:.1%}); one process computes a step in "
              f"{row['compute_s_per_step_n1'] * 1e3:.0f} ms")
    print()
    print("\n".join(table(rows)))
    print()
    print("Scaling model: one core's step divided among N processes, plus a ring all-reduce of the step's bytes "
          "over the link (tokens/s of N processes ÷ one's):")
    print()
    print("\n".join(scaling_table(rows, bandwidths_gb_s, model_processes)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
