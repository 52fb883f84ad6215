"""Peak memory and tokenizing speed of charrnn on a corpus of a gigabyte (issue 4).

In a temporary folder this writes a corpus of ``--size-gb`` gigabytes by repeating the lines of the
bundled corpora (data/) in seeded random order (streamed to disk one shuffled round at a time), then
runs the installed ``charrnn`` on it, each command in a subprocess of its own whose peak RSS the kernel
reports when the benchmark reaps it (``os.wait4``, so no other child's peak can leak into the figure):

  baseline       ``python -c "import numpy, charrnn.cli"``: what any charrnn command costs before work
  prepare        tokenize the corpus into a fresh ``--cache-dir`` with the character tokenizer; it runs
                 in one process, pinned here to one core: wall time, MB/s, CPU time, peak RSS
  prepare again  the same command, now a cache hit: the cost of hashing the files and mapping the ids
  train          ``--steps`` steps (hidden 256, batch 32, seq 25 by default) on the memory-mapped ids of
                 the same cache, no samples, validation once at the end on at most ``--eval-tokens``
                 held-out tokens, one checkpoint: peak RSS, tokens/s

It judges issue 4's targets on a corpus of at least 1 GB (smaller corpora show what the verdict
would be, marked N/A): peak RSS while training ≤ 400 MB plus the model's own arrays, peak RSS of
prepare ≤ 600 MB, character tokenization ≥ 30 MB/s on one core. It prints the machine, every figure,
a PASS/FAIL line per target, a Markdown table for docs/performance.md and the command that reproduces it;
``--json`` prints one JSON document instead. Progress goes to stderr. The exit code is 0 whatever the
verdicts (it is a benchmark), 1 if a charrnn command fails, 2 for bad options or missing corpora.

    python -m bench.memory                            # 1 GB of mixed English and Chinese lines
    python -m bench.memory --language all             # en, zh and mixed in turn (three times as long)
    python -m bench.memory --size-gb 0.1 --steps 50   # a quick look; verdicts are N/A below 1 GB

Units: a GB is 10⁹ bytes and an MB 10⁶ bytes throughout, RSS included (Linux gives ru_maxrss in KiB,
so MB = KiB × 1024 / 10⁶). Reporting RSS in decimal MB makes the numbers larger than in MiB, which is
the strict reading of the targets.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from bench.machine import machine_info
from bench.throughput import embed_size  # --embed-size, else charrnn's default

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_CORPORA_DIR = REPO_ROOT / "data"  # the bundled corpora
SOURCES = {"en": "devils_dictionary.txt", "zh": "tang300.txt"}
LANGUAGES = ("en", "zh", "mixed")
LANGUAGE_CHOICES = (*LANGUAGES, "all")
DEFAULT_LANGUAGE = "mixed"
WHY_DEFAULT_LANGUAGE = (
    "mixed (the default) shuffles lines of both corpora together, about half the bytes each: its "
    "vocabulary of ~2,600 characters needs uint16 ids and a 10× larger output layer than English, while "
    "its English lines give one token per byte, so one run carries the heavier side of both languages; "
    "--language all measures en, zh and mixed in turn"
)

BYTES_PER_MB = 10**6
BYTES_PER_GB = 10**9
BYTES_PER_KIB = 1024
BYTES_PER_FLOAT32 = 4
# Issue 4's targets, stated for a character corpus of 1 GB.
TARGET_CORPUS_BYTES = 1 * BYTES_PER_GB
TRAIN_RSS_BUDGET_MB = 400.0  # plus the model's own arrays
PREPARE_RSS_LIMIT_MB = 600.0
MIN_TOKENIZE_MB_PER_S = 30.0
# Disk needed per byte of corpus while prepare runs: the corpus, charrnn's provisional ids (uint32, up
# to one per byte of text) and the final ids (at most uint16 for these vocabularies) side by side.
DISK_BYTES_PER_CORPUS_BYTE = 1 + 4 + 2
DISK_MARGIN_BYTES = 256 * BYTES_PER_MB
# /proc/<pid>/status is read this often to split the peak into anonymous and file-backed memory and
# into setup and training; the authoritative peak is the kernel's own (wait4), which misses nothing.
RSS_POLL_INTERVAL_S = 0.02
# The line `charrnn train` prints once the corpus is mapped and the model built, just before step 1.
TRAIN_START_MARKER = re.compile(r"^(training|resuming)\b")
STDERR_TAIL_LINES = 15


class BenchError(Exception):
    """A failure that ends the benchmark with a one-line message (exit code in ``exit_code``)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# --- the corpus ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CorpusStats:
    """What was written: size, composition by language, and how it was made."""

    language: str
    path: str
    size_bytes: int
    english_bytes: int
    chinese_bytes: int
    lines: int
    rounds: int  # shuffled passes over the line pool (the last one cut short)
    seed: int
    sha256: str
    write_s: float

    @property
    def size_gb(self) -> float:
        """Size in GB (10⁹ bytes)."""
        return self.size_bytes / BYTES_PER_GB

    def composition(self) -> str:
        """E.g. '48.0% English, 52.0% Chinese by bytes'."""
        english = 100.0 * self.english_bytes / self.size_bytes
        return f"{english:.1f}% English, {100.0 - english:.1f}% Chinese by bytes"


def read_lines(path: Path) -> list[bytes]:
    """The lines of ``path`` as bytes, each ending in a newline (one is added to a last line without)."""
    try:
        lines = path.read_bytes().splitlines(keepends=True)
    except OSError as exc:
        raise BenchError(f"{path}: {exc.strerror}; pass --corpora (the folder of {', '.join(SOURCES.values())})", 2)
    if lines and not lines[-1].endswith(b"\n"):
        lines[-1] += b"\n"
    return lines


def line_pool(language: str, corpora_dir: Path) -> tuple[list[bytes], np.ndarray]:
    """The lines one shuffled round is drawn from, and which of them are Chinese.

    For ``mixed`` the Chinese lines are repeated so that each language holds about half the bytes of
    every round (the English source is ~4.6× the size of the Chinese one).
    """
    english = read_lines(corpora_dir / SOURCES["en"]) if language in ("en", "mixed") else []
    chinese = read_lines(corpora_dir / SOURCES["zh"]) if language in ("zh", "mixed") else []
    if english and chinese:
        copies = max(1, round(sum(map(len, english)) / sum(map(len, chinese))))
        chinese = chinese * copies
    lines = english + chinese
    is_chinese = np.zeros(len(lines), dtype=bool)
    is_chinese[len(english):] = True
    return lines, is_chinese


def write_corpus(path: Path, language: str, size_bytes: int, corpora_dir: Path, seed: int) -> CorpusStats:
    """Write at least ``size_bytes`` of shuffled source lines to ``path``, ending at a line end.

    Each round is one permutation of the line pool from ``numpy.random.default_rng(seed)``, joined
    and written at once (under a megabyte), so the benchmark itself never holds the corpus; the
    same seed, size and sources give the same bytes.
    """
    started = time.perf_counter()
    lines, is_chinese = line_pool(language, corpora_dir)
    lengths = np.array([len(line) for line in lines], dtype=np.int64)
    rng = np.random.default_rng(seed)
    digest = hashlib.sha256()
    written = chinese_bytes = line_count = rounds = 0
    with open(path, "wb") as out:
        while written < size_bytes:
            order = rng.permutation(len(lines))
            ends = np.cumsum(lengths[order])
            if ends[-1] > size_bytes - written:
                # The last round stops at the first line end at or beyond the requested size.
                order = order[: int(np.searchsorted(ends, size_bytes - written)) + 1]
            block = b"".join([lines[i] for i in order.tolist()])
            out.write(block)
            digest.update(block)
            written += len(block)
            chinese_bytes += int(lengths[order][is_chinese[order]].sum())
            line_count += len(order)
            rounds += 1
    return CorpusStats(
        language, str(path), written, written - chinese_bytes, chinese_bytes, line_count, rounds, seed,
        digest.hexdigest(), time.perf_counter() - started,
    )


# --- measuring a subprocess ---------------------------------------------------------------------------


def kib_to_mb(kib: float) -> float:
    """KiB (as ru_maxrss and /proc report memory) to MB of 10⁶ bytes."""
    return kib * BYTES_PER_KIB / BYTES_PER_MB


class RssPoller(threading.Thread):
    """Samples /proc/<pid>/status every RSS_POLL_INTERVAL_S: (seconds, RSS, anonymous, file-backed) in KiB."""

    def __init__(self, pid: int, started: float) -> None:
        super().__init__(daemon=True)
        self.pid, self.started = pid, started
        self.samples: list[tuple[float, int, int, int]] = []
        self._done = threading.Event()

    def run(self) -> None:
        """Sample until stopped or until the process is gone (a zombie has no VmRSS line)."""
        path = f"/proc/{self.pid}/status"
        while True:
            try:
                with open(path) as f:
                    fields = {k: v for k, _, v in (line.partition(":") for line in f)}
                sample = tuple(int(fields[name].split()[0]) for name in ("VmRSS", "RssAnon", "RssFile"))
            except (OSError, KeyError, ValueError, IndexError):
                return
            self.samples.append((time.perf_counter() - self.started, *sample))
            if self._done.wait(RSS_POLL_INTERVAL_S):
                return

    def stop(self) -> None:
        """Ask the thread to end and wait for it."""
        self._done.set()
        self.join()


@dataclass
class ChildRun:
    """One measured subprocess: what it printed, how long it took and the memory it held."""

    argv: list[str]
    exit_code: int
    wall_s: float
    cpu_s: float  # user + system time of the process
    peak_rss_mb: float  # ru_maxrss from wait4: the kernel's high-water mark for this process alone
    stdout: str
    stderr_lines: list[tuple[float, str]]  # (seconds since start, line), as the lines arrived
    rss_samples: list[tuple[float, int, int, int]] = field(repr=False, default_factory=list)

    @property
    def stderr(self) -> str:
        """All of stderr."""
        return "\n".join(line for _, line in self.stderr_lines)

    def polled(self, marker: Optional[re.Pattern] = None) -> dict[str, Any]:
        """Peaks seen by polling: anonymous and file-backed memory at the RSS peak; before and after ``marker``.

        File-backed pages are the mapped libraries and corpus ids, which the kernel can drop at any
        time; anonymous memory is what the process allocated.
        """
        if not self.rss_samples:
            return {"samples": 0}
        peak = max(self.rss_samples, key=lambda s: s[1])
        result: dict[str, Any] = {
            "samples": len(self.rss_samples),
            "interval_s": RSS_POLL_INTERVAL_S,
            "peak_rss_mb": kib_to_mb(peak[1]),
            "anonymous_at_peak_mb": kib_to_mb(peak[2]),
            "file_backed_at_peak_mb": kib_to_mb(peak[3]),
            "peak_anonymous_mb": kib_to_mb(max(s[2] for s in self.rss_samples)),
            "peak_file_backed_mb": kib_to_mb(max(s[3] for s in self.rss_samples)),
            "peak_at_s": peak[0],
        }
        if marker is not None:
            start = next((t for t, line in self.stderr_lines if marker.search(line)), None)
            if start is not None:
                before = [s[1] for s in self.rss_samples if s[0] < start]
                after = [s[1] for s in self.rss_samples if s[0] >= start]
                result["setup_s"] = start
                result["setup_peak_rss_mb"] = kib_to_mb(max(before)) if before else None
                result["after_setup_peak_rss_mb"] = kib_to_mb(max(after)) if after else None
        return result


def _collect(stream: Any, started: float, into: list[tuple[float, str]]) -> None:
    for raw in stream:
        into.append((time.perf_counter() - started, raw.decode("utf-8", "replace").rstrip("\r\n")))
    stream.close()


def run_measured(argv: Sequence[str], pin_cpu: Optional[int] = None) -> ChildRun:
    """Run ``argv`` to its end and measure it; ``pin_cpu`` confines it to that one core.

    The child is waited for without being reaped (waitid with WNOWAIT) so that polling stops while
    its pid still belongs to it; then wait4 reaps it and returns its own rusage, whose ru_maxrss is
    this process's peak alone (RUSAGE_CHILDREN would give the largest of all children so far).
    """
    started = time.perf_counter()
    process = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if pin_cpu is not None:
        # Set from outside right after the start: the few milliseconds before it are interpreter start-up.
        with contextlib.suppress(OSError):
            os.sched_setaffinity(process.pid, {pin_cpu})
    stdout_lines: list[tuple[float, str]] = []
    stderr_lines: list[tuple[float, str]] = []
    readers = [
        threading.Thread(target=_collect, args=(process.stdout, started, stdout_lines), daemon=True),
        threading.Thread(target=_collect, args=(process.stderr, started, stderr_lines), daemon=True),
    ]
    poller = RssPoller(process.pid, started)
    for thread in (*readers, poller):
        thread.start()
    try:
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)
        wall_s = time.perf_counter() - started
        poller.stop()
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.kill()
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for reader in readers:
        reader.join()
    return ChildRun(
        argv=list(argv),
        exit_code=process.returncode,
        wall_s=wall_s,
        cpu_s=usage.ru_utime + usage.ru_stime,
        peak_rss_mb=kib_to_mb(usage.ru_maxrss),
        stdout="\n".join(line for _, line in stdout_lines),
        stderr_lines=stderr_lines,
        rss_samples=poller.samples,
    )


def checked(run: ChildRun) -> ChildRun:
    """``run``, or BenchError with the command and the end of its stderr if it failed."""
    if run.exit_code != 0:
        tail = "\n".join(line for _, line in run.stderr_lines[-STDERR_TAIL_LINES:])
        raise BenchError(f"{shlex.join(run.argv)} exited with {run.exit_code}:\n{tail}")
    return run


def charrnn_command() -> list[str]:
    """The installed ``charrnn`` console script beside this Python, else ``python -m charrnn``."""
    script = Path(sys.executable).with_name("charrnn")  # not resolved: a venv's python is a symlink
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "charrnn"]


# --- the phases ---------------------------------------------------------------------------------------


def log(message: str) -> None:
    """Progress on stderr, so stdout holds only the report (or the JSON document)."""
    print(message, file=sys.stderr, flush=True)


def measure_baseline() -> dict[str, Any]:
    """Peak RSS of the interpreter with numpy and charrnn's command line imported, and nothing done."""
    run = checked(run_measured([sys.executable, "-c", "import numpy, charrnn.cli"]))
    return {"command": shlex.join(run.argv), "wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb}


def _json_document(run: ChildRun) -> dict[str, Any]:
    """The one JSON document a charrnn command printed on stdout with ``--json``."""
    try:
        return json.loads(run.stdout)
    except ValueError as exc:
        raise BenchError(f"{shlex.join(run.argv)} printed no JSON document on stdout ({exc}):\n{run.stderr}")


def _prepare_figures(run: ChildRun, corpus: CorpusStats, baseline_mb: float) -> dict[str, Any]:
    megabytes = corpus.size_bytes / BYTES_PER_MB
    figures = {
        "command": shlex.join(run.argv),
        "wall_s": run.wall_s,
        "cpu_s": run.cpu_s,
        "mb_per_s": megabytes / run.wall_s,
        "mb_per_cpu_s": megabytes / run.cpu_s if run.cpu_s > 0 else None,
        "peak_rss_mb": run.peak_rss_mb,
        "peak_rss_over_baseline_mb": run.peak_rss_mb - baseline_mb,
        "polled": run.polled(),
    }
    # charrnn's own figure leaves out interpreter start-up and the summary; shown beside the wall-clock one.
    document = _json_document(run)
    figures["charrnn_reported_s"] = document["seconds"]
    figures["charrnn_reported_mb_per_s"] = document["megabytes_per_s"]
    return figures


def read_cache_entry(ids_path: str) -> dict[str, Any]:
    """Vocabulary size, id type and token count of a cache entry, from the JSON beside its ``.npy``."""
    meta_path = Path(ids_path).with_suffix(".json")
    try:
        with open(meta_path, encoding="utf-8") as f:
            meta = json.load(f)
        return {
            "ids_path": ids_path,
            "ids_mb": os.path.getsize(ids_path) / BYTES_PER_MB,
            "ids_dtype": np.dtype(meta["dtype"]).name,
            "tokens": sum(meta["file_tokens"]),
            "vocab_size": len(meta["tokenizer"]["vocab"]),
        }
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"cannot read the cache entry {meta_path} that charrnn prepare printed: {exc}")


def model_arrays(vocab_size: int, hidden_size: int, batch_size: int, embed_size: int = 0) -> dict[str, Any]:
    """Bytes of the model's own arrays for a one-layer vanilla RNN trained with Adagrad (float32).

    parameters   V·E (W_xe) + E·H (W_xh) with an embedding of size E, or V·H (W_xh) without one (E = 0),
                 + H·H (W_hh) + H (b_h) + H·V (W_hy) + V (b_y) floats
    Adagrad      one running sum of squared gradients per parameter: the same again
    checkpoint   checkpoint.to_bytes holds the whole .npz in memory while it is written (parameters,
                 Adagrad state and the (B, H) hidden state): about the two above once more
    All three count towards the training budget (400 MB + these). Gradients and activations do not:
    they are the trainer's working memory, inside the 400 MB.
    """
    v, h, e = vocab_size, hidden_size, embed_size
    parameters = (v * e + e * h if e else v * h) + h * h + h + h * v + v
    params_mb = parameters * BYTES_PER_FLOAT32 / BYTES_PER_MB
    hidden_state_mb = batch_size * h * BYTES_PER_FLOAT32 / BYTES_PER_MB
    return {
        "formula": ("V·E + E·H" if e else "V·H") + " + H·H + H + H·V + V float32; Adagrad the same; "
                   "checkpoint buffer ≈ both + B·H",
        "parameters": parameters,
        "params_mb": params_mb,
        "adagrad_mb": params_mb,
        "checkpoint_buffer_mb": 2 * params_mb + hidden_state_mb,
        "total_mb": 4 * params_mb + hidden_state_mb,
        "total_without_checkpoint_mb": 2 * params_mb,
    }


def train_figures(document: dict[str, Any], checkpoint_dir: Path, charrnn: list[str]) -> dict[str, Any]:
    """The run's figures from ``train --json``, with the model's size from ``info --json`` of its checkpoint."""
    info_run = subprocess.run([*charrnn, "info", "--json", "-q", document["checkpoint"]], capture_output=True, text=True)
    if info_run.returncode != 0:
        raise BenchError(f"charrnn info failed on {document['checkpoint']}:\n{info_run.stderr}")
    info = json.loads(info_run.stdout)
    corpus_tokens, val_fraction = info["corpus"]["num_tokens"], info["train"]["val_fraction"]
    validation_tokens = int(round(corpus_tokens * val_fraction))  # as charrnn holds out the end of the corpus
    figures = {
        "vocab_size": info["model"]["vocab_size"], "hidden_size": info["model"]["hidden_size"],
        "parameters": info["parameters"]["total"], "train_tokens": corpus_tokens - validation_tokens,
        "validation_tokens": validation_tokens, "steps": document["steps_this_run"],
        "tokens_this_run": document["tokens_this_run"], "charrnn_reported_s": document["seconds"],
        "tokens_per_s": document["tokens_per_s"], "smoothed_loss_nats": document["train_loss_nats"],
    }
    if document["val_loss_nats"] is not None:
        figures.update(val_loss_nats=document["val_loss_nats"], val_bits_per_char=document["val_bits_per_char"])
    return figures


def measure_language(
    language: str, work_dir: Path, baseline_mb: float, pin_cpu: Optional[int], args: argparse.Namespace
) -> dict[str, Any]:
    """Write one corpus, prepare it twice and train on it; every figure and verdict for ``language``."""
    charrnn = charrnn_command()
    corpus_path = work_dir / f"corpus_{language}.txt"
    cache_dir = work_dir / f"cache_{language}"
    checkpoint_dir = work_dir / f"checkpoints_{language}"
    size_bytes = math.ceil(args.size_gb * BYTES_PER_GB)

    log(f"[{language}] writing a {size_bytes / BYTES_PER_GB:.2f} GB corpus to {corpus_path} ...")
    corpus = write_corpus(corpus_path, language, size_bytes, args.corpora, args.seed)
    log(f"[{language}] {corpus.size_bytes:,} bytes, {corpus.lines:,} lines, {corpus.composition()}, "
        f"in {corpus.write_s:.1f} s")

    prepare_argv = [*charrnn, "prepare", str(corpus_path), "--cache-dir", str(cache_dir), "--json"]
    log(f"[{language}] {shlex.join(prepare_argv)}  (pinned to core {pin_cpu})")
    first = checked(run_measured(prepare_argv, pin_cpu))
    entry = read_cache_entry(_json_document(first)["cache_path"])
    prepare = _prepare_figures(first, corpus, baseline_mb)
    prepare.update(entry, pinned_cpu=pin_cpu, processes=1)
    log(f"[{language}] prepared in {first.wall_s:.1f} s ({prepare['mb_per_s']:.1f} MB/s), "
        f"peak RSS {first.peak_rss_mb:.1f} MB")

    log(f"[{language}] the same again (a cache hit) ...")
    again = checked(run_measured(prepare_argv, pin_cpu))
    if not _json_document(again)["from_cache"]:
        raise BenchError(f"the second charrnn prepare did not hit the cache:\n{again.stderr}")
    cached = {
        "command": shlex.join(again.argv), "wall_s": again.wall_s, "cpu_s": again.cpu_s,
        "peak_rss_mb": again.peak_rss_mb, "peak_rss_over_baseline_mb": again.peak_rss_mb - baseline_mb,
    }
    log(f"[{language}] cache hit in {again.wall_s:.1f} s, peak RSS {again.peak_rss_mb:.1f} MB")

    train_argv = [
        *charrnn, "train", str(corpus_path), "--cache-dir", str(cache_dir), "--checkpoint-dir", str(checkpoint_dir),
        "--steps", str(args.steps), "--hidden-size", str(args.hidden_size), "--batch-size", str(args.batch_size),
        "--embed-size", str(embed_size(args)),
        "--seq-length", str(args.seq_length), "--sample-every", "0", "--eval-every", "0",
        "--eval-tokens", str(args.eval_tokens), "--rng-seed", str(args.seed), "--json",
    ]
    if args.learning_rate is not None:
        train_argv += ["--learning-rate", str(args.learning_rate)]
    log(f"[{language}] {shlex.join(train_argv)}")
    trained = checked(run_measured(train_argv))
    train = {
        "command": shlex.join(trained.argv),
        "wall_s": trained.wall_s,
        "cpu_s": trained.cpu_s,
        "peak_rss_mb": trained.peak_rss_mb,
        "peak_rss_over_baseline_mb": trained.peak_rss_mb - baseline_mb,
        "polled": trained.polled(TRAIN_START_MARKER),
        "checkpoints": sorted(p.name for p in checkpoint_dir.glob("*.npz")),
        **train_figures(_json_document(trained), checkpoint_dir, charrnn),
    }
    train["tokens_per_s_source"] = "charrnn's --json summary: includes the final validation and checkpoint"
    log(f"[{language}] trained in {trained.wall_s:.1f} s, peak RSS {trained.peak_rss_mb:.1f} MB")

    vocab_size = train.get("vocab_size", entry["vocab_size"])
    arrays = model_arrays(vocab_size, args.hidden_size, args.batch_size, embed_size(args))
    notes = []
    if "parameters" in train and train["parameters"] != arrays["parameters"]:
        notes.append(f"charrnn reports {train['parameters']:,} parameters, the formula {arrays['parameters']:,}: "
                     "the model is not the one-layer vanilla RNN the formula describes")
    uniform_nats = math.log(vocab_size)
    if train.get("smoothed_loss_nats", 0.0) > uniform_nats:
        notes.append(
            f"the model diverged: smoothed training loss {train['smoothed_loss_nats']:.2f} nats/token is above "
            f"ln V = {uniform_nats:.2f}, the loss of a uniform guess; memory is unaffected, but the tokens/s of "
            "a diverged run does not represent a healthy one (try a lower --learning-rate)"
        )
    result = {
        "language": language,
        "corpus": {**asdict(corpus), "size_gb": corpus.size_gb, "composition": corpus.composition()},
        "prepare": prepare,
        "prepare_cached": cached,
        "train": train,
        "model_arrays": arrays,
        "notes": notes,
    }
    result["targets"] = judge(result)
    return result


# --- targets ------------------------------------------------------------------------------------------


def judge(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 4's three targets against the figures of one language; judged only at ≥ 1 GB."""
    judged = result["corpus"]["size_bytes"] >= TARGET_CORPUS_BYTES
    arrays, train, prepare = result["model_arrays"], result["train"], result["prepare"]
    train_limit_mb = TRAIN_RSS_BUDGET_MB + arrays["total_mb"]
    strict_limit_mb = TRAIN_RSS_BUDGET_MB + arrays["total_without_checkpoint_mb"]
    prepare_peak_mb = max(prepare["peak_rss_mb"], result["prepare_cached"]["peak_rss_mb"])
    targets = [
        {
            "name": "train_peak_rss",
            "passed": train["peak_rss_mb"] <= train_limit_mb,
            "text": (f"peak RSS training on a {result['corpus']['size_gb']:.2f} GB character corpus "
                     f"{train['peak_rss_mb']:.1f} MB ≤ {TRAIN_RSS_BUDGET_MB:.0f} MB + {arrays['total_mb']:.1f} MB "
                     f"model arrays = {train_limit_mb:.1f} MB (without the checkpoint buffer "
                     f"{strict_limit_mb:.1f} MB: {'met' if train['peak_rss_mb'] <= strict_limit_mb else 'missed'})"),
            "measured_mb": train["peak_rss_mb"],
            "limit_mb": train_limit_mb,
        },
        {
            "name": "prepare_peak_rss",
            "passed": prepare_peak_mb <= PREPARE_RSS_LIMIT_MB,
            "text": (f"peak RSS of prepare {prepare['peak_rss_mb']:.1f} MB (cache hit "
                     f"{result['prepare_cached']['peak_rss_mb']:.1f} MB) ≤ {PREPARE_RSS_LIMIT_MB:.0f} MB"),
            "measured_mb": prepare_peak_mb,
            "limit_mb": PREPARE_RSS_LIMIT_MB,
        },
        {
            "name": "char_tokenize_mb_per_s",
            "passed": prepare["mb_per_s"] >= MIN_TOKENIZE_MB_PER_S,
            "text": (f"character tokenization {prepare['mb_per_s']:.1f} MB/s ≥ {MIN_TOKENIZE_MB_PER_S:.0f} MB/s on one "
                     f"core (whole prepare command, wall clock; "
                     f"{_fmt(prepare.get('mb_per_cpu_s'), '.1f')} MB per CPU-second)"),
            "measured_mb_per_s": prepare["mb_per_s"],
            "limit_mb_per_s": MIN_TOKENIZE_MB_PER_S,
        },
    ]
    for target in targets:
        verdict = "PASS" if target["passed"] else "FAIL"
        target["judged"] = judged
        target["verdict"] = verdict if judged else f"N/A (would {verdict}: corpus under 1 GB)"
    return targets


# --- the machine --------------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    """bench/machine.py's description of the machine, with the charrnn command this benchmark runs."""
    return {**machine_info(), "charrnn_command": shlex.join(charrnn_command())}


# --- the report ---------------------------------------------------------------------------------------


def _fmt(value: Optional[float], spec: str) -> str:
    return "—" if value is None else format(value, spec)


def reproduce_command(args: argparse.Namespace) -> str:
    """The command line that repeats this run, every setting spelled out."""
    parts = ["python", "-m", "bench.memory", "--size-gb", f"{args.size_gb:g}", "--language", args.language,
             "--steps", str(args.steps), "--hidden-size", str(args.hidden_size), "--batch-size", str(args.batch_size),
             "--embed-size", str(embed_size(args)),
             "--seq-length", str(args.seq_length), "--eval-tokens", str(args.eval_tokens), "--seed", str(args.seed)]
    if args.learning_rate is not None:
        parts += ["--learning-rate", f"{args.learning_rate:g}"]
    if args.corpora.resolve() != DEFAULT_CORPORA_DIR.resolve():
        parts += ["--corpora", str(args.corpora)]
    return shlex.join(parts)


def markdown_table(
    machine: dict[str, Any], baseline: dict[str, Any], results: list[dict[str, Any]], load_average: float,
    args: argparse.Namespace,
) -> str:
    """The table of docs/performance.md: one row per phase and language, the machine and the command under it."""
    rows = [
        "| corpus | phase | time | rate | peak RSS | target | result |",
        "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ]
    for result in results:
        corpus, prepare, cached, train = result["corpus"], result["prepare"], result["prepare_cached"], result["train"]
        verdicts = {t["name"]: t["verdict"] for t in result["targets"]}
        label = f"{corpus['size_gb']:.2f} GB {corpus['language']}, vocabulary {prepare['vocab_size']:,}"
        rows.append(
            f"| {label} | `prepare` (chars, 1 core) | {prepare['wall_s']:.1f} s | {prepare['mb_per_s']:.1f} MB/s "
            f"| {prepare['peak_rss_mb']:.0f} MB | ≤ {PREPARE_RSS_LIMIT_MB:.0f} MB, ≥ {MIN_TOKENIZE_MB_PER_S:.0f} MB/s "
            f"| {verdicts['prepare_peak_rss'].split(' ')[0]}, {verdicts['char_tokenize_mb_per_s'].split(' ')[0]} |"
        )
        rows.append(f"| | `prepare` again (cache hit) | {cached['wall_s']:.1f} s | — | {cached['peak_rss_mb']:.0f} MB | | |")
        limit = next(t["limit_mb"] for t in result["targets"] if t["name"] == "train_peak_rss")
        rows.append(
            f"| | `train` {train.get('steps', args.steps)} steps, H {args.hidden_size}, B {args.batch_size}, "
            f"T {args.seq_length} | {train['wall_s']:.1f} s | {train['tokens_per_s']:,.0f} tokens/s "
            f"| {train['peak_rss_mb']:.0f} MB | ≤ 400 + {result['model_arrays']['total_mb']:.0f} MB = {limit:.0f} MB "
            f"| {verdicts['train_peak_rss'].split(' ')[0]} |"
        )
    lines = rows + [
        "",
        f"Peak RSS as the kernel reports it (ru_maxrss, MB = 10⁶ bytes); `python -c \"import numpy, charrnn.cli\"` "
        f"alone takes {baseline['peak_rss_mb']:.0f} MB. Train time includes the final validation "
        f"({args.eval_tokens:,} tokens) and checkpoint. {machine['cpu']}, {machine['cores']} cores (load average "
        f"{load_average:.1f} before the run), Python {machine['python']}, numpy {machine['numpy']}, {machine['date']}.",
        f"Reproduce: `{reproduce_command(args)}`",
    ]
    return "\n".join(lines)


def print_report(report: dict[str, Any], args: argparse.Namespace) -> None:
    """The human-readable report on stdout."""
    machine, baseline = report["machine"], report["baseline"]
    print(f"charrnn memory benchmark (issue 4), {machine['date']}")
    print(f"machine: {machine['cpu']}, {machine['cores']} cores ({machine['cores_usable']} usable), "
          f"{_fmt(machine['memory_gb'], '.1f')} GB RAM; {machine['os']}; Python {machine['python']}, numpy {machine['numpy']}")
    print(f"charrnn {machine['charrnn']} at {machine['charrnn_revision'] or 'an unknown revision'}, run as "
          f"{machine['charrnn_command']}")
    busy = max(report["load_average_start"], report["load_average_end"]) >= machine["cores_usable"] / 2
    print(f"load average (1 min) {report['load_average_start']:.2f} at the start, {report['load_average_end']:.2f} at the "
          "end: other processes competing for the cores slow the timings (training most: its BLAS threads wait for "
          "cores), not the memory" + ("; this machine was busy, so the timings are pessimistic" if busy else ""))
    print(f"temporary folder: {report['work_dir']} ({'kept' if args.keep else 'deleted at the end'})")
    print(f"languages: {', '.join(r['language'] for r in report['results'])}; {WHY_DEFAULT_LANGUAGE}")
    print(f"baseline: {baseline['command']}: peak RSS {baseline['peak_rss_mb']:.1f} MB ({baseline['wall_s']:.2f} s)")
    for result in report["results"]:
        corpus, prepare, cached, train = result["corpus"], result["prepare"], result["prepare_cached"], result["train"]
        arrays, polled = result["model_arrays"], train["polled"]
        print()
        print(f"== {corpus['language']}: {corpus['size_bytes']:,} bytes ({corpus['size_gb']:.2f} GB), {corpus['lines']:,} "
              f"lines, {corpus['composition']}; {corpus['rounds']:,} shuffled rounds, seed {corpus['seed']}, "
              f"written in {corpus['write_s']:.1f} s (in the page cache when prepare reads it) ==")
        print(f"prepare: character tokenizer, a single process (no pool for characters), pinned to core {prepare['pinned_cpu']}")
        print(f"  {prepare['wall_s']:.1f} s wall, {prepare['cpu_s']:.1f} s CPU: {prepare['mb_per_s']:.1f} MB/s "
              f"({_fmt(prepare.get('mb_per_cpu_s'), '.1f')} MB per CPU-second; charrnn's own figure "
              f"{_fmt(prepare.get('charrnn_reported_mb_per_s'), '.1f')} MB/s in {_fmt(prepare.get('charrnn_reported_s'), '.1f')} s, "
              "without interpreter start-up)")
        print(f"  peak RSS {prepare['peak_rss_mb']:.1f} MB ({prepare['peak_rss_over_baseline_mb']:.1f} MB over the baseline); "
              f"polled: anonymous {_fmt(prepare['polled'].get('peak_anonymous_mb'), '.1f')} MB, file-backed "
              f"{_fmt(prepare['polled'].get('peak_file_backed_mb'), '.1f')} MB at most")
        print(f"  → {prepare['tokens']:,} {prepare['ids_dtype']} ids ({prepare['ids_mb']:,.1f} MB), vocabulary {prepare['vocab_size']:,}")
        print(f"prepare again (cache hit: hashes the files, maps the ids): {cached['wall_s']:.1f} s, "
              f"peak RSS {cached['peak_rss_mb']:.1f} MB")
        held_out = train.get("validation_tokens")
        scored = "all" if not args.eval_tokens else f"{args.eval_tokens:,}" if held_out is None else f"{min(args.eval_tokens, held_out):,}"
        print(f"train: {train.get('steps', args.steps)} steps, hidden {args.hidden_size}, batch {args.batch_size}, "
              f"seq {args.seq_length}, ids memory-mapped from the cache; validation once at the end on {scored} of "
              f"{_fmt(held_out, ',')} held-out tokens; checkpoints {', '.join(train['checkpoints'])}")
        print(f"  {train['wall_s']:.1f} s wall, {train['cpu_s']:.1f} s CPU (BLAS uses every core); "
              f"{train['tokens_per_s']:,.0f} tokens/s ({train['tokens_per_s_source']})")
        if "smoothed_loss_nats" in train:
            validation = (f", validation {train['val_loss_nats']:.3f} nats/token ({train['val_bits_per_char']:.3f} bits/char)"
                          if "val_loss_nats" in train else "")
            print(f"  smoothed training loss {train['smoothed_loss_nats']:.3f} nats/token{validation}")
        print(f"  peak RSS {train['peak_rss_mb']:.1f} MB ({train['peak_rss_over_baseline_mb']:.1f} MB over the baseline); "
              f"polled: {_fmt(polled.get('setup_peak_rss_mb'), '.1f')} MB while opening the session "
              f"({_fmt(polled.get('setup_s'), '.1f')} s), {_fmt(polled.get('after_setup_peak_rss_mb'), '.1f')} MB while "
              f"training, validating and saving; at the peak {_fmt(polled.get('anonymous_at_peak_mb'), '.1f')} MB "
              f"anonymous, {_fmt(polled.get('file_backed_at_peak_mb'), '.1f')} MB file-backed (libraries and the "
              "pages of the mapped ids around each stream's position, which the kernel maps in blocks of up to "
              "2 MB and may drop at any time)")
        print(f"  model's own arrays (V = {prepare['vocab_size']:,}, E = {embed_size(args)}, H = {args.hidden_size}): {arrays['parameters']:,} "
              f"parameters {arrays['params_mb']:.1f} MB + Adagrad state {arrays['adagrad_mb']:.1f} MB + checkpoint buffer "
              f"{arrays['checkpoint_buffer_mb']:.1f} MB (serialized in memory once per save) = {arrays['total_mb']:.1f} MB, "
              "all counted in the budget")
        for note in result["notes"]:
            print(f"  note: {note}")
        print("targets:")
        for target in result["targets"]:
            print(f"  {target['verdict']:<4}  {target['text']}")
    print()
    print("Markdown for docs/performance.md:")
    print()
    print(report["markdown"])


# --- command line -------------------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Peak RSS and tokenizing MB/s of charrnn prepare and train on a corpus of a gigabyte (issue 4)."
    )
    parser.add_argument("--size-gb", type=float, default=1.0, help="corpus size in GB of 10⁹ bytes (default 1.0)")
    parser.add_argument("--language", choices=LANGUAGE_CHOICES, default=DEFAULT_LANGUAGE,
                        help="lines of devils_dictionary.txt (en), tang300.txt (zh), both shuffled together "
                             "(mixed, the default) or each in turn (all)")
    parser.add_argument("--corpora", type=Path, default=DEFAULT_CORPORA_DIR,
                        help="folder of devils_dictionary.txt and tang300.txt (default: the repository's data/)")
    parser.add_argument("--steps", type=int, default=300, help="training steps (default 300)")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--embed-size", type=int,
                        help="the embedding size (0: the one-table model) [default: charrnn's default, H]")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--eval-tokens", type=int, default=1_000_000,
                        help="validation tokens scored at the end (charrnn's default 1,000,000; 0: all)")
    parser.add_argument("--learning-rate", type=float, default=0.02,
                        help="passed to charrnn train (default 0.02, the default rate at hidden 256)")
    parser.add_argument("--seed", type=int, default=4, help="seeds the corpus shuffle and training (default 4)")
    parser.add_argument("--tmp-dir", type=Path, help="where to make the temporary folder (default: the system's)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (corpus, cache, checkpoints)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    args = parser.parse_args(argv)
    if not args.size_gb > 0:
        parser.error("--size-gb must be positive")
    for name in ("steps", "hidden_size", "batch_size", "seq_length"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.eval_tokens < 0:
        parser.error("--eval-tokens must be 0 or more")
    return args


@contextlib.contextmanager
def work_folder(args: argparse.Namespace) -> Iterator[Path]:
    """A temporary folder, deleted at the end unless --keep."""
    if args.keep:
        yield Path(tempfile.mkdtemp(prefix="charrnn-memory-", dir=args.tmp_dir))
    else:
        with tempfile.TemporaryDirectory(prefix="charrnn-memory-", dir=args.tmp_dir) as folder:
            yield Path(folder)


def check_environment(args: argparse.Namespace, languages: Sequence[str]) -> None:
    """Refuse early, with the fix, when charrnn, the corpora or the disk space are missing."""
    if importlib.util.find_spec("charrnn") is None:
        raise BenchError(f"charrnn is not installed for {sys.executable}; run this with the Python of the "
                         "environment charrnn is installed in (pip install -e .)", 2)
    for name in SOURCES.values():
        if not (args.corpora / name).is_file():
            raise BenchError(f"{args.corpora / name}: no such file; pass --corpora (the folder of devils_dictionary.txt and tang300.txt)", 2)
    tmp_root = args.tmp_dir or Path(tempfile.gettempdir())
    corpus_bytes = math.ceil(args.size_gb * BYTES_PER_GB)
    # Without --keep each language's files are removed before the next language's corpus is written.
    needed = DISK_BYTES_PER_CORPUS_BYTE * corpus_bytes * (len(languages) if args.keep else 1) + DISK_MARGIN_BYTES
    free = shutil.disk_usage(tmp_root).free
    if free < needed:
        raise BenchError(f"{tmp_root} has {free / BYTES_PER_GB:.1f} GB free; this run needs about "
                         f"{needed / BYTES_PER_GB:.1f} GB; pass --tmp-dir elsewhere or a smaller --size-gb", 2)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark and print its report (or JSON)."""
    args = _parse_args(argv)
    languages = list(LANGUAGES) if args.language == "all" else [args.language]
    try:
        check_environment(args, languages)
        load_start = os.getloadavg()[0]
        # The last usable core: prepare runs there alone, the benchmark's own threads mostly sleep.
        pin_cpu = max(os.sched_getaffinity(0))
        log("baseline: python -c 'import numpy, charrnn.cli' ...")
        baseline = measure_baseline()
        results = []
        with work_folder(args) as work_dir:
            for language in languages:
                language_dir = work_dir / language
                language_dir.mkdir()
                results.append(measure_language(language, language_dir, baseline["peak_rss_mb"], pin_cpu, args))
                if not args.keep:
                    shutil.rmtree(language_dir, ignore_errors=True)  # room for the next language's corpus
    except BenchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    machine = machine_facts()
    load_end = os.getloadavg()[0]
    report = {
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "work_dir": str(work_dir),
        "load_average_start": load_start,
        "load_average_end": load_end,
        "baseline": baseline,
        "results": results,
        "markdown": markdown_table(machine, baseline, results, load_start, args),
        "reproduce": reproduce_command(args),
        "units": "MB = 10⁶ bytes, GB = 10⁹ bytes; peak RSS from wait4's ru_maxrss (KiB × 1024)",
    }
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_report(report, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
