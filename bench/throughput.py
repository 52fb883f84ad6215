"""Training throughput of charrnn against PyTorch and the classic algorithm, side by side (issues 6, 11).

For each configuration (a corpus at hidden 256, batch 32, seq 25 by default) and each cell (``--cells``)
this trains, alternating round-robin over several rounds and each time in a fresh subprocess of its own:

  charrnn-numpy  charrnn.training.loop.train_step through the public API, the code ``charrnn train`` runs per
  charrnn-numba  step, with each backend of ``--backend`` (numpy: the reference; numba: compiled kernels);
  torch          bench/torch_reference.py, the same model as a PyTorch user writes it (float32, all cores);
  classic        charrnn/model/reference.py, the tutorials' single-stream loop (batch 1, float64, Python per token;
                 vanilla cell only);

and numpy's own float32 GEMM of the output layer's shape, (B·T)×H by H×V, as the rate to compare with.
It prints tokens/s (the best round by default, or the median), the achieved GFLOP/s counting the model
FLOPs per token of ``model_flops_per_token``, the fraction of the GEMM rate that reaches, each
implementation's peak RSS, the ratios, the machine, and a Markdown table. ``--json`` prints one JSON
document instead.

    python -m bench.throughput --config all            # the figures of docs/performance.md (a few minutes)
    python -m bench.throughput --config en --cells rnn,gru,lstm --backend numpy,numba --impl charrnn,torch
    python -m bench.throughput --config zh --cells gru --num-layers 2 --rounds 3
    python -m bench.throughput --loss-check 300         # do charrnn's and torch's losses fall alike?
    python -m bench.throughput --config en --impl charrnn --bidirectional   # bidirectional ÷ forward, both backends

With ``--bidirectional`` every charrnn variant is also measured as a bidirectional (blank-filling) model of
the same size (``charrnn-numpy/bidi``; ``--look-ahead`` tokens past each window), in the same rounds, and
the ratio of its tokens/s to the forward model's is printed (issue 21's target: at least 0.45×).

Without torch installed, the torch rows are skipped with a note (pip install -r bench/requirements.txt).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from bench.machine import REPO_ROOT, machine_info, peak_rss_mib

BENCH_DIR = Path(__file__).resolve().parent
# The corpora the documented figures use are bundled in data/, so a clone reproduces them.
DEFAULT_CORPORA_DIR = REPO_ROOT / "data"

IMPLEMENTATIONS = ("charrnn", "torch", "classic")
BACKENDS = ("numpy", "numba")
CELLS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
IMPL_LABELS = {
    "charrnn-numpy": "charrnn, numpy backend",
    "charrnn-numba": "charrnn, numba backend",
    "torch": "PyTorch reference",
    "classic": "classic (batch 1, float64)",
    "charrnn-numpy/bidi": "charrnn bidirectional, numpy backend",
    "charrnn-numba/bidi": "charrnn bidirectional, numba backend",
}
BIDI = "/bidi"  # the suffix of a bidirectional variant
CONFIGS = {
    "zh": "tang300.txt",  # Chinese characters, vocabulary ≈2,600
    "en": "devils_dictionary.txt",  # English characters, vocabulary ≈85
    "v6000": None,  # synthetic: 5,999 CJK characters with Zipf frequencies plus newline
}
FLOPS_FORMULA = ("6·H·V + 6·G·H²·(2L − 1) + 6·G·H·E, G = 1, 3, 4 gates for rnn, gru, lstm, L layers, E the embedding "
                 "size (0: none)")
CHARRNN_INIT = {"init_scale": 0.01, "embedding_scale": 0.5}  # charrnn's TrainConfig defaults
# Each GEMM measurement repeats the product for at least this long, so one round is not a single call.
GEMM_MIN_SECONDS = 0.5
SYNTHETIC_SYMBOLS = 5_999  # plus "\n": a vocabulary of 6,000
SYNTHETIC_LINES = 40_000  # of 24 ideographs and a newline: 1,000,000 characters
SYNTHETIC_SEED = 6_000
LOSS_TAIL_STEPS = 10  # the reported "last" loss is the mean of this many final steps
# Other work on the machine only ever slows a round down, so the best round is the default figure.
STATISTICS = {"best": max, "median": statistics.median}
NOISY_SPREAD = 1.25  # rounds differing by more than this factor get a note that the machine was busy
BUSY_LOAD = 1.0  # a 1-minute load average above this at the start gets a note too



def model_flops_per_token(
    hidden_size: int, vocab_size: int, cell: str = "rnn", num_layers: int = 1, embed_size: int = 0
) -> int:
    """Model FLOPs per token: 6·H·V + 6·G·H²·(2L − 1) + 6·G·H·E for a cell of G gates, L layers and an
    embedding of size E (0: the one-table model, whose first layer reads its input by a lookup).

    The output layer (H×V), every layer's recurrence (H×G·H), the input weights of the layers above
    the first (H×G·H) and, with an embedding, the first layer's input matrix (E×G·H) each cost 2 FLOPs
    per weight in the forward product, 2 in the input-gradient product and 2 in the weight-gradient
    product. Elementwise work, the embedding lookup and the optimizer are not counted.
    """
    recurrent_matrices = 2 * num_layers - 1
    gates = GATES[cell]
    return (6 * hidden_size * vocab_size + 6 * gates * hidden_size * hidden_size * recurrent_matrices
            + 6 * gates * hidden_size * embed_size)


def embed_size(args) -> int:
    """charrnn's embedding size for this run: --embed-size, else charrnn's default for --hidden-size."""
    if getattr(args, "embed_size", None) is not None:
        return args.embed_size
    from charrnn.config import ModelConfig

    return ModelConfig(hidden_size=args.hidden_size).embed_size


# --- data ---------------------------------------------------------------------------------------------


def write_synthetic_corpus(path: Path) -> None:
    """A seeded ~1M-character corpus with a vocabulary of 6,000, for cost against vocabulary size.

    5,999 CJK ideographs (from U+4E00) drawn with Zipf frequencies (weight 1/rank, roughly how
    character frequencies fall off in Chinese text), each ideograph placed at least once, in lines
    of 24 ideographs and a newline.
    """
    rng = np.random.default_rng(SYNTHETIC_SEED)
    per_line = 24
    total = SYNTHETIC_LINES * per_line
    weights = 1.0 / np.arange(1, SYNTHETIC_SYMBOLS + 1)
    drawn = rng.choice(SYNTHETIC_SYMBOLS, size=total - SYNTHETIC_SYMBOLS, p=weights / weights.sum())
    symbols = np.concatenate([rng.permutation(SYNTHETIC_SYMBOLS), drawn]).reshape(SYNTHETIC_LINES, per_line)
    codepoints = np.full((SYNTHETIC_LINES, per_line + 1), ord("\n"), dtype=np.uint32)
    codepoints[:, :per_line] = 0x4E00 + symbols
    path.write_text(codepoints.tobytes().decode("utf-32-le"), encoding="utf-8")


@dataclass
class Dataset:
    """One configuration's token ids, prepared once by the parent and loaded by every worker."""

    name: str
    corpus: str  # the path, or a description of the synthetic corpus
    data_dir: Path  # holds ids.npy (N,) and streams.npy (B, L)
    vocab_size: int
    tokens: int


def prepare_dataset(name: str, corpus_path: Path, corpus_label: str, work_dir: Path, args) -> Dataset:
    """Tokenize ``corpus_path`` with charrnn's character tokenizer and save its ids and streams.

    Every implementation then trains on exactly these ids; the classic one reads ``ids.npy`` as one
    stream, the batched ones the (B, L) ``streams.npy`` from charrnn.data.corpus.split_streams.
    """
    from charrnn.data.streams import split_streams
    from charrnn.data.tokenizer import Tokenizer

    # Universal newlines turn \r\n and \r into \n, as charrnn's reader does.
    with open(corpus_path, encoding="utf-8", newline=None) as f:
        tokenizer, ids = Tokenizer.fit(f.read(), "char")
    data_dir = work_dir / name
    data_dir.mkdir()
    np.save(data_dir / "ids.npy", ids)
    np.save(data_dir / "streams.npy", np.ascontiguousarray(split_streams(ids, args.batch_size, args.seq_length)))
    return Dataset(name, corpus_label, data_dir, tokenizer.vocab_size, len(ids))


# --- workers: one implementation's measurement, in a process of its own --------------------------------


def charrnn_step_function(
    vocab_size: int, args, total_steps: int, cell: str = "rnn", backend_name: str = "numpy",
    bidirectional: bool = False,
) -> Callable[[np.ndarray], float]:
    """A function training charrnn one step on (B, L) streams and returning the step's loss in nats.

    ``total_steps`` only sets TrainConfig.max_steps, which train_step itself does not check.
    """
    from charrnn.model import backend
    from charrnn.training import loop
    from charrnn.config import ModelConfig, TrainConfig
    from charrnn.model.workspace import Workspace

    model_config = ModelConfig(
        vocab_size=vocab_size, hidden_size=args.hidden_size, dtype="float32", cell=cell,
        num_layers=getattr(args, "num_layers", 1), embed_size=embed_size(args), bidirectional=bidirectional,
    )
    train_config = TrainConfig(
        look_ahead=getattr(args, "look_ahead", 0),
        seq_length=args.seq_length,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        clip=args.clip,
        max_steps=total_steps,
        rng_seed=0,
    )
    trainee = loop.new_trainee(model_config, train_config, backend.select(backend_name))
    threads = getattr(args, "threads", None)
    if threads:
        trainee.workspace = Workspace(threads=threads)
    return lambda streams: loop.train_step(trainee, streams, train_config).loss_nats


def _time_steps(step: Callable[[], float], warmup: int, steps: int) -> tuple[float, list[float]]:
    """Run ``warmup`` then ``steps`` calls of ``step``; return the seconds of the timed ones and all losses."""
    losses = [step() for _ in range(warmup)]
    started = time.perf_counter()
    for _ in range(steps):
        losses.append(step())
    return time.perf_counter() - started, losses


def run_worker(args) -> int:
    """Measure one implementation (``args.worker``) and print one JSON line on stdout."""
    data_dir = Path(args.data_dir)
    vocab_size = args.vocab_size
    report: dict[str, Any] = {"impl": args.worker}
    if args.threads and hasattr(os, "sched_setaffinity"):
        # Fewer cores than the machine has: every thread pool in the worker sees only these.
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[: args.threads])
    if args.worker == "gemm":
        rows = args.batch_size * args.seq_length
        rng = np.random.default_rng(0)
        left = rng.standard_normal((rows, args.hidden_size)).astype(np.float32)  # (B·T, H)
        right = rng.standard_normal((args.hidden_size, vocab_size)).astype(np.float32)  # (H, V)
        out = np.empty((rows, vocab_size), dtype=np.float32)
        for _ in range(3):
            np.matmul(left, right, out=out)
        repeats, started = 0, time.perf_counter()
        while (elapsed_s := time.perf_counter() - started) < GEMM_MIN_SECONDS:
            np.matmul(left, right, out=out)
            repeats += 1
        report["gflops"] = 2 * rows * args.hidden_size * vocab_size * repeats / elapsed_s / 1e9
        report["shape"] = f"{rows}×{args.hidden_size} · {args.hidden_size}×{vocab_size}"
        print(json.dumps(report))
        return 0

    if args.worker == "classic":
        from charrnn.model import reference

        ids = np.load(data_dir / "ids.npy")
        trainer = reference.Trainer(
            vocab_size, args.hidden_size,
            seq_length=args.seq_length, learning_rate=args.learning_rate, clip=args.clip,
        )
        report["setup_rss_mib"] = peak_rss_mib()
        seconds, losses = _time_steps(lambda: trainer.train_step(ids), args.classic_warmup, args.classic_steps)
        tokens = args.classic_steps * args.seq_length
    else:
        streams = np.load(data_dir / "streams.npy")
        if args.worker == "torch":
            import torch

            from bench import torch_reference  # only the torch worker imports torch
            trainer = torch_reference.TorchTrainer(
                vocab_size, args.hidden_size, num_layers=args.num_layers, cell=args.cell,
                lr=args.learning_rate, clip=args.clip, seq_length=args.seq_length, num_threads=args.threads,
            )
            report["torch_version"] = torch.__version__
            report["torch_threads"] = torch.get_num_threads()
            report["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
            report["parameters"] = trainer.parameter_count()
            step = lambda: trainer.train_step(streams)  # noqa: E731
        else:
            started = time.perf_counter()
            train = charrnn_step_function(vocab_size, args, args.warmup + args.steps, args.cell, args.backend,
                                          args.bidirectional)
            train(streams)  # the first step compiles the numba backend's kernels, or loads them from its cache
            report["first_step_s"] = time.perf_counter() - started
            step = lambda: train(streams)  # noqa: E731
        report["setup_rss_mib"] = peak_rss_mib()
        seconds, losses = _time_steps(step, args.warmup, args.steps)
        tokens = args.steps * args.batch_size * args.seq_length
    report.update(
        tokens_per_s=tokens / seconds,
        tokens=tokens,
        seconds=seconds,
        first_loss_nats=losses[0],
        last_loss_nats=float(np.mean(losses[-LOSS_TAIL_STEPS:])),
        peak_rss_mib=peak_rss_mib(),
    )
    print(json.dumps(report))
    return 0


def _worker_command(variant: str, dataset: Dataset, cell: str, args) -> list[str]:
    bidirectional = variant.endswith(BIDI)
    impl, _, backend_name = variant.removesuffix(BIDI).partition("-")
    return [
        sys.executable, "-m", "bench.throughput", "--worker", impl, "--backend", backend_name or "numpy",
        "--cell", cell, "--num-layers", str(args.num_layers), "--embed-size", str(embed_size(args)),
        "--data-dir", str(dataset.data_dir), "--vocab-size", str(dataset.vocab_size),
        "--hidden-size", str(args.hidden_size), "--batch-size", str(args.batch_size),
        "--seq-length", str(args.seq_length), "--learning-rate", str(args.learning_rate),
        "--clip", str(args.clip), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--threads", str(args.threads or 0),
        "--classic-steps", str(args.classic_steps), "--classic-warmup", str(args.classic_warmup),
        "--look-ahead", str(args.look_ahead),
    ] + (["--bidirectional"] if bidirectional else [])


def worker_environment(impl: str, threads: Optional[int] = None) -> dict[str, str]:
    """The environment a worker runs in: charrnn's (and numpy's GEMM) as the ``charrnn`` command sets it.

    ``charrnn`` tunes OpenBLAS before numpy loads (charrnn.cli.BLAS_SETTINGS); its worker gets the
    same, so it times exactly what ``charrnn train`` runs. The other implementations run as their
    users run them, in the environment as it is.
    """
    env = dict(os.environ)
    if threads:
        env["OPENBLAS_NUM_THREADS"] = str(threads)
    if impl in ("charrnn", "gemm"):
        from charrnn.cli import BLAS_SETTINGS

        for name, value in BLAS_SETTINGS.items():
            env.setdefault(name, value)
    return env


def run_in_subprocess(variant: str, dataset: Dataset, cell: str, args) -> dict[str, Any]:
    """One measurement in a fresh interpreter, so its peak RSS is its own; an ``error`` key if it failed."""
    impl = variant.partition("-")[0]
    done = subprocess.run(_worker_command(variant, dataset, cell, args), capture_output=True, text=True,
                          env=worker_environment(impl, args.threads), cwd=REPO_ROOT)
    lines = done.stdout.strip().splitlines()
    if done.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except ValueError:
            return {"impl": impl, "error": f"the worker printed no JSON result: {lines[-1][:200]}"}
    last_error = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
    return {"impl": impl, "error": last_error}


# --- the parent: rounds, summary, output ----------------------------------------------------------------


@dataclass
class ImplResult:
    """Every round's measurement of one implementation on one configuration."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    error: Optional[str] = None

    def summary(self, statistic: str, flops_per_token: int, gemm_gflops: Optional[float]) -> dict[str, Any]:
        """tokens/s by ``statistic`` over the rounds, its range, GFLOP/s, fraction of the GEMM rate,
        peak RSS and losses, as plain data."""
        if not self.rounds:
            return {"error": self.error}
        rates = [r["tokens_per_s"] for r in self.rounds]
        tokens_per_s = STATISTICS[statistic](rates)
        gflops = tokens_per_s * flops_per_token / 1e9
        last = self.rounds[-1]
        return {
            "tokens_per_s": tokens_per_s,
            "tokens_per_s_min": min(rates),
            "tokens_per_s_max": max(rates),
            "tokens_per_s_rounds": rates,
            "gflops": gflops,
            "fraction_of_gemm": gflops / gemm_gflops if gemm_gflops else None,
            # Each round is a new process; the largest peak is the figure to plan memory by.
            "peak_rss_mib": max(r["peak_rss_mib"] for r in self.rounds),
            "setup_rss_mib": max(r["setup_rss_mib"] for r in self.rounds),
            "first_loss_nats": last["first_loss_nats"],
            "last_loss_nats": last["last_loss_nats"],
            # charrnn's first step: with the numba backend, the first round compiles (or loads the cache).
            "first_step_s_rounds": [r["first_step_s"] for r in self.rounds if "first_step_s" in r],
            "error": self.error,
        }


def measure_config(dataset: Dataset, cell: str, impls: Sequence[str], args) -> dict[str, Any]:
    """Alternate the implementations (and the GEMM) over ``args.rounds`` rounds; summarise the config.

    ``impls`` are variants: charrnn-<backend>, torch, classic.
    """
    label = f"{dataset.name} {cell}" + (f" ×{args.num_layers}" if args.num_layers > 1 else "")
    results = {impl: ImplResult() for impl in impls}
    gemm_rates: list[float] = []
    extra: dict[str, Any] = {}
    for round_index in range(args.rounds):
        # Rotate the order each round so no implementation always runs first (or after the same one).
        shift = round_index % len(impls)
        for impl in [*impls[shift:], *impls[:shift], "gemm"]:
            if impl != "gemm" and results[impl].error:
                continue
            report = run_in_subprocess(impl, dataset, cell, args)
            if "error" in report:
                results[impl].error = report["error"]
                print(f"[{label}] round {round_index + 1}: {impl} failed: {report['error']}",
                      file=sys.stderr)
                continue
            if impl == "gemm":
                gemm_rates.append(report["gflops"])
                extra["gemm_shape"] = report["shape"]
                rate = f"{report['gflops']:.1f} GFLOP/s"
            else:
                results[impl].rounds.append(report)
                extra.update({k: v for k, v in report.items() if k.startswith("torch_")})
                if impl == "torch":
                    extra["torch_parameters"] = report["parameters"]
                rate = f"{report['tokens_per_s']:,.0f} tokens/s"
            print(f"[{label}] round {round_index + 1}/{args.rounds}: {impl} {rate}", file=sys.stderr)

    flops = model_flops_per_token(args.hidden_size, dataset.vocab_size, cell, args.num_layers, embed_size(args))
    gemm_gflops = STATISTICS[args.statistic](gemm_rates) if gemm_rates else None
    summaries = {impl: results[impl].summary(args.statistic, flops, gemm_gflops) for impl in impls}
    ratios = {}
    for ours_name in (impl for impl in impls if impl.startswith("charrnn-")):
        ours = summaries[ours_name].get("tokens_per_s")
        if ours_name.endswith(BIDI):  # against the same backend's forward model, measured in the same rounds
            forward = summaries.get(ours_name.removesuffix(BIDI), {}).get("tokens_per_s")
            if ours and forward:
                ratios[f"{ours_name}/{ours_name.removesuffix(BIDI)}"] = ours / forward
            continue
        for other in ("charrnn-numpy", "torch", "classic"):
            theirs = summaries.get(other, {}).get("tokens_per_s")
            if ours and theirs and other != ours_name:
                ratios[f"{ours_name}/{other}"] = ours / theirs
    return {
        "config": dataset.name,
        "cell": cell,
        "num_layers": args.num_layers,
        "corpus": dataset.corpus,
        "tokens": dataset.tokens,
        "vocab_size": dataset.vocab_size,
        "flops_per_token": flops,
        "gemm": {"gflops": gemm_gflops, "gflops_rounds": gemm_rates, "shape": extra.get("gemm_shape")},
        "implementations": summaries,
        "ratios": ratios,
        **{k: v for k, v in extra.items() if k != "gemm_shape"},
    }


def noise_notes(results: list[dict[str, Any]]) -> list[str]:
    """A note for every measurement whose rounds spread by more than NOISY_SPREAD (a busy machine)."""
    notes = []
    for result in results:
        spreads = {impl: s.get("tokens_per_s_rounds") for impl, s in result["implementations"].items()}
        spreads["numpy GEMM"] = result["gemm"]["gflops_rounds"]
        for name, rounds in spreads.items():
            if rounds and min(rounds) > 0 and max(rounds) / min(rounds) > NOISY_SPREAD:
                notes.append(
                    f"{result['config']} {result['cell']} {name}: rounds ranged {max(rounds) / min(rounds):.1f}-fold "
                    f"({min(rounds):,.0f} to {max(rounds):,.0f}); the machine was probably busy, rerun when quiet"
                )
    return notes


def _fmt_rate(value: Optional[float]) -> str:
    return f"{value:,.0f}" if value is not None else "—"


def _fmt_ratio(value: Optional[float]) -> str:
    if value is None:
        return "—"
    # Two decimals where the ratio is close to 1 (charrnn/torch); whole numbers for charrnn/classic.
    return f"{value:.2f}×" if value < 10 else f"{value:,.0f}×"


def _cell_label(result: dict[str, Any]) -> str:
    layers = result["num_layers"]
    return result["cell"] + (f", {layers} layers" if layers > 1 else "")


def print_report(machine: dict[str, Any], results: list[dict[str, Any]], notes: list[str], args) -> None:
    """The human-readable report and the Markdown table, on stdout."""
    torch_info = next((r for r in results if "torch_version" in r), None)
    print(f"charrnn training throughput, {machine['date']}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable); "
          f"Python {machine['python']}; numpy {machine['numpy']}, BLAS {machine['blas']}"
          + (f"; numba {machine['numba']}" if machine.get("numba") else ""))
    if torch_info:
        print(f"torch {torch_info['torch_version']}, {torch_info['torch_threads']} threads "
              f"(CPU capability {torch_info['torch_cpu_capability']})")
    print(f"threads: {args.threads or 'all usable cores'} per implementation")
    print(f"settings: hidden {args.hidden_size}, charrnn's embedding size {embed_size(args)}, "
          f"batch {args.batch_size}, seq {args.seq_length}, float32, "
          f"Adagrad lr {args.learning_rate}, clip ±{args.clip}; {args.steps} timed steps after "
          f"{args.warmup} warm-up (classic: batch 1, float64, {args.classic_steps} after {args.classic_warmup})")
    rounds = f"{args.rounds} round" + ("s" if args.rounds != 1 else "")
    print(f"tokens/s and GEMM rates: the {args.statistic} of {rounds} (min–max in brackets); each "
          "round runs every implementation once, in rotating order, each in a fresh process")
    print(f"model FLOPs per token = {FLOPS_FORMULA} (forward, input-gradient and weight-gradient products of "
          "the output, recurrent and input layers); GFLOP/s = tokens/s × that")
    for result in results:
        gemm = result["gemm"]["gflops"]
        print()
        print(f"== {result['config']}, {_cell_label(result)}: {result['corpus']}, {result['tokens']:,} tokens, "
              f"vocabulary {result['vocab_size']:,}, {result['flops_per_token'] / 1e6:.2f} MFLOP/token ==")
        if gemm is not None:
            print(f"numpy float32 GEMM ({result['gemm']['shape']}): {gemm:.1f} GFLOP/s ({args.statistic} round)")
        print(f"{'implementation':<19} {'tokens/s':>10} {'(min–max)':>19} {'GFLOP/s':>8} {'% GEMM':>7} "
              f"{'peak RSS':>10} {'(setup)':>8}  loss first → last")
        for impl, s in result["implementations"].items():
            if s.get("tokens_per_s") is None:
                print(f"{impl:<19} failed: {s['error']}")
                continue
            fraction = s["fraction_of_gemm"]
            percent = f"{100 * fraction:.0f}%" if fraction is not None and impl != "classic" else "—"
            print(f"{impl:<19} {s['tokens_per_s']:>10,.0f} "
                  f"{'(' + _fmt_rate(s['tokens_per_s_min']) + '–' + _fmt_rate(s['tokens_per_s_max']) + ')':>19} "
                  f"{s['gflops']:>8.2f} {percent:>7} {s['peak_rss_mib']:>6.0f} MiB {s['setup_rss_mib']:>4.0f} MiB"
                  f"  {s['first_loss_nats']:.2f} → {s['last_loss_nats']:.2f}")
        if result["ratios"]:
            print("   ".join(f"{name}: {_fmt_ratio(value)}" for name, value in result["ratios"].items()))
        first_steps = {impl: s["first_step_s_rounds"] for impl, s in result["implementations"].items()
                       if s.get("first_step_s_rounds")}
        if first_steps:
            print("first step (s; the numba backend's first round may compile): " + "   ".join(
                f"{impl} " + ", ".join(f"{v:.2f}" for v in values) for impl, values in first_steps.items()))
    for note in notes:
        print(f"note: {note}")
    print()
    print(markdown_table(results))


def markdown_table(results: list[dict[str, Any]]) -> str:
    """The results as one Markdown table, ready to paste into docs/performance.md."""
    lines = [
        "| config | vocabulary | cell | implementation | tokens/s | GFLOP/s | % of numpy GEMM | peak RSS (MiB) "
        "| ÷ PyTorch | ÷ numpy backend |",
        "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        name, vocab, cell = result["config"], f"{result['vocab_size']:,}", _cell_label(result)
        for impl, s in result["implementations"].items():
            if s.get("tokens_per_s") is None:
                lines.append(f"| {name} | {vocab} | {cell} | {impl} | failed | | | | | |")
                continue
            fraction = s["fraction_of_gemm"]
            percent = f"{100 * fraction:.0f}%" if fraction is not None and impl != "classic" else "—"
            versus_torch = result["ratios"].get(f"{impl}/torch")
            versus_numpy = result["ratios"].get(f"{impl}/charrnn-numpy")
            lines.append(
                f"| {name} | {vocab} | {cell} | {IMPL_LABELS[impl]} | {s['tokens_per_s']:,.0f} | {s['gflops']:.1f} "
                f"| {percent} | {s['peak_rss_mib']:.0f} | {_fmt_ratio(versus_torch) if versus_torch else ''} "
                f"| {_fmt_ratio(versus_numpy) if versus_numpy else ''} |"
            )
        gemm = result["gemm"]["gflops"]
        if gemm is not None:
            shape = result["gemm"]["shape"]
            lines.append(f"| {name} | {vocab} | {cell} | numpy float32 GEMM {shape} | | {gemm:.1f} | 100% | | | |")
    return "\n".join(lines)


# --- the loss check: does the reference learn like charrnn? ----------------------------------------------


def loss_check(datasets: list[Dataset], args) -> int:
    """Train charrnn and three torch variants side by side on the same streams; print smoothed losses.

    The variants: the reference as written (PyTorch's initialisation); with charrnn's N(0, 0.01²)
    initialisation; and with that initialisation and W_ih fixed at the identity (b_hh at zero), which
    is exactly charrnn's model, so a gap to charrnn there would point at charrnn's code, and a gap
    only to the others at the model.
    """
    from bench import torch_reference
    every = max(1, args.loss_check // 10)
    # One torch thread: torch's and OpenBLAS's worker threads, taking turns in one process, otherwise
    # spin against each other, and speed is not measured here.
    torch_options = dict(lr=args.learning_rate, clip=args.clip, seq_length=args.seq_length, num_threads=1)
    for dataset in datasets:
        streams = np.load(dataset.data_dir / "streams.npy")
        trainers = {
            "charrnn": charrnn_step_function(dataset.vocab_size, args, args.loss_check),
            "torch": torch_reference.TorchTrainer(
                dataset.vocab_size, args.hidden_size, **torch_options
            ).train_step,
            "torch, N(0, 0.01²) init": torch_reference.TorchTrainer(
                dataset.vocab_size, args.hidden_size, **CHARRNN_INIT, **torch_options
            ).train_step,
            "torch, charrnn's model": torch_reference.TorchTrainer(
                dataset.vocab_size, args.hidden_size, **CHARRNN_INIT, identity_input=True, **torch_options
            ).train_step,
        }
        smoothed = {name: torch_reference.SmoothedLoss() for name in trainers}
        uniform_nats = np.log(dataset.vocab_size)
        print(f"== {dataset.name}: vocabulary {dataset.vocab_size:,} (uniform guess {uniform_nats:.2f} nats); "
              "smoothed training loss in nats/token ==")
        print(f"{'step':>6}" + "".join(f"  {name:>24}" for name in trainers))
        for step in range(1, args.loss_check + 1):
            values = {name: smoothed[name].add(train(streams)) for name, train in trainers.items()}
            if step == 1 or step % every == 0:
                print(f"{step:>6}" + "".join(f"  {values[name]:>24.3f}" for name in trainers), flush=True)
        print()
    return 0


# --- command line ---------------------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Training tokens/s of charrnn, the PyTorch reference and the classic algorithm (issues 6, 11)."
    )
    parser.add_argument("--config", action="append", choices=[*CONFIGS, "all"],
                        help="zh (tang300), en (Devil's Dictionary), v6000 (synthetic, vocabulary 6,000) or all "
                             "(the default); may be repeated")
    parser.add_argument("--corpora-dir", type=Path, default=DEFAULT_CORPORA_DIR,
                        help="where tang300.txt and devils_dictionary.txt are "
                             "(default: the repository's data/)")
    parser.add_argument("--corpus", type=Path, help="use this UTF-8 file for the one --config given")
    parser.add_argument("--impl", default=",".join(IMPLEMENTATIONS),
                        help="comma-separated subset of charrnn,torch,classic (classic: the rnn cell only)")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset of rnn,gru,lstm")
    parser.add_argument("--backend", default=",".join(BACKENDS),
                        help="charrnn's backends to measure, a comma-separated subset of numpy,numba "
                             "(numba is skipped with a note where it is not installed)")
    parser.add_argument("--num-layers", type=int, default=1, help="stacked recurrent layers (charrnn and torch)")
    parser.add_argument("--threads", type=int, default=0,
                        help="cores each implementation may use (its CPU affinity, BLAS, torch and charrnn "
                             "threads); default 0: all usable cores. On a busy shared machine, 1 compares the "
                             "implementations without their threads waiting for each other")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--embed-size", type=int,
                        help="charrnn's embedding size (0: the one-table model) [default: charrnn's default]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--learning-rate", type=float, default=0.02,
                        help="Adagrad's, for every implementation (charrnn's default rate at hidden 256; "
                             "the loss column shows whether training is sane)")
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--steps", type=int, default=100, help="timed steps per round (charrnn, torch)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps before them")
    parser.add_argument("--classic-steps", type=int, default=10, help="timed steps per round of the classic loop")
    parser.add_argument("--classic-warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5, help="round-robin rounds")
    parser.add_argument("--bidirectional", action="store_true",
                        help="also measure every charrnn variant as a bidirectional model (ratio to the forward one)")
    parser.add_argument("--look-ahead", type=int, default=0, help="a bidirectional model's look-ahead tokens")
    parser.add_argument("--statistic", choices=tuple(STATISTICS), default="best",
                        help="how rounds combine into the reported figure (default: the best round, since "
                             "other work on the machine only slows rounds down)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--loss-check", type=int, metavar="STEPS",
                        help="instead of timing, train charrnn and torch STEPS steps and print both losses "
                             "(nothing is timed: on a busy machine set OPENBLAS_NUM_THREADS=1 to keep it quick)")
    parser.add_argument("--worker", choices=[*IMPLEMENTATIONS, "gemm"], help=argparse.SUPPRESS)
    parser.add_argument("--cell", choices=CELLS, default="rnn", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--vocab-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not args.worker:
        chosen = args.config or ["all"]
        args.config = list(CONFIGS) if "all" in chosen else list(dict.fromkeys(chosen))
        args.impl = [impl.strip() for impl in args.impl.split(",") if impl.strip()]
        unknown = sorted(set(args.impl) - set(IMPLEMENTATIONS))
        if unknown or not args.impl:
            parser.error(f"--impl takes a comma-separated subset of {','.join(IMPLEMENTATIONS)}; "
                         f"got {unknown or 'none'}")
        args.cells = [cell.strip() for cell in args.cells.split(",") if cell.strip()]
        if not args.cells or set(args.cells) - set(CELLS):
            parser.error(f"--cells takes a comma-separated subset of {','.join(CELLS)}; got {args.cells}")
        args.backend = [name.strip() for name in args.backend.split(",") if name.strip()]
        if not args.backend or set(args.backend) - set(BACKENDS):
            parser.error(f"--backend takes a comma-separated subset of {','.join(BACKENDS)}; got {args.backend}")
        if args.corpus and len(args.config) != 1:
            parser.error("--corpus replaces the corpus of one configuration: give exactly one --config")
        for name in ("steps", "classic_steps", "rounds", "hidden_size", "batch_size", "seq_length", "num_layers"):
            if getattr(args, name) < 1:
                parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark (or, with the hidden --worker option, one measurement of it)."""
    args = _parse_args(argv)
    if args.worker:
        return run_worker(args)

    load_at_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    notes = [
        "peak RSS is the high-water mark (VmHWM) of each implementation's own process, the largest over "
        "the rounds; 'setup' is that peak after imports and data loading, before training",
    ]
    backends = list(args.backend)
    if "numba" in backends and importlib.util.find_spec("numba") is None:
        backends.remove("numba")
        notes.append("numba is not installed, so the numba backend was skipped (pip install '.[fast]')")
    impls = [variant for impl in args.impl for variant in
             ([f"charrnn-{name}" for name in backends] if impl == "charrnn" else [impl])]
    if args.bidirectional:
        impls += [variant + BIDI for variant in impls if variant.startswith("charrnn-")]
    if importlib.util.find_spec("torch") is None:
        if args.loss_check:
            print("Error: --loss-check needs torch (pip install -r bench/requirements.txt)", file=sys.stderr)
            return 2
        if "torch" in impls:
            impls.remove("torch")
            notes.append("torch is not installed, so the PyTorch reference was skipped "
                         "(pip install -r bench/requirements.txt)")
    if not impls:
        print("Error: no implementation left to measure", file=sys.stderr)
        return 2
    if "torch" in impls and embed_size(args) != args.hidden_size:
        notes.append(f"torch's first layer multiplies its embedding (size H) by its own H×G·H input matrix, and "
                     f"charrnn's here has embedding size {embed_size(args)}: the two models do different work, and "
                     "each GFLOP/s counts its own model's FLOPs")
    if "classic" in impls and args.cells != ["rnn"]:
        notes.append("the classic loop has the vanilla cell only; it is measured with the rnn cell")

    with tempfile.TemporaryDirectory(prefix="charrnn-bench-") as tmp:
        work_dir = Path(tmp)
        datasets = []
        for name in args.config:
            if args.corpus:
                path, label = args.corpus, str(args.corpus)
            elif CONFIGS[name] is None:
                path = work_dir / "synthetic_v6000.txt"
                write_synthetic_corpus(path)
                label = (f"synthetic: {SYNTHETIC_SYMBOLS:,} CJK characters (Zipf) + newline, "
                         f"seed {SYNTHETIC_SEED}")
            else:
                path = args.corpora_dir / CONFIGS[name]
                label = CONFIGS[name]
            if not path.is_file():
                print(f"Error: {path}: no such corpus; pass --corpora-dir or --corpus", file=sys.stderr)
                return 2
            datasets.append(prepare_dataset(name, path, label, work_dir, args))
        if args.loss_check:
            return loss_check(datasets, args)
        results = [
            measure_config(dataset, cell, [impl for impl in impls if impl != "classic" or cell == "rnn"], args)
            for dataset in datasets
            for cell in args.cells
        ]

    if load_at_start > BUSY_LOAD:
        # Two-thread BLAS slows down many-fold, not by half, when another process holds a core.
        notes.append(f"the 1-minute load average was {load_at_start:.1f} when the benchmark started: other "
                     "work was probably running, and the figures may be low")
    notes.extend(noise_notes(results))
    machine = machine_info()
    machine["load_average_at_start"] = round(load_at_start, 2)
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("worker", "data_dir", "vocab_size", "json")}
        settings.update(corpora_dir=str(args.corpora_dir), corpus=str(args.corpus) if args.corpus else None,
                        flops_per_token=FLOPS_FORMULA, tokens_per_s=f"{args.statistic} over rounds")
        print(json.dumps({"machine": machine, "settings": settings, "results": results, "notes": notes},
                         ensure_ascii=False, indent=2))
    else:
        print_report(machine, results, notes, args)
    return 0 if all(not s.get("error") for r in results for s in r["implementations"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
