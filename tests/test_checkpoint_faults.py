"""Crafted and damaged checkpoints (issue 10, items 8 and 9): each one loads as a consistent checkpoint
or is refused with one ``Error:`` line and exit 2 by every command that reads checkpoints; never a
traceback, a hang, a warning, a gigabyte of memory or an unpickled object.

The variants come from crafted_checkpoints.py, made from a real checkpoint trained here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import warnings
import zipfile
from collections import Counter
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from charrnn.checkpoints import checkpoint, info
from charrnn.model import network
from charrnn.cli import cli
from charrnn.config import ModelConfig, SampleConfig, TrainConfig
from charrnn.settings import from_dict
from charrnn.errors import CheckpointError, ConfigError
from charrnn.data.tokenizer import Tokenizer
from charrnn.progress import Progress
from conftest import TANG300
from crafted_checkpoints import (
    BOMB_BYTES, FIELD_VALUES, field_paths, iter_crafted_checkpoints, meta_json, path_name, pickle_marker,
    read_checkpoint, replaced, with_arrays, with_meta,
)
from test_cli import invoke

# The defects the adversarial campaign found (and a few more), by their names in the catalogue, with
# what the one error line must say.
NAMED_CASES = {
    "meta:model.num_layers=huge-float": "model: num_layers must be a whole number, got 1e+30",
    "meta:model.hidden_size=fraction": "model: hidden_size must be a whole number, got 32.5",
    "meta:progress.position=negative": "progress.position must be from 0 to 9223372036854775807, got -5",
    "meta:progress.step=string": "progress: step must be a whole number, got 'abc'",
    "meta:rng_state.state.inc=missing": "rng_state.state.inc is missing",
    "meta:corpus.num_tokens=1e999": "corpus.num_tokens must be a whole number, got inf",
    "meta:progress.step=nan": "progress: step must be a whole number, got nan",
    "meta:train.max_steps=nan": "train: max_steps must be a whole number, got nan",
    "meta:progress.step=digits": "a number thousands of digits long",
    "meta:set:num_layers=10**9": "model.num_layers must be from 1 to 1000, got 1000000000",
    "meta:set:vocab-one-short": "a vocabulary of 400 tokens for a model of 401",
    "meta:set:position-past-streams": "is past the end of the streams",
    "meta:set:val_step-after-step": "progress.val_step 3 is after progress.step 2",
    "meta:set:best_val_step-after-step": "progress.best_val_step 3 is after progress.step 2",
    "meta:set:embed_size+3": "entry param.W_xe has shape (401, 8) and dtype float32, but the model needs (401, 11)",
    "meta:set:format_version=5": "uses checkpoint format 5, newer than this charrnn",
    "meta:set:bidirectional-flipped": "does not match its model (missing ['optim.sum_sq.W_hh.back'",
    "meta:set:look_ahead=2**63": "train: --look-ahead must be at most 9,223,372,036,854,775,807",
    "bomb:param.W_hy": "would inflate to 1,073,",
    "bomb:meta": "would inflate to 1,073,",
    "pickle:param.b_h": "holds pickled Python objects; refusing to load it",
    "entry:param.W_hy:trailing-bytes": "entry param.W_hy holds",
    "zip:flip-in:param.W_hy.npy": "Bad CRC-32",
    "zip:truncated@0": "is not a charrnn checkpoint (empty",
    # Values (issue 19, item 5): sample printed garbage, eval "nan nats/token", export blamed the learning rate.
    "values:param.W_hy:nan": "its parameter W_hy is not finite (NaN); the file is damaged",
    "values:param.W_hy:inf": "its parameter W_hy is not finite (infinity)",
    "values:param.W_hy:3e38": "its parameter W_hy holds 3e+38, beyond ±1e+04",
    "values:optim.sum_sq.W_hh:-inf": "its optimizer state sum_sq.W_hh is not finite (infinity)",
    "values:optim.sum_sq.W_xh:negative": "its optimizer state sum_sq.W_xh holds -1, but as a sum of squares",
    "values:state.h.0:nan": "its hidden state h.0 is not finite (NaN)",
}


def _commands(path: Path, corpus: Path, out: Path) -> dict[str, list]:
    """The five ways to read a checkpoint from the command line."""
    return {
        "info": ["info", path],
        "info --json": ["info", "--json", path],
        "sample": ["sample", "-c", path, "--length", "5"],
        "eval": ["eval", path, corpus],
        "train --resume": ["train", "--resume", path, "--checkpoint-dir", out, "--cache-dir", out / "cache"],
    }


class Hung(Exception):
    """Raised by SIGALRM in a command that ran past its deadline."""


class Run(NamedTuple):
    """A command run in this process."""

    result: Result
    warnings: list  # what the warnings module caught


@contextlib.contextmanager
def deadline(seconds: int = 120) -> Iterator[None]:
    """Raise Hung in the code inside if it is still running after ``seconds`` (SIGALRM): generous, as a
    command that trains may first compile the numba kernels, which takes half a minute on a busy machine."""
    def interrupt(signum, frame):
        raise Hung

    previous = signal.signal(signal.SIGALRM, interrupt)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def invoke_with_deadline(args: list) -> Run:
    """Run one charrnn command in this process with a deadline (a hang shows as result.exception, a
    Hung) and every warning caught. In-process, so the whole catalogue takes minutes rather than hours
    of interpreter start-ups; test_installed_command_* runs real processes."""
    with deadline(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    return Run(result, caught)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    """(a real checkpoint, its corpus): step 2 of 4 of a tiny model with an <unk> token and validation,
    so that resuming it trains."""
    folder = tmp_path_factory.mktemp("source")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    result = invoke("train", corpus, "--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--hidden-size",
                    "8", "--batch-size", "2", "--seq-length", "5", "--max-vocab", "400", "--sample-every", "0",
                    "--rng-seed", "1", "-q", "--checkpoint-dir", folder / "run", "--cache-dir", folder / "cache")
    assert result.exit_code == 0, result.stderr
    return folder / "run" / "step_00000002.npz", corpus


@pytest.fixture(scope="module")
def named(source) -> dict[str, bytes]:
    """The bytes of the NAMED_CASES, picked out of the catalogue."""
    found = {name: data for name, data in iter_crafted_checkpoints(str(source[0])) if name in NAMED_CASES}
    assert set(found) == set(NAMED_CASES)
    return found


def assert_consistent(ckpt: checkpoint.Checkpoint, tmp_path: Path) -> None:
    """A loaded checkpoint that every command can use: sizes agree, numbers are finite, it re-saves."""
    config = ckpt.model_config
    assert ckpt.tokenizer.vocab_size == config.vocab_size
    assert {name: p.shape for name, p in ckpt.params.items()} == network.param_shapes(config)
    assert all(p.dtype == np.dtype(config.dtype) for p in ckpt.params.values())
    assert all(s.shape == (ckpt.train_config.batch_size, config.hidden_size) for s in ckpt.hidden.values())
    for arrays in (ckpt.params, ckpt.optimizer_state, ckpt.hidden):  # updated in place by training
        assert all(a.flags.c_contiguous and a.flags.writeable and a.dtype.isnative for a in arrays.values())
        assert all(np.isfinite(a).all() for a in arrays.values())
    for field in dataclasses.fields(Progress):
        value = getattr(ckpt.progress, field.name)
        assert value is None or (not isinstance(value, bool) and 0 <= value < 2**63 and math.isfinite(value))
    assert ckpt.progress.val_step is None or ckpt.progress.val_step <= ckpt.progress.step
    np.random.default_rng().bit_generator.state = ckpt.rng_state
    again = tmp_path / "again.npz"
    again.write_bytes(checkpoint.to_bytes(ckpt))
    assert checkpoint.to_bytes(checkpoint.load(str(again))) == again.read_bytes()
    json.dumps(info.to_dict(info.summarize(str(again))), allow_nan=False)


def load_or_refuse(data: bytes, tmp_path: Path) -> str:
    """Load ``data`` as a checkpoint: 'loaded' (and consistent) or 'refused'; anything else fails the test."""
    path = tmp_path / "crafted.npz"
    path.write_bytes(data)
    with deadline(), warnings.catch_warnings():
        warnings.simplefilter("error")  # a RuntimeWarning while loading is a failure too
        try:
            ckpt = checkpoint.load(str(path))
        except CheckpointError as exc:
            assert str(path) in str(exc) and "\n" not in str(exc)
            return "refused"
    assert_consistent(ckpt, tmp_path)
    return "loaded"


def assert_one_error_line(result, path: Path, message: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr and "Warning" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: {path}") and message in lines[0], result.stderr


@pytest.mark.parametrize("case", sorted(NAMED_CASES))
def test_named_crafted_cases_end_in_one_error_line_in_every_command(case, named, source, tmp_path):
    path = tmp_path / "crafted.npz"
    path.write_bytes(named[case])
    marker = Path(pickle_marker(str(source[0])))
    for command, args in _commands(path, source[1], tmp_path / "out").items():
        run = invoke_with_deadline(args)
        assert verdict(run) == "error", (command, verdict(run), run.result.stderr, run.result.exc_info)
        assert_one_error_line(run.result, path, NAMED_CASES[case])
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.npz"))


def test_installed_command_never_hangs_or_tracebacks_on_crafted_files(charrnn_executable, named, source, tmp_path):
    # step NaN and max_steps NaN made `train --resume` loop forever; run all five commands of each
    # case at once, in real processes with a deadline.
    cases = ["meta:progress.step=nan", "meta:train.max_steps=nan"]
    runs = []
    try:
        for index, case in enumerate(cases):
            path = tmp_path / f"{index}.npz"
            path.write_bytes(named[case])
            for command, args in _commands(path, source[1], tmp_path / f"out{index}").items():
                process = subprocess.Popen([charrnn_executable, *map(str, args)], cwd=tmp_path, text=True,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                runs.append((case, command, path, process))
        for case, command, path, process in runs:
            try:
                stdout, stderr = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"{command} hung on {case}")
            assert (process.returncode, stdout) == (2, ""), (case, command, stderr)
            assert stderr.startswith(f"Error: {path}") and stderr.count("\n") == 1, (case, command, stderr)
            assert NAMED_CASES[case] in stderr
    finally:  # a failure must not leave the other processes running
        for *_, process in runs:
            if process.poll() is None:
                process.kill()
                process.wait()


def test_weights_that_are_not_finite_are_refused_by_export_too(named, tmp_path):
    # export blamed a diverged learning rate for a NaN it had only copied.
    for case in ("values:param.W_hy:nan", "values:param.W_hy:3e38"):
        path = tmp_path / "crafted.npz"
        path.write_bytes(named[case])
        run = invoke_with_deadline(["export", path, "-o", tmp_path / "out.npz", "-q"])
        assert_one_error_line(run.result, path, NAMED_CASES[case])
        assert not (tmp_path / "out.npz").exists()


def test_arrays_stored_column_major_train_exactly_like_the_same_arrays_row_major(source, tmp_path):
    # A checkpoint whose 2-D arrays were stored in Fortran order resumed and trained with exit 0, but the
    # optimizer updated copies: W_xh, W_hh and W_hy never changed, nor did Adagrad's sums of squares.
    taken = read_checkpoint(str(source[0]))
    column_major = {name: np.asfortranarray(array) for name, array in taken.arrays.items() if array.ndim == 2}
    assert {"param.W_xh", "param.W_hh", "param.W_hy", "optim.sum_sq.W_hy", "state.h.0"} <= set(column_major)
    data = {"row-major": source[0].read_bytes(), "column-major": with_arrays(taken, column_major)}
    assert data["row-major"] != data["column-major"]
    trained = {}
    for layout, raw in data.items():
        start = tmp_path / layout / "start.npz"
        start.parent.mkdir()
        start.write_bytes(raw)
        loaded = checkpoint.load(str(start))
        assert all(a.flags.c_contiguous for a in loaded.params.values())
        result = invoke("train", "--resume", start, "--cache-dir", tmp_path / "cache", "--backend", "numpy", "-q")
        assert result.exit_code == 0, result.stderr
        trained[layout] = checkpoint.load(str(start.parent / "latest.npz"))
    before = checkpoint.load(str(source[0]))
    assert trained["column-major"].progress.step == before.progress.step + 2
    for group in ("params", "optimizer_state"):
        for name, value in getattr(before, group).items():
            if name == "W_xe" or name.endswith(".W_xe"):
                continue  # rows of tokens not in these two steps' chunks stay as they were
            assert not np.array_equal(getattr(trained["column-major"], group)[name], value), name
            assert np.array_equal(getattr(trained["column-major"], group)[name],
                                  getattr(trained["row-major"], group)[name]), name


def _run_measuring_memory(script: str) -> tuple[str, int]:
    """(stdout, peak resident KiB) of a fresh interpreter running ``script``, as the kernel reports it."""
    run = subprocess.run([sys.executable, "-c", script + "\nimport resource\n"
                          "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                         capture_output=True, text=True, timeout=120, check=True)
    *output, peak = run.stdout.splitlines()
    return "\n".join(output), int(peak)


def test_a_zip_bomb_is_refused_before_it_inflates(named, source, tmp_path):
    bombs = {}
    for case in ("bomb:param.W_hy", "bomb:meta"):
        bombs[case] = tmp_path / f"{case.replace(':', '-')}.npz"
        bombs[case].write_bytes(named[case])
        assert bombs[case].stat().st_size < 2 * 2**20  # about a megabyte on disk ...
    with zipfile.ZipFile(bombs["bomb:param.W_hy"]) as archive:
        assert archive.getinfo("param.W_hy.npy").file_size > BOMB_BYTES  # ... for a gigabyte inflated
    load = "from charrnn.checkpoints import checkpoint\n"
    _, real = _run_measuring_memory(load + f"checkpoint.load({str(source[0])!r})")
    for case, path in bombs.items():
        output, peak = _run_measuring_memory(load + f"try:\n    checkpoint.load({str(path)!r})\n"
                                             "except checkpoint.CheckpointError as e:\n    print(e)")
        assert "would inflate to 1,073," in output
        assert peak - real < 8 * 1024, f"{case} cost {(peak - real) // 1024} MiB more than a real checkpoint"


def test_the_metadata_entry_has_a_size_bound(source, monkeypatch, tmp_path):
    from charrnn.checkpoints import metadata  # here, so that the other tests also run on the code before it

    size = read_checkpoint(str(source[0])).arrays["meta"].size
    monkeypatch.setattr(metadata, "META_MAX_BYTES", size - 1)
    with pytest.raises(CheckpointError, match=f"has {size:,} bytes of metadata, more than any checkpoint holds"):
        checkpoint.load(str(source[0]))
    monkeypatch.setattr(metadata, "META_MAX_BYTES", size)
    checkpoint.load(str(source[0]))


# Changes that leave a checkpoint equivalent, or different but sound: these must load.
MUST_LOAD = ("entry:param.W_hy:fortran-order", "zip:appended-garbage", "meta:train.learning_rate=fraction",
             "meta:progress.val_step=null", "meta:corpus.max_vocab=missing", "meta:rng_state.uinteger=zero")
NON_FINITE = ("nan", "inf", "-inf", "1e999", "digits")


def _check_catalogue(source: tuple[Path, Path], tmp_path: Path, every: int) -> None:
    """Load every ``every``-th variant of the catalogue (and all of MUST_LOAD) in this process."""
    marker = tmp_path / "marker"
    tried = 0
    for index, (name, data) in enumerate(iter_crafted_checkpoints(str(source[0]), str(marker))):
        if index % every and name not in MUST_LOAD:
            continue
        tried += 1
        outcome = load_or_refuse(data, tmp_path)
        if name in MUST_LOAD:
            assert outcome == "loaded", name
        if name.startswith("meta:") and name.rsplit("=", 1)[-1] in NON_FINITE or name.startswith("values:"):
            assert outcome == "refused", name
    assert not marker.exists()
    assert tried > 1300 // every


def test_a_sample_of_the_crafted_variants_loads_consistently_or_is_refused(source, tmp_path):
    _check_catalogue(source, tmp_path, every=9)


@pytest.fixture(scope="module")
def bidirectional_source(tmp_path_factory) -> tuple[Path, Path]:
    """(a real bidirectional checkpoint, its corpus): step 2 of 4, a GRU with an embedding and a look-ahead."""
    folder = tmp_path_factory.mktemp("bidirectional")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    result = invoke("train", corpus, "--bidirectional", "--look-ahead", "2", "--cell", "gru", "--embed-size", "4",
                    "--steps", "4", "--checkpoint-every", "2", "--eval-every", "2", "--hidden-size", "8",
                    "--batch-size", "2", "--seq-length", "5", "--rng-seed", "1", "-q",
                    "--checkpoint-dir", folder / "run", "--cache-dir", folder / "cache")
    assert result.exit_code == 0, result.stderr
    return folder / "run" / "step_00000002.npz", corpus


def test_a_sample_of_the_crafted_variants_of_a_bidirectional_model_loads_consistently_or_is_refused(
        bidirectional_source, tmp_path):
    _check_catalogue(bidirectional_source, tmp_path, every=9)
    crafted = dict(iter_crafted_checkpoints(str(bidirectional_source[0]), str(tmp_path / "marker")))
    for name in ("meta:set:bidirectional-flipped", "meta:set:format_version=3-of-format-4"):
        assert load_or_refuse(crafted[name], tmp_path) == "refused", name  # its .back entries are too many


@pytest.mark.slow
def test_every_crafted_variant_loads_consistently_or_is_refused(source, tmp_path):
    _check_catalogue(source, tmp_path, every=1)


# Values of every JSON type, and the numbers that break naive code.
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8)
    | st.sampled_from([2**63, 2**64, 10**30, -1, 0, 1, 0.5, 1e308, -0.0]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def parts(source):
    """The source checkpoint taken apart, and the path of every field of its metadata."""
    taken = read_checkpoint(str(source[0]))
    return taken, list(field_paths(taken.meta))


def _fuzz(parts, data, tmp_path) -> None:
    """Every field of the metadata in turn, given a value drawn by hypothesis (or deleted)."""
    taken, paths = parts
    values = st.sampled_from([value for _, value in FIELD_VALUES]) | json_values
    for path in paths:
        value = data.draw(values, label=path_name(path))
        load_or_refuse(with_meta(taken, meta_json(replaced(taken.meta, path, value))), tmp_path)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_in_every_metadata_field_loads_consistently_or_is_refused(parts, tmp_path, data):
    _fuzz(parts, data, tmp_path)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_value_in_every_metadata_field_many_more_examples(parts, tmp_path, data):
    _fuzz(parts, data, tmp_path)


def verdict(run: Run) -> str:
    """'ok' (exit 0), 'error' (exit 2, one ``Error:`` line, nothing on stdout), 'failed' (the same with
    exit 1: training a loaded checkpoint can fail), or what went wrong: 'hang', 'traceback', 'warning',
    'unclean'."""
    result = run.result
    if isinstance(result.exception, Hung):
        return "hang"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback"
    if run.warnings or "Warning" in result.stderr:
        return "warning"
    if result.exit_code == 0:
        return "ok"
    lines = result.stderr.splitlines()
    if result.stdout or len(lines) != 1 or not lines[0].startswith("Error: "):
        return "unclean"
    return {2: "error", 1: "failed"}.get(result.exit_code, "unclean")


def crafted_outcomes(source_path: Path, corpus: Path, folder: Path) -> Counter:
    """(variant, command, verdict) counts of every crafted variant of ``source_path`` × the five commands."""
    outcomes: Counter = Counter()
    marker = folder / "marker"
    for index, (name, data) in enumerate(iter_crafted_checkpoints(str(source_path), str(marker))):
        path = folder / f"{index}.npz"
        path.write_bytes(data)
        for command, args in _commands(path, corpus, folder / f"out{index}").items():
            outcomes[name, command, verdict(invoke_with_deadline(args))] += 1
        path.unlink()
    assert not marker.exists()
    return outcomes


@pytest.mark.slow
def test_every_crafted_variant_through_every_command(source, tmp_path):
    outcomes = crafted_outcomes(*source, tmp_path)
    assert sum(outcomes.values()) > 5 * 1300
    assert [key for key in outcomes if key[2] not in ("ok", "error", "failed")] == []


@dataclasses.dataclass(frozen=True)
class _Limits:
    steps: int | None = None  # the newer spelling of Optional[int]


def test_from_dict_checks_types_strictly():
    assert from_dict(ModelConfig, {"vocab_size": 5, "hidden_size": 3, "dropout": 0}).dropout == 0.0
    assert from_dict(TrainConfig, {"max_steps": 9, "unknown_future_setting": [1]}).max_steps == 9
    for data, message in [
        ({"vocab_size": True}, "vocab_size must be a whole number, got True"),
        ({"vocab_size": 5.0}, "vocab_size must be a whole number, got 5.0"),
        ({"vocab_size": "5"}, "vocab_size must be a whole number, got '5'"),
        ({"vocab_size": 5, "dropout": float("nan")}, "dropout must be a finite number, got nan"),
        ({"vocab_size": 5, "dropout": 10**400}, "dropout must be a finite number, got " + "1" + "0" * 36 + "..."),
        ({"vocab_size": 5, "cell": None}, "cell must be a string, got None"),
        ({"hidden_size": 5, "dtype": "float16"}, "--dtype must be one of float32, float64; got 'float16'"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_dict(ModelConfig, data)
    with pytest.raises(ConfigError, match="the Progress settings must be a JSON object, got 'abc'"):
        from_dict(Progress, "abc")
    assert from_dict(SampleConfig, {"greedy": True, "top_k": None}).is_greedy
    assert from_dict(_Limits, {"steps": None}).steps is None and from_dict(_Limits, {"steps": 3}).steps == 3
    with pytest.raises(ConfigError, match="steps must be a whole number, got 3.5"):
        from_dict(_Limits, {"steps": 3.5})
    with pytest.raises(ConfigError, match="greedy must be true or false, got 1"):
        from_dict(SampleConfig, {"greedy": 1})


def test_tokenizer_from_dict_refuses_what_no_decoded_text_holds():
    for data, message in [
        ({"kind": "jieba", "vocab": ["", "a"]}, "not a list of non-empty strings"),
        ({"kind": "char", "vocab": ["a", "\udcff"]}, "lone surrogate"),
        ({"kind": 3, "vocab": ["a"]}, "kind is not a string"),
        (["a"], "not a JSON object"),
        ({"kind": "char", "vocab": ["a"], "unknown": 1}, "unknown is not a string"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            Tokenizer.from_dict(data)


def test_a_resume_whose_position_lies_about_its_corpus_is_refused(source, tmp_path):
    # The metadata claims a longer corpus than the file it names, so the position passes the load-time
    # check, but it is past the end of the real streams.
    taken = read_checkpoint(str(source[0]))
    meta = replaced(taken.meta, ("corpus", "num_tokens"), 10**6)
    meta = replaced(meta, ("corpus", "num_train_tokens"), 10**6)
    meta = replaced(meta, ("progress", "position"), 5000)
    path = tmp_path / "liar.npz"
    path.write_bytes(with_meta(taken, meta_json(meta)))
    checkpoint.load(str(path))
    run = invoke_with_deadline(["train", "--resume", path, "--checkpoint-dir", tmp_path / "out",
                                "--cache-dir", tmp_path / "cache"])
    assert_one_error_line(run.result, path, "is inconsistent: its position 5000 is past the end of the streams")


def test_a_checkpoint_that_cannot_be_read_for_want_of_permission_is_not_called_corrupt(source, tmp_path, monkeypatch):
    """A mode-000 checkpoint (or one in a folder the user may not enter) is not damaged: the error says
    permission denied. (Root reads any file, so the refusal is simulated at the open.)"""
    from charrnn.checkpoints import archive

    path = str(source[0])
    real_open = os.open

    def refused(name, *args, **kwargs):
        if os.fspath(name) == path:
            raise PermissionError(13, "Permission denied", name)
        return real_open(name, *args, **kwargs)

    monkeypatch.setattr(archive.os, "open", refused)
    with pytest.raises(CheckpointError) as raised:
        checkpoint.load(path)
    assert str(raised.value) == f"cannot read {path}: permission denied"
    monkeypatch.undo()
    locked = tmp_path / "locked.npz"
    locked.write_bytes(source[0].read_bytes())
    locked.chmod(0)
    if os.geteuid() != 0:  # the real thing, where permissions bind
        result = invoke("info", locked)
        assert result.exit_code == 2 and result.stderr == f"Error: cannot read {locked}: permission denied\n"
