"""The same seeded command writes the same checkpoints, before and after a change that should not alter them.

Five commands (each cell, optimizer and tokenizer) train a tiny model in float64 through the numpy
backend; every array and every metadata field of the checkpoints they write is compared with the values
recorded in data/golden_float64.json.

Why float64, and why a tolerance: the last bits of a run depend on the processor. Sums inside the BLAS
come in an order that depends on the kernels OpenBLAS picks for the CPU, and numpy's exp and tanh take
SIMD paths (AVX-512 where there is one) that round differently, so no digest of a run can be the same on
every machine; in float32 the differences grow through training until they decide things (which
validation is a new best). In float64 they stay at the level of rounding: the same five runs with
OpenBLAS's Prescott and Sandybridge kernels instead of this machine's Haswell ones, and with numpy's SIMD
dispatch switched off, ended within 1e-13 of each other (relative to each array's size), and through the
numba backend, whose kernels share no code with numpy's, within 2e-12 (2026-12-04, 2-core AMD EPYC,
AVX2). A change to the model, the optimizer, the data or the order of the random draws moves them by
many orders of magnitude more. So each array is compared through sums that see all of it (its plain sum
and a sum with fixed pseudo-random weights of ±1) to within 1e-9 of their scale (the sum of the absolute
values), each float of the metadata to within 1e-9 relative, and everything else (shapes, steps, counters,
the vocabulary, the random generator's state, the best step) exactly. The best step is safe too: the
three validation losses of each run differ from one another by at least 0.004 nats.

The values were first recorded on 2026-12-04 with the code as it stood after the package was
reorganised (issue 18), which wrote these runs' checkpoints byte for byte as the code before it did; and
again the same day for the changes meant to alter training (issue 20: PyTorch's initialisation,
validation spread across the corpus; checkpoint format 4). Record them
again (``python tests/test_golden_checkpoints.py``) only for a change that is meant to alter training,
after checking what it changed.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import TANG300
from test_cli import invoke_ok

RECORDED = Path(__file__).resolve().parent / "data" / "golden_float64.json"
TOLERANCE = 1e-9
COMMON = ["--embed-size", "none", "--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--rng-seed", "3",
          "--sample-every", "0", "--steps", "30", "--checkpoint-every", "15", "--eval-every", "10", "-q",
          "--dtype", "float64", "--backend", "numpy"]
COMMANDS = {
    "rnn-adagrad": ["--learning-rate", "0.1"],
    "rnn-relu": ["--activation", "relu", "--learning-rate", "0.1"],
    "gru-2-layers-dropout-adam": ["--cell", "gru", "--num-layers", "2", "--dropout", "0.3", "--optimizer", "adam",
                                  "--learning-rate", "0.01"],
    "lstm-rmsprop": ["--cell", "lstm", "--optimizer", "rmsprop", "--learning-rate", "0.01"],
    "jieba-max-vocab": ["--tokenizer", "jieba", "--max-vocab", "200", "--learning-rate", "0.1"],
}
FILES = ("best.npz", "latest.npz", "step_00000015.npz")  # step_00000030.npz is latest.npz, byte for byte


def _weights(size: int) -> np.ndarray:
    """±1-ish pseudo-random weights, multiples of 1/2048 (exact in any float), the same everywhere."""
    return ((np.arange(size, dtype=np.int64) * 2654435761) % 4096) / 2048.0 - 1.0


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    """A JSON document as {"a.b.c": leaf}."""
    if isinstance(value, dict):
        return {k: v for key in sorted(value) for k, v in _flatten(value[key], f"{path}{key}.").items()}
    return {path.rstrip("."): value}


def fingerprint(path: Path) -> dict[str, Any]:
    """What the test compares of a checkpoint: its metadata as flat fields (without the corpus's file names,
    which depend on the folder, and with the vocabulary as a digest) and, of each array, its shape,
    dtype and (floats) two sums over all of it with their scale, or (integers) its values."""
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes())
        meta["corpus"]["paths"] = meta["corpus"]["val_paths"] = []
        vocab = json.dumps(meta["tokenizer"]["vocab"], ensure_ascii=False).encode()
        meta["tokenizer"]["vocab"] = hashlib.sha256(vocab).hexdigest()
        arrays = {}
        for name in sorted(archive.files):
            if name == "meta":
                continue
            array = archive[name]
            entry: dict[str, Any] = {"shape": list(array.shape), "dtype": array.dtype.str}
            if array.dtype.kind == "f":
                flat = array.astype(np.float64).ravel()
                entry.update(sum=float(flat.sum()), weighted_sum=float(flat @ _weights(flat.size)),
                             scale=float(np.abs(flat).sum()))
            else:
                entry["values"] = array.ravel().tolist()
            arrays[name] = entry
    return {"meta": _flatten(meta), "arrays": arrays}


def _train(folder: Path, extra: list[str]) -> Path:
    folder.mkdir()
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    invoke_ok("train", corpus, *COMMON, *extra, "--checkpoint-dir", folder / "run", "--cache-dir", folder / "cache")
    run = folder / "run"
    assert sorted(p.name for p in run.iterdir()) == sorted([*FILES, "step_00000030.npz"])
    assert (run / "latest.npz").read_bytes() == (run / "step_00000030.npz").read_bytes()
    return run


def _differences(written: dict[str, Any], recorded: dict[str, Any]) -> list[str]:
    """Where ``written`` is not ``recorded`` beyond rounding (empty when it is the same run)."""
    found = []
    meta, expected_meta = written["meta"], recorded["meta"]
    if set(meta) != set(expected_meta):
        found.append(f"metadata fields {sorted(set(meta) ^ set(expected_meta))}")
    for key in sorted(set(meta) & set(expected_meta)):
        value, expected = meta[key], expected_meta[key]
        if isinstance(expected, float) and isinstance(value, float) and math.isfinite(expected):
            if not math.isclose(value, expected, rel_tol=TOLERANCE, abs_tol=1e-300):
                found.append(f"meta {key}: {value!r}, recorded {expected!r}")
        elif value != expected or type(value) is not type(expected):
            found.append(f"meta {key}: {value!r}, recorded {expected!r}")
    arrays, expected_arrays = written["arrays"], recorded["arrays"]
    if set(arrays) != set(expected_arrays):
        found.append(f"arrays {sorted(set(arrays) ^ set(expected_arrays))}")
    for name in sorted(set(arrays) & set(expected_arrays)):
        array, expected = arrays[name], expected_arrays[name]
        if (array["shape"], array["dtype"]) != (expected["shape"], expected["dtype"]) or (
                array.get("values") != expected.get("values")):
            found.append(f"{name}: {array}, recorded {expected}")
            continue
        if "sum" in expected:
            bound = TOLERANCE * max(expected["scale"], 1e-300)
            for key in ("sum", "weighted_sum", "scale"):
                if abs(array[key] - expected[key]) > bound:
                    found.append(f"{name} {key}: {array[key]!r}, recorded {expected[key]!r}")
    return found


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_seeded_commands_write_the_recorded_checkpoints(name, tmp_path):
    run = _train(tmp_path / "a", COMMANDS[name])
    recorded = json.loads(RECORDED.read_text(encoding="utf-8"))[name]
    for file in FILES:
        assert _differences(fingerprint(run / file), recorded[file]) == [], file


def test_the_comparison_sees_a_change_of_the_last_bits_it_allows_and_of_more(tmp_path):
    """The tolerance is not a blindfold: a one-step difference, a rounding-sized one and a changed
    counter are told apart."""
    run = _train(tmp_path / "a", COMMANDS["rnn-adagrad"])
    written = fingerprint(run / "latest.npz")
    assert _differences(written, fingerprint(run / "latest.npz")) == []
    assert _differences(fingerprint(run / "step_00000015.npz"), written) != []
    nudged = json.loads(json.dumps(written))
    entry = nudged["arrays"]["param.W_hy"]
    entry["sum"] += entry["scale"] * 1e-13  # rounding: allowed
    assert _differences(nudged, written) == []
    entry["sum"] += entry["scale"] * 1e-7  # not rounding
    recorded_sum = written["arrays"]["param.W_hy"]["sum"]
    assert _differences(nudged, written) == [f"param.W_hy sum: {entry['sum']!r}, recorded {recorded_sum!r}"]
    counted = json.loads(json.dumps(written))
    counted["meta"]["progress.validations_since_best"] += 1
    assert len(_differences(counted, written)) == 1


def record(folder: Path) -> None:
    """Train every command in ``folder`` and write their fingerprints to data/golden_float64.json."""
    recorded = {}
    for name, extra in sorted(COMMANDS.items()):
        run = _train(folder / name, extra)
        recorded[name] = {file: fingerprint(run / file) for file in FILES}
    RECORDED.write_text(json.dumps(recorded, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        record(Path(scratch))
    print(f"wrote {RECORDED}")
