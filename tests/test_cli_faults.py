"""The fault suite's command-line part: bad numeric options and codecs, work too large for the machine,
signals outside the training loop, and failures to write stdout, a log or the token cache. Each case
ends in one ``Error:`` line (or, for a closed pipe, silently) with the documented exit code, no
traceback, no RuntimeWarning and no partial file."""

from __future__ import annotations

import fcntl
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np
import pytest

from charrnn import files, memory
from charrnn.checkpoints import checkpoint
from charrnn.inference import sampling
from charrnn.model import network
from charrnn.config import ModelConfig, TrainConfig
from charrnn.errors import ConfigError
from charrnn.data import parallel_tokenize
from conftest import NUMPY_BACKEND, TANG300, sigint_at_default
from test_cli import FAST, assert_clean_error, invoke

INT64_MAX = 2**63 - 1
ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_DEV_FULL = os.path.exists("/dev/full")
LINUX = sys.platform.startswith("linux")  # /proc tells which handlers a process has and its CPU time
REAL_MKSTEMP = tempfile.mkstemp


@pytest.fixture(autouse=True)
def no_runtime_warnings():
    """No case may raise a RuntimeWarning (overflow, invalid value), even one pytest would swallow."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


# --- numeric options -------------------------------------------------------------------------------------

TRAIN_OPTIONS = [
    (["--learning-rate", "nan"], "--learning-rate must be a finite number, got nan"),
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),
    (["--learning-rate", "-inf"], "--learning-rate must be a finite number, got -inf"),
    (["--learning-rate", "1e39"], "--learning-rate must be at most 3.403e+38, the largest float32, got 1e+39"),
    (["--learning-rate", "1e-39"], "--learning-rate must be at least 1.175e-38, the smallest normal float32"),
    (["--clip", "nan"], "--clip must be a finite number, got nan"),
    (["--clip", "1e39"], "--clip must be at most 3.403e+38, the largest float32, got 1e+39"),
    (["--lr-decay", "nan"], "--lr-decay must be a finite number, got nan"),
    (["--lr-decay", "1e-320"], "--lr-decay must be at least 1.175e-38"),
    (["--lr-decay-after", "nan"], "--lr-decay-after must be a finite number, got nan"),
    (["--lr-decay-after", "inf"], "--lr-decay-after must be a finite number, got inf"),
    (["--lr-decay-after", "1e308"], "--lr-decay-after must be at most 9007199254740992 (2^53) epochs, got 1e+308"),
    (["--epochs", "nan"], "--epochs must be a finite number, got nan"),
    (["--epochs", "inf"], "--epochs must be a finite number, got inf"),
    (["--epochs", "1e308"], "--epochs must be at most 9007199254740992 (2^53) epochs, got 1e+308"),
    (["--epochs", "-2"], "--epochs must be positive, got -2.0"),
    (["--dropout", "nan"], "--dropout must be a finite number, got nan"),
    (["--val-fraction", "nan"], "--val-fraction must be a finite number, got nan"),
    (["--steps", str(INT64_MAX + 1)], f"--steps must be at most {INT64_MAX:,} (2^63 - 1), got {INT64_MAX + 1}"),
    (["--hidden-size", str(INT64_MAX + 1)], "--hidden-size must be at most 9,223,372,036,854,775,807"),
    (["--rng-seed", str(INT64_MAX + 1)], "--rng-seed must be at most 9,223,372,036,854,775,807"),
    (["--eval-every", str(INT64_MAX + 1)], "--eval-every must be at most 9,223,372,036,854,775,807"),
    (["--log-every", "-1"], "--log-every must be zero or positive, got -1"),
]


@pytest.mark.parametrize("args, message", TRAIN_OPTIONS, ids=[" ".join(a) for a, _ in TRAIN_OPTIONS])
def test_bad_numeric_train_options_are_refused_before_any_work(workdir, small_corpus, args, message):
    result = invoke("train", small_corpus, "--steps", "3", *FAST, *args)
    assert_clean_error(result, 2, message)
    assert len(result.stderr.splitlines()) == 1
    assert not (workdir / "checkpoints").exists() and not (workdir / "data").exists()  # nothing tokenized


def test_the_same_rules_guard_configs_read_from_a_checkpoint():
    # A checkpoint's JSON can hold what no option parser would produce.
    with pytest.raises(ConfigError, match="--steps must be a finite number, got nan"):
        TrainConfig(max_steps=float("nan"))
    with pytest.raises(ConfigError, match="--learning-rate must be a finite number, got 1000000000"):
        TrainConfig(max_steps=1, learning_rate=10**400)
    with pytest.raises(ConfigError, match="--num-layers must be at most 9,223,372,036,854,775,807"):
        ModelConfig(vocab_size=5, num_layers=10**30)


SAMPLE_OPTIONS = [
    (["--temperature", "nan"], "--temperature must be a finite number, got nan"),
    (["--temperature", "inf"], "--temperature must be a finite number, got inf"),
    (["--temperature", "1e-310"], "--temperature must be 0 (greedy) or at least 2.23e-308, got 1e-310"),
    (["--length", str(INT64_MAX + 1)], "--length must be at most 9,223,372,036,854,775,807"),
    (["--num-samples", str(INT64_MAX + 1)], "--num-samples must be at most 9,223,372,036,854,775,807"),
    (["--top-k", str(INT64_MAX + 1)], "--top-k must be at most 9,223,372,036,854,775,807"),
]


@pytest.mark.parametrize("args, message", SAMPLE_OPTIONS, ids=[" ".join(a) for a, _ in SAMPLE_OPTIONS])
def test_bad_numeric_sample_options_are_refused(workdir, args, message):
    result = invoke("sample", *args)
    assert_clean_error(result, 2, message)
    assert len(result.stderr.splitlines()) == 1


def test_the_smallest_temperature_is_the_greedy_limit_without_overflow():
    logits = np.array([[1.0, 20.0, 3.0], [-4.0, -9.0, -4.5]], dtype=np.float32)
    smallest_normal = sys.float_info.min  # logits / it overflow float64, and z / T − max(z / T) was NaN
    probabilities = sampling.next_token_distribution(logits, smallest_normal, None)
    assert probabilities.tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]
    assert sampling.next_token_distribution(logits, smallest_normal, 2).tolist() == [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_refusals_reach_stderr_as_one_line_through_the_installed_command(charrnn_executable, small_corpus, tmp_path):
    def run(*args):
        return subprocess.run([charrnn_executable, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120)

    rate = run("train", str(small_corpus), "--steps", "3", *FAST, "--learning-rate", "1e39")
    assert (rate.returncode, rate.stdout) == (2, "")
    assert rate.stderr == "Error: --learning-rate must be at most 3.403e+38, the largest float32, got 1e+39\n"
    cold = run("sample", "--temperature", "1e-310")
    assert (cold.returncode, cold.stdout) == (2, "")
    assert cold.stderr == ("Error: --temperature must be 0 (greedy) or at least 2.23e-308, got 1e-310: logits are "
                           "divided by it, and 1/temperature must be a finite float64\n")


# --- codecs -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri"])
def test_binary_transforms_are_not_text_encodings(workdir, small_corpus, codec):
    for command in (["train", small_corpus, "--steps", "2", *FAST], ["prepare", small_corpus]):
        result = invoke(*command, "--encoding", codec)
        assert_clean_error(result, 2, f"--encoding '{codec}' is a ")
        assert "transform, not a text encoding; pass the codec the file is written in" in result.stderr
    assert not (workdir / "data").exists()


def test_utf16_and_utf32_without_a_byte_order_mark_name_the_codec_to_use(workdir, tmp_path):
    text = "床前明月光，疑是地上霜。\n" * 40
    for codec in ("utf-16", "utf-32"):
        corpus = tmp_path / f"{codec}.txt"
        corpus.write_bytes(text.encode(f"{codec}-le"))  # no byte-order mark
        refused = invoke("train", corpus, "--steps", "2", *FAST, "--encoding", codec, "--checkpoint-dir", codec)
        assert_clean_error(refused, 2, f"{corpus} cannot be read as {codec}: {codec.upper()} stream does not start "
                                       f"with BOM; pass the right --encoding ({codec}-le or {codec}-be without a "
                                       "byte-order mark)")
        named = invoke("train", corpus, "--steps", "2", *FAST, "--encoding", f"{codec}-le", "--checkpoint-dir", codec)
        assert named.exit_code == 0, named.stderr
    undefined = invoke("prepare", tmp_path / "utf-16.txt", "--encoding", "undefined")
    assert_clean_error(undefined, 2, "cannot be read as undefined: undefined encoding; pass the right --encoding")


# --- memory -----------------------------------------------------------------------------------------------


def test_training_memory_by_hand():
    config = ModelConfig(vocab_size=10, hidden_size=4, embed_size=0)  # rnn, one table, float32
    parameters = ((10 + 4 + 1) * 4 + (4 + 1) * 10) * 4  # W_xh, W_hh, b_h; W_hy, b_y: 110 floats
    per_position = (3 * 1 + 2) * 4 + 10 + 4  # cell caches and their gradients; logits and top states
    assert network.training_memory(config, batch_size=2, seq_length=3, optimizer_slots=1) == {
        "parameters": parameters, "optimizer state": parameters,
        "gradients": parameters, "activations": 3 * 2 * per_position * 4,
    }
    # One position of activations is less than the Adam checkpoint's serialized copy: saving is the peak.
    assert network.training_memory(config, batch_size=1, seq_length=1, optimizer_slots=2) == {
        "parameters": parameters, "optimizer state": 2 * parameters, "checkpoint being written": 3 * parameters,
    }


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_training_memory_counts_every_parameter_of_a_deep_model(cell):
    config = ModelConfig(vocab_size=23, hidden_size=7, num_layers=3, cell=cell, dtype="float64")
    params = network.init_params(config, np.random.default_rng(0))
    estimate = network.training_memory(config, batch_size=1, seq_length=1, optimizer_slots=1)
    assert estimate["parameters"] == network.count_parameters(params) * 8


def test_an_absurdly_deep_model_is_estimated_at_once():
    # In a child process with a timeout: an estimate that walked the 10^15 layers would never end, and
    # then fails here instead of hanging the suite. No clock is read: how fast is not the question.
    script = ("from charrnn.config import ModelConfig; from charrnn.model import network\n"
              "config = ModelConfig(vocab_size=100, hidden_size=10**6, num_layers=10**15, embed_size=0)\n"
              "print(network.training_memory(config, 32, 25, 1)['parameters'])")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    vocab, hidden, layers = 100, 10**6, 10**15
    first = vocab * hidden + hidden * hidden + hidden  # W_xh, W_hh, b_h
    upper = 2 * hidden * hidden + hidden
    output = hidden * vocab + vocab  # W_hy, b_y
    assert int(run.stdout) == (first + (layers - 1) * upper + output) * 4


def test_sampling_memory_by_hand():
    config = ModelConfig(vocab_size=10, hidden_size=4, embed_size=0)
    # per stream: the logits (float32) and three float64-sized copies of them, and the state and forward
    # activations, (1 + 2)·H values, for the current token and the 2 prime tokens
    per_stream = 10 * (4 + 17) + (1 + 2) * (1 + 2) * 4 * 4
    assert network.sampling_memory(config, num_streams=3, prime_length=2) == 3 * per_stream


def test_require_names_the_need_the_limit_and_the_fix():
    memory.require({"a": 600, "b": 400}, "doing it", "lower --size", available=1000)  # fits exactly
    with pytest.raises(ConfigError) as refused:
        memory.require({"a": 600, "b": 500, "c": 0}, "doing it", "lower --size", available=1000)
    assert str(refused.value) == ("doing it needs about 1.1 kB of memory (a 600 B, b 500 B), more than the 1 kB this "
                                  "machine has available; lower --size")
    assert [memory.format_bytes(n) for n in (0, 999, 12_345_678, 7_280_000_000_000, 10**30)] == [
        "0 B", "999 B", "12.3 MB", "7.28 TB", "1e+06 YB"
    ]


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_available_memory_is_known_and_follows_an_address_space_limit():
    available = memory.available_bytes()
    assert available is not None and available > 0
    script = ("import resource; from charrnn import memory\n"
              "resource.setrlimit(resource.RLIMIT_AS, (6 << 30, resource.RLIM_INFINITY))\n"
              "print(memory.available_bytes())")
    limited = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout)
    assert 0 < limited < min(available, 6 << 30) + 1


def _limited_run(executable, cwd, *args):
    """The installed command with 4 GB of address space, so a missing check fails fast and harmlessly."""
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, resource.RLIM_INFINITY))

    return subprocess.run([executable, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit)


@pytest.mark.parametrize(
    "args, message",
    [
        # An embedding of 10^6 (the hidden size) read by W_xh (10^6 × 10^6), and W_hh: 2·10^12 floats.
        (["--hidden-size", "1000000"], "training this model needs about 32 TB of memory (parameters 8 TB, "
                                       "optimizer state 8 TB, checkpoint being written 16 TB), more than the "),
        (["--num-layers", str(10**12)], "this machine has available; lower --batch-size or --seq-length (or "
                                        "--hidden-size or --num-layers)"),
        # Its embedded inputs (2·10^8 values a position) dwarf every other part: the advice names it.
        (["--embed-size", str(10**8)], "this machine has available; lower --batch-size or --seq-length (or "
                                       "--embed-size)"),
    ],
    ids=["hidden-size", "num-layers", "embed-size"],
)
def test_a_model_too_large_for_the_machine_is_refused_before_tokenizing(charrnn_executable, small_corpus,
                                                                        tmp_path, args, message):
    result = _limited_run(charrnn_executable, tmp_path, "train", small_corpus, "--steps", "2", "-q", *args)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1 and message in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_batch_too_large_for_the_memory_left_is_refused(workdir, small_corpus, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 4_000_000)
    result = invoke("train", small_corpus, "--steps", "2", *FAST, "--batch-size", "64", "--seq-length", "40")
    assert_clean_error(result, 2, "more than the 4 MB this machine has available; lower --batch-size or --seq-length")
    assert ("training this model needs about 11.3 MB of memory (parameters 126 kB, optimizer state 126 kB, "
            "gradients 126 kB, activations 11 MB)") in result.stderr
    assert not (workdir / "checkpoints").exists()
    assert invoke("train", small_corpus, "--steps", "2", *FAST).exit_code == 0  # 0.54 MB: fits


@pytest.fixture
def trained(workdir, small_corpus):
    """A tiny model in checkpoints/latest.npz (vocabulary 942)."""
    assert invoke("train", small_corpus, "--steps", "2", *FAST, "-q").exit_code == 0
    return workdir / "checkpoints" / "poems" / "latest.npz"


def test_sampling_more_streams_than_memory_holds_is_refused_and_the_text_needs_no_room(trained, monkeypatch):
    monkeypatch.setattr(memory, "available_bytes", lambda: 100_000)
    for args in ([], ["--stream"]):  # the text is written as it is generated, never held
        written = invoke("sample", "--length", "6000", "--seed", "月", "-q", *args)
        assert written.exit_code == 0 and len(written.stdout) == 1 + 6000 + 1
    document = invoke("sample", "--length", "6000", "--seed", "月", "-q", "--json")
    assert document.exit_code == 0 and len(json.loads(document.stdout)["samples"][0]) == 1 + 6000
    many = invoke("sample", "--length", "2", "--num-samples", "10", "-q")
    assert_clean_error(many, 2, "sampling needs about 202 kB of memory (streams 202 kB), more "
                                "than the 100 kB this machine has available; lower --num-samples")


def test_scoring_with_more_streams_than_memory_holds_is_refused(trained, small_corpus, monkeypatch):
    # The 2,999 targets make 5 streams of at least 500 (each warms up on the 500 tokens before it),
    # whatever a larger --batch-size asks for; one stream fits.
    monkeypatch.setattr(memory, "available_bytes", lambda: 50_000)
    result = invoke("eval", trained, small_corpus, "--batch-size", "1000")
    assert_clean_error(result, 2, "scoring needs about 101 kB of memory (streams 101 kB), more than the 50 kB this "
                                  "machine has available; lower --batch-size")
    assert invoke("eval", trained, small_corpus, "--batch-size", "1").exit_code == 0


def test_sampling_too_many_streams_for_the_machine(charrnn_executable, trained, tmp_path):
    result = _limited_run(charrnn_executable, tmp_path, "sample", "-c", trained, "--num-samples", 10**11)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("Error: sampling needs about 2.02 PB of memory (streams 2.02 PB), more than the ")
    assert result.stderr.endswith("this machine has available; lower --num-samples\n")


# --- signals outside the training loop --------------------------------------------------------------------

SIGNAL_NAMES = {signal.SIGINT: "SIGINT", signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP", signal.SIGQUIT: "SIGQUIT"}


@pytest.fixture(scope="module")
def signal_setup(tmp_path_factory):
    """A folder with a 3.2 MB corpus (the Tang poems forty times) and a model of its 2,557 characters.

    The corpus is large enough that no machine tokenizes or scores it before the signal comes (jieba
    cuts about 0.5 MB/s here), and below the size at which prepare starts worker processes."""
    folder = tmp_path_factory.mktemp("signals")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8") * 40, encoding="utf-8")
    assert corpus.stat().st_size < parallel_tokenize.PARALLEL_MIN_BYTES
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(TANG300), "--steps", "2", *FAST, *NUMPY_BACKEND, "-q",
         "--checkpoint-dir",
         str(folder / "model"), "--cache-dir", str(folder / "model-cache")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return folder, corpus, folder / "model" / "latest.npz"


def _status_field(pid: int, name: str) -> str:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        return next(line.split(":", 1)[1].strip() for line in f if line.startswith(name + ":"))


def _handles_sigterm(pid: int) -> bool:
    """Whether the process has installed its own SIGTERM handler (Python has none by default)."""
    return bool(int(_status_field(pid, "SigCgt"), 16) & (1 << (signal.SIGTERM - 1)))


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _wait_for(process: subprocess.Popen, evidence, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not evidence():
        if process.poll() is not None:
            pytest.fail(f"charrnn ended (exit {process.returncode}) before {what}: {process.stderr.read()}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"no sign of {what} within {timeout} s")
        time.sleep(0.005)


def _phase(name, folder, corpus, ckpt):
    """(arguments, evidence that the process is in the phase) for each phase a signal is sent in."""
    cache = folder / "cache"
    seen = []  # the CPU time at which the tokenizing's temporary file was first seen

    def tokenizing(pid: int) -> bool:
        # The file exists from the moment it is created, before the code that removes it on the way out
        # has it in hand; 0.3 s of work later the process is surely tokenizing.
        if not seen and any(p.name.startswith(".provisional.") for p in cache.glob(".*")):
            seen.append(_cpu_seconds(pid))
        return bool(seen) and _cpu_seconds(pid) > seen[0] + 0.3

    def computing(pid: int) -> bool:
        return _cpu_seconds(pid) > 1.5  # past start-up, in the long computation

    phases = {
        # jieba cuts this corpus at about 0.5 MB/s: tokenizing takes seconds
        "prepare": (["prepare", corpus, "--tokenizer", "jieba", "--cache-dir", cache], tokenizing),
        "train-tokenizing": (["train", corpus, "--tokenizer", "jieba", "--cache-dir", cache, "--steps", "1"],
                             tokenizing),
        # Two samples are kept in a temporary file until both are complete: nothing is written before.
        "sample": (["sample", "-c", ckpt, "--length", "10000000", "--num-samples", "2", "-q"], computing),
        "eval": (["eval", ckpt, corpus, "-q"], computing),  # scoring 1.2 million tokens takes many seconds
        "info": (["info", ckpt], lambda pid: True),  # the handler alone; the rest takes a tenth of a second
    }
    return phases[name]


FAST_SIGNALS = {("prepare", signal.SIGTERM), ("train-tokenizing", signal.SIGINT), ("sample", signal.SIGINT),
                ("sample-stream", signal.SIGTERM), ("eval", signal.SIGINT), ("info", signal.SIGTERM),
                ("prepare", signal.SIGHUP), ("sample", signal.SIGQUIT), ("info", signal.SIGHUP)}


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize(
    "phase, signal_number",
    [
        pytest.param(phase, number, marks=() if (phase, number) in FAST_SIGNALS else pytest.mark.slow)
        for phase in ("prepare", "train-tokenizing", "sample", "sample-stream", "eval", "info")
        for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
    ],
    ids=lambda value: SIGNAL_NAMES.get(value, value),
)
def test_a_signal_outside_the_training_loop_exits_130_or_143_and_leaves_no_file(
    charrnn_executable, signal_setup, tmp_path, phase, signal_number
):
    folder, corpus, ckpt = signal_setup
    work = tmp_path
    (work / "cache").mkdir()
    streaming = phase == "sample-stream"
    if streaming:
        args = ["sample", "-c", ckpt, "--length", "10000000", "--stream", "-q"]
    else:
        args, evidence = _phase(phase, work, corpus, ckpt)
    process = subprocess.Popen([charrnn_executable, *map(str, args)], cwd=work, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=sigint_at_default)
    try:
        _wait_for(process, lambda: _handles_sigterm(process.pid), "its signal handlers")
        if streaming:
            assert len(process.stdout.read(30)) == 30  # text is flowing
        else:
            _wait_for(process, lambda: evidence(process.pid), f"the {phase} phase")
        process.send_signal(signal_number)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    # SIGQUIT ends the process by that signal itself (a core dump where enabled); the others by exit codes.
    expected = -signal.SIGQUIT if signal_number == signal.SIGQUIT else 128 + signal_number
    assert process.returncode == expected, stderr
    assert stderr.decode() == f"Error: interrupted by {SIGNAL_NAMES[signal_number]}\n"
    if not streaming:
        assert stdout == b""
    assert os.listdir(work / "cache") == []  # no partial cache entry, no temporary file
    assert sorted(os.listdir(work)) == ["cache"]  # and no checkpoint folder


# --- failures to write stdout ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "charrnn", "train", str(corpus), "--steps", "2", *FAST, *NUMPY_BACKEND, "-q"],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return folder / "checkpoints" / "poems" / "latest.npz", corpus


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
@pytest.mark.parametrize("command", ["sample", "sample --json", "info --json", "eval", "prepare"])
def test_a_full_stdout_is_one_error_line_and_exit_1(charrnn_executable, tiny_model, tmp_path, command):
    ckpt, corpus = tiny_model
    args = {
        "sample": ["sample", "-c", ckpt, "-q"],
        "sample --json": ["sample", "-c", ckpt, "-q", "--json"],
        "info --json": ["info", ckpt, "--json"],
        "eval": ["eval", ckpt, corpus],
        "prepare": ["prepare", corpus, "--cache-dir", tmp_path / "cache", "-q"],
    }[command]
    with open("/dev/full", "w") as full:
        result = subprocess.run([charrnn_executable, *map(str, args)], cwd=tmp_path, stdout=full,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr == "Error: cannot write to standard output: No space left on device\n"


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "whole"])
def test_a_reader_closing_stdout_early_is_a_normal_end(charrnn_executable, tiny_model, tmp_path, stream):
    ckpt, _ = tiny_model
    # Both are still writing when the reader goes, as with `charrnn sample | head -c 10`: --stream writes
    # token by token, and a whole sample (held until all are complete) of 6 × 1,000 characters (about
    # 15 kB) overfills the pipe, shrunk to a page where the system allows.
    read_end, write_end = os.pipe()
    if hasattr(fcntl, "F_SETPIPE_SZ"):
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    samples = 6 if hasattr(fcntl, "F_SETPIPE_SZ") else 60
    args = ["--stream", "--length", "100000"] if stream else ["--num-samples", str(samples), "--length", "1000"]
    process = subprocess.Popen([charrnn_executable, "sample", "-c", str(ckpt), "-q", *args], cwd=tmp_path,
                               stdout=write_end, stderr=subprocess.PIPE)
    os.close(write_end)
    try:
        with open(read_end, "rb", buffering=0) as reader:  # reads no more than it is asked for
            received = b""
            while len(received) < 10:
                chunk = reader.read(10 - len(received))
                assert chunk, f"the text ended after {len(received)} bytes"
                received += chunk
        stderr = process.stderr.read()
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 0
    assert stderr == b""  # no message, no "Exception ignored ... BrokenPipeError"


# --- the training log and the token cache -------------------------------------------------------------------


def test_an_unwritable_log_is_refused_before_training(workdir, small_corpus, tmp_path):
    folder = tmp_path / "logs"
    folder.mkdir()
    cases = [(folder, f"--log-jsonl {folder} is a folder; give the name of a file"),
             (tmp_path / "missing" / "run.jsonl", f"cannot write --log-jsonl {tmp_path / 'missing' / 'run.jsonl'}: "
                                                  f"the folder {tmp_path / 'missing'} does not exist; give another path")]
    if not ROOT:  # root may write to read-only files
        read_only = tmp_path / "read-only.jsonl"
        read_only.write_text("")
        read_only.chmod(0o444)
        cases.append((read_only, "the file is not writable; give another path"))
    for path, message in cases:
        result = invoke("train", small_corpus, "--steps", "2", *FAST, "--log-jsonl", path)
        assert_clean_error(result, 2, message)
        assert not (workdir / "data").exists() and not (workdir / "checkpoints").exists()  # before any work


@pytest.mark.skipif(not HAS_DEV_FULL, reason="needs /dev/full")
def test_a_log_that_fails_while_training_stops_with_exit_1(workdir, small_corpus, monkeypatch):
    # A log on a disk that fills up as the run goes: the file opens, its writes fail (as on /dev/full,
    # which as a device is itself refused before the run: test_output_paths).
    monkeypatch.setattr(files, "open_for_append", lambda path, what="": open("/dev/full", "a", encoding="utf-8"))
    result = invoke("train", small_corpus, "--steps", "5", *FAST, "--log-jsonl", "run.jsonl", "--log-every", "1")
    assert_clean_error(result, 1, "cannot write the training log run.jsonl: No space left on device; training "
                                  "stopped, the last checkpoint written is intact")
    assert os.listdir(workdir / "checkpoints" / "poems") == []
    refused = invoke("train", small_corpus, "--steps", "5", *FAST, "--log-jsonl", "/dev/full")
    assert_clean_error(refused, 2, "cannot write --log-jsonl /dev/full: it is a device, not a regular file", alone=True)


@pytest.mark.skipif(ROOT, reason="root may write to read-only folders")
@pytest.mark.parametrize("command", ["train", "prepare"])
def test_a_read_only_cache_folder_is_refused(workdir, small_corpus, command):
    cache = workdir / "cache"
    cache.mkdir()
    cache.chmod(0o555)
    try:
        args = ["--steps", "2", *FAST] if command == "train" else []
        result = invoke(command, small_corpus, "--cache-dir", cache, *args)
    finally:
        cache.chmod(0o755)
    assert_clean_error(result, 2, f"cannot write to the cache folder {cache}: Permission denied; pass --cache-dir")


def _cache_files_fail(monkeypatch, cache, error):
    """Make creating a file in ``cache`` fail with ``error``, or (None) give one that fails as it fills."""

    def mkstemp(*args, dir=None, **kwargs):
        fd, path = REAL_MKSTEMP(*args, dir=dir, **kwargs)
        if dir is None or os.path.abspath(dir) != str(cache):
            return fd, path
        os.close(fd)
        if error is not None:
            os.unlink(path)
            raise OSError(error, os.strerror(error), path)
        return os.open("/dev/full", os.O_WRONLY), path  # every write: no space left on device

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_an_unwritable_cache_is_exit_2_and_a_cache_write_failing_later_exit_1(workdir, small_corpus, monkeypatch,
                                                                             command):
    cache = workdir / "cache"
    args = [command, small_corpus, "--cache-dir", cache, *(["--steps", "2", *FAST] if command == "train" else [])]
    _cache_files_fail(monkeypatch, cache, 13)  # EACCES, as in a folder the user may not write to
    assert_clean_error(invoke(*args), 2, f"cannot write to the cache folder {cache}: Permission denied; pass "
                                         "--cache-dir")
    if HAS_DEV_FULL:
        _cache_files_fail(monkeypatch, cache, None)
        assert_clean_error(invoke(*args), 1, f"cannot write to the cache folder {cache}: No space left on device")
    assert os.listdir(cache) == []
    assert not (workdir / "checkpoints").exists()


def test_an_error_raised_while_an_interrupt_unwinds_still_ends_as_the_interrupt():
    """A signal inside a thread pool's wait can surface as the clean-up's own error ("cannot release
    un-acquired lock", seen once in eval on the compiled backend): the command still exits 130, in one line."""
    from click.testing import CliRunner

    from charrnn.cli.exits import CharRNNGroup, Interrupted

    group = CharRNNGroup()

    @group.command("wait")
    def wait() -> None:
        try:
            raise Interrupted(signal.SIGINT)
        except Interrupted:
            raise RuntimeError("cannot release un-acquired lock")

    @group.command("broken")
    def broken() -> None:
        raise RuntimeError("a real bug")

    result = CliRunner().invoke(group, ["wait"])
    assert result.exit_code == 130 and result.stderr == "Error: interrupted by SIGINT\n"
    other = CliRunner().invoke(group, ["broken"])  # an error with no interrupt behind it is not one
    assert other.exit_code == 1 and isinstance(other.exception, RuntimeError)


# --- issue 19, item 14: shell completion asked for without the shell's variables ---


def test_shell_completion_without_the_shells_variables_is_one_line_not_a_traceback(charrnn_executable, tmp_path):
    def complete(instruction: str, **variables: str) -> subprocess.CompletedProcess:
        environment = {k: v for k, v in os.environ.items() if not k.startswith("COMP_")}
        environment.update(_CHARRNN_COMPLETE=instruction, **variables)
        return subprocess.run([charrnn_executable, "train"], cwd=tmp_path, env=environment, capture_output=True,
                              text=True, timeout=60)

    setup = 'to set completion up in bash: eval "$(_CHARRNN_COMPLETE=bash_source charrnn)"'
    for instruction, variables, problem in [
        ("bash_complete", {}, "the shell's completion function sets it, with COMP_WORDS and COMP_CWORD"),
        ("zsh_complete", {"COMP_WORDS": "charrnn tr", "COMP_CWORD": "one"}, "the shell's completion function"),
        ("bash", {}, "expected bash_source, zsh_source or fish_source"),
        ("tcsh_source", {}, "expected bash_source, zsh_source or fish_source"),
    ]:
        run = complete(instruction, **variables)
        assert (run.returncode, run.stdout) == (2, ""), run.stderr
        assert run.stderr.startswith(f"Error: _CHARRNN_COMPLETE={instruction}: {problem}") and run.stderr.count("\n") == 1
        assert run.stderr.rstrip().endswith(setup)
    # What the shell's completion function does still works.
    run = complete("bash_complete", COMP_WORDS="charrnn tr", COMP_CWORD="1")
    assert (run.returncode, run.stdout.split()) == (0, ["plain,train"])
    assert "complete -o nosort -F _charrnn_completion charrnn" in complete("bash_source").stdout


# --- issue 19, item 13: output streams that cannot carry every character, and terminals ---


def _run_with_encoding(executable, cwd, encoding: str, *args) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONIOENCODING": encoding}
    return subprocess.run([executable, *map(str, args)], cwd=cwd, env=environment, capture_output=True,
                          timeout=120)


def test_a_stream_that_cannot_carry_a_character_gets_an_escape_not_a_traceback(charrnn_executable, tiny_model,
                                                                               tmp_path):
    ckpt, corpus = tiny_model
    folder = tmp_path / "月"
    folder.mkdir()
    (folder / "月.npz").write_bytes(ckpt.read_bytes())
    listed = _run_with_encoding(charrnn_executable, tmp_path, "ascii", "ls", folder)
    assert (listed.returncode, listed.stderr) == (0, b""), listed.stderr
    assert b"\\u6708.npz " in listed.stdout and listed.stdout.isascii()
    # A JSON document stays valid and reads back the same: the escape is JSON's own.
    named = tmp_path / "月.txt"
    named.write_bytes(corpus.read_bytes())
    prepared = _run_with_encoding(charrnn_executable, tmp_path, "latin-1", "prepare", named, "--json", "-q")
    assert (prepared.returncode, prepared.stderr) == (0, b""), prepared.stderr
    assert json.loads(prepared.stdout.decode("latin-1"))["files"] == [str(named)]
    # stderr too, even when told to be strict; and text the stream can carry is left as it is.
    info = _run_with_encoding(charrnn_executable, tmp_path, "ascii:strict", "info", folder / "月.npz")
    assert info.returncode == 0 and f"{tmp_path}/\\u6708/\\u6708.npz".encode() in info.stdout
    missing = _run_with_encoding(charrnn_executable, tmp_path, "ascii:strict", "info", "月/é.npz")
    assert (missing.returncode, missing.stderr) == (2, b"Error: no checkpoint at \\u6708/\\u00e9.npz\n")
    latin = _run_with_encoding(charrnn_executable, tmp_path, "latin-1", "info", "é.npz")
    assert latin.stderr == "Error: no checkpoint at é.npz\n".encode("latin-1")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a pseudo-terminal")
def test_control_characters_in_file_names_are_escaped_on_a_terminal(charrnn_executable, tiny_model, tmp_path):
    import pty

    ckpt, _ = tiny_model
    folder = tmp_path / "run"
    folder.mkdir()
    hostile = "\x1b[2J\x1b]0;owned\x07.npz"
    (folder / hostile).write_bytes(ckpt.read_bytes())

    def on_a_terminal(*args) -> tuple[int, bytes]:
        main, secondary = pty.openpty()
        process = subprocess.Popen([charrnn_executable, *map(str, args)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   stdout=secondary, stderr=secondary)
        os.close(secondary)
        shown = b""
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # EIO: the other side has closed
                break
            if not chunk:
                break
            shown += chunk
        os.close(main)
        return process.wait(timeout=120), shown

    code, shown = on_a_terminal("ls", folder)
    assert code == 0 and b"\x1b" not in shown and b"\x07" not in shown
    assert b"\\x1b[2J\\x1b]0;owned\\x07.npz" in shown
    code, shown = on_a_terminal("info", folder / ("x" + hostile))
    assert code == 2 and b"\x1b" not in shown and b"Error: no checkpoint at" in shown
    # Not a terminal: the names are the bytes they are, for scripts.
    piped = subprocess.run([charrnn_executable, "ls", str(folder)], capture_output=True, timeout=120)
    assert hostile.encode() in piped.stdout


# --- issue 19, item 10: signals during start-up, and SIGHUP ---


def _catches(pid: int, number: int) -> bool:
    try:
        return bool(int(_status_field(pid, "SigCgt"), 16) & (1 << (number - 1)))
    except (OSError, StopIteration):
        return False


@pytest.mark.skipif(not LINUX, reason="reads /proc")
@pytest.mark.parametrize("command", ["info", "export", "sample", "eval", "train"])
def test_a_signal_while_the_imports_run_is_one_line_and_the_signals_exit_code(charrnn_executable, tiny_model,
                                                                              tmp_path, command):
    """From the first line of charrnn (its entry point catches SIGHUP, which Python leaves alone), a
    signal during the tenth of a second of imports is one line and 128 + its number, never a
    KeyboardInterrupt traceback; and an ignored SIGINT (a background job's) stays ignored."""
    ckpt, corpus = tiny_model
    args = {"info": ["info", ckpt], "export": ["export", ckpt, "-o", "m.npz"], "sample": ["sample", "-c", ckpt],
            "eval": ["eval", ckpt, corpus], "train": ["train", corpus, "--steps", "1", *FAST]}[command]
    for number in (signal.SIGINT, signal.SIGHUP):
        process = subprocess.Popen([charrnn_executable, *map(str, args)], cwd=tmp_path, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            _wait_for(process, lambda: _catches(process.pid, signal.SIGHUP), "charrnn's entry point")
            process.send_signal(number)
            stdout, stderr = process.communicate(timeout=60)
        finally:
            process.kill()
        assert (process.returncode, stdout, stderr) == (128 + number, "", f"Error: interrupted by "
                                                                          f"{SIGNAL_NAMES[number]}\n")
        assert os.listdir(tmp_path) == []
    ignored = subprocess.Popen([charrnn_executable, *map(str, args), "-q"], cwd=tmp_path, stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    _wait_for(ignored, lambda: _catches(ignored.pid, signal.SIGHUP), "charrnn's entry point")
    ignored.send_signal(signal.SIGINT)
    _, stderr = ignored.communicate(timeout=300)
    assert ignored.returncode == 0 and stderr == ""


@pytest.mark.skipif(not LINUX, reason="reads /proc")
def test_sighup_saves_a_checkpoint_and_exits_129_and_sigquit_saves_nothing(charrnn_executable, tmp_path,
                                                                           small_corpus):
    """A hang-up (the terminal or the ssh session went away) stops training as SIGTERM does: the step
    under way is finished and saved. SIGQUIT aborts at once, leaving the last checkpoint as it was and
    no unfinished write, and the process dies by it."""
    for number, folder in ((signal.SIGHUP, "hup"), (signal.SIGQUIT, "quit")):
        process = subprocess.Popen([charrnn_executable, "train", str(small_corpus), *FAST, "--steps", "10000000",
                                    "--checkpoint-every", "20", "--eval-every", "0", "--checkpoint-dir", folder],
                                   cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        _wait_for(process, lambda: (tmp_path / folder / "step_00000040.npz").exists(), "two saves", timeout=300)
        process.send_signal(number)
        stdout, stderr = process.communicate(timeout=120)
        lines = stderr.strip().splitlines()
        assert "Traceback" not in stderr and stdout == ""
        if number == signal.SIGHUP:
            assert process.returncode == 129, stderr
            assert lines[-1] == f"Interrupted; checkpoint saved to {folder}/latest.npz"
            # At least the step-40 save: a signal between that save and step 41 leaves nothing newer to save.
            assert checkpoint.load(str(tmp_path / folder / "latest.npz")).progress.step >= 40
        else:
            assert process.returncode == -signal.SIGQUIT, stderr
            assert lines[-1] == "Error: aborted without saving; the last checkpoint written is intact"
            latest = checkpoint.load(str(tmp_path / folder / "latest.npz")).progress.step
            assert latest % 20 == 0  # a periodic save, whole, never one the signal cut short
        assert not [name for name in os.listdir(tmp_path / folder) if name.startswith(".")]
