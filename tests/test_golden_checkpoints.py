"""The same seeded command writes the same checkpoints, before and after a change that should not alter them.

The digests were first recorded on 2026-11-30 with the code as it stood before the package was
reorganised (issue 12); restructuring, renaming and deduplicating must leave them exactly as they are.
History of legitimate changes:
- checkpoint format 3 (model.embed_size, issue 14): the metadata's format_version and embed_size (0)
  changed; every array stayed identical to the previous code's, byte for byte (compared directly).
A digest covers every array byte for byte and the metadata (without the corpus's file names, which
depend on the folder the test runs in). Floating-point results depend on numpy's version, its BLAS and
the BLAS kernels the processor gets, so the digests are compared only in the numeric environment they
were recorded in; elsewhere a seeded run must still repeat itself exactly.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import TANG300
from test_cli import invoke

COMMON = ["--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--rng-seed", "3", "--sample-every", "0",
          "--steps", "30", "--checkpoint-every", "15", "--eval-every", "10", "-q"]
COMMANDS = {
    "rnn-adagrad": [],
    "rnn-relu": ["--activation", "relu"],
    "gru-2-layers-dropout-adam": ["--cell", "gru", "--num-layers", "2", "--dropout", "0.3", "--optimizer", "adam",
                                  "--learning-rate", "0.01"],
    "lstm-rmsprop-float64": ["--cell", "lstm", "--optimizer", "rmsprop", "--learning-rate", "0.01", "--dtype", "float64"],
    "jieba-max-vocab": ["--tokenizer", "jieba", "--max-vocab", "200"],
}
RECORDED_IN = {
    "numpy": "2.4.6", "blas": "scipy-openblas 0.3.31.188.0", "avx512f": True, "OPENBLAS_CORETYPE": None,
}
DIGESTS = {
    "rnn-adagrad": {
        "best.npz": "b40eb018a633dd99d5d93725c59cbffdfb6151b2ab1ebb1a80a25c58d3cdc3f6",
        "latest.npz": "b40eb018a633dd99d5d93725c59cbffdfb6151b2ab1ebb1a80a25c58d3cdc3f6",
        "step_00000015.npz": "23b4d819f92b16c090d5b60034f7ea0b77bea3bb360cf2fe571d00b3c5e470a0",
        "step_00000030.npz": "b40eb018a633dd99d5d93725c59cbffdfb6151b2ab1ebb1a80a25c58d3cdc3f6",
    },
    "rnn-relu": {
        "best.npz": "cd1df9248b8fa4f398a5976c63221d58cea02310c02cc83c414cd3c075d74ed3",
        "latest.npz": "cd1df9248b8fa4f398a5976c63221d58cea02310c02cc83c414cd3c075d74ed3",
        "step_00000015.npz": "8bfb2ee927965d271caec17d2f797a1af0e79acefcdaa58f5be24551bc2d1131",
        "step_00000030.npz": "cd1df9248b8fa4f398a5976c63221d58cea02310c02cc83c414cd3c075d74ed3",
    },
    "gru-2-layers-dropout-adam": {
        "best.npz": "ca3c3aa5246cb259b3db54194efd040d27708de136aa0edfd68a4f86b49972b3",
        "latest.npz": "564f00f5b55d3efd844a8145d9e31a642212b05cea13c3b9aa1a0750cea13b78",
        "step_00000015.npz": "d6f66d8d9a703f1b1a4a7425a4a64cf6a52b32ec7d89973c06741e0fcab2cb5a",
        "step_00000030.npz": "564f00f5b55d3efd844a8145d9e31a642212b05cea13c3b9aa1a0750cea13b78",
    },
    "lstm-rmsprop-float64": {
        "best.npz": "6d5f9b023bdfdb6c564a6361022a096c0584f98111b694f2c58f5f32a0bd3d50",
        "latest.npz": "6d5f9b023bdfdb6c564a6361022a096c0584f98111b694f2c58f5f32a0bd3d50",
        "step_00000015.npz": "2c34b378ced1195ad43d12c22d682328465cacc07df56f727581ee5537d9652b",
        "step_00000030.npz": "6d5f9b023bdfdb6c564a6361022a096c0584f98111b694f2c58f5f32a0bd3d50",
    },
    "jieba-max-vocab": {
        "best.npz": "99e189c141bf847b2a9c31808638cb1cbcb40f9f4f155d98e9327403dfc04458",
        "latest.npz": "99e189c141bf847b2a9c31808638cb1cbcb40f9f4f155d98e9327403dfc04458",
        "step_00000015.npz": "e371e526272457bedb9ee3ffc72aaa2a185057d23cf49fab60d6fe0aad0664c1",
        "step_00000030.npz": "99e189c141bf847b2a9c31808638cb1cbcb40f9f4f155d98e9327403dfc04458",
    },
}


def numeric_environment() -> dict:
    """What decides the floating-point rounding of a run: numpy, its BLAS, and the processor's kernels."""
    blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
    features = np._core._multiarray_umath.__cpu_features__
    return {
        "numpy": np.__version__, "blas": f"{blas.get('name')} {blas.get('version')}",
        "avx512f": bool(features.get("AVX512F")), "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE"),
    }


def digest(path: Path) -> str:
    """sha256 of a checkpoint's arrays and metadata, without the corpus's file names."""
    hashed = hashlib.sha256()
    with np.load(path, allow_pickle=False) as archive:
        meta = json.loads(archive["meta"].tobytes())
        meta["corpus"]["paths"] = meta["corpus"]["val_paths"] = []
        hashed.update(json.dumps(meta, sort_keys=True, ensure_ascii=False).encode())
        for name in sorted(archive.files):
            if name != "meta":
                array = archive[name]
                hashed.update(f"{name} {array.dtype.str} {array.shape}".encode())
                hashed.update(array.tobytes())
    return hashed.hexdigest()


def _train(folder: Path, extra: list) -> dict[str, str]:
    folder.mkdir()
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    result = invoke("train", corpus, *COMMON, *extra, "--checkpoint-dir", folder / "run", "--cache-dir", folder / "cache")
    assert result.exit_code == 0, result.stderr
    return {path.name: digest(path) for path in sorted((folder / "run").iterdir())}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_seeded_commands_write_the_recorded_checkpoints(name, tmp_path):
    written = _train(tmp_path / "a", COMMANDS[name])
    assert written == _train(tmp_path / "b", COMMANDS[name])  # anywhere: a seeded run repeats itself
    if numeric_environment() != RECORDED_IN:
        pytest.skip(f"digests recorded in {RECORDED_IN}, this is {numeric_environment()}")
    assert written == DIGESTS[name]
