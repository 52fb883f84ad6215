"""The same seeded command writes the same checkpoints, before and after a change that should not alter them.

The digests were first recorded on 2026-11-30 with the code as it stood before the package was
reorganised (issue 12); restructuring, renaming and deduplicating must leave them exactly as they are.
History of legitimate changes:
- checkpoint format 3 (model.embed_size, issue 14): the metadata's format_version and embed_size (0)
  changed; every array stayed identical to the previous code's, byte for byte (compared directly).
- early stopping (issue 14): the progress records best_val_step and validations_since_best; arrays
  identical again.
- the train settings record adagrad_initial_accumulator (0, as before); arrays identical again.
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

# The defaults of embedding size and learning rate changed after the recording (issue 14); the commands
# name the earlier ones, so they still train (and must still write) exactly what was recorded.
COMMON = ["--embed-size", "none", "--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--rng-seed", "3", "--sample-every", "0",
          "--steps", "30", "--checkpoint-every", "15", "--eval-every", "10", "-q"]
COMMANDS = {
    "rnn-adagrad": ["--learning-rate", "0.1"],
    "rnn-relu": ["--activation", "relu", "--learning-rate", "0.1"],
    "gru-2-layers-dropout-adam": ["--cell", "gru", "--num-layers", "2", "--dropout", "0.3", "--optimizer", "adam",
                                  "--learning-rate", "0.01"],
    "lstm-rmsprop-float64": ["--cell", "lstm", "--optimizer", "rmsprop", "--learning-rate", "0.01", "--dtype", "float64"],
    "jieba-max-vocab": ["--tokenizer", "jieba", "--max-vocab", "200", "--learning-rate", "0.1"],
}
RECORDED_IN = {
    "numpy": "2.4.6", "blas": "scipy-openblas 0.3.31.188.0", "avx512f": True, "OPENBLAS_CORETYPE": None,
}
DIGESTS = {
    "rnn-adagrad": {
        "best.npz": "f83462328fce05b99bf9f289372019c77eed1c8f57f8ca95fe99f5175d97f28e",
        "latest.npz": "f83462328fce05b99bf9f289372019c77eed1c8f57f8ca95fe99f5175d97f28e",
        "step_00000015.npz": "a8b338759ca7f5a7d8657e89f2f56120a2b17573b1151d724e68113c1bb4555c",
        "step_00000030.npz": "f83462328fce05b99bf9f289372019c77eed1c8f57f8ca95fe99f5175d97f28e",
    },
    "rnn-relu": {
        "best.npz": "7d27913c3bb9e51a08cccf53939da5f0a08007cd1eceffbe5a3d1d1928102074",
        "latest.npz": "7d27913c3bb9e51a08cccf53939da5f0a08007cd1eceffbe5a3d1d1928102074",
        "step_00000015.npz": "83e3c05512154c20dcc1449c0ccbfe271ef061acc9ba3053e6ea7dfbc1452375",
        "step_00000030.npz": "7d27913c3bb9e51a08cccf53939da5f0a08007cd1eceffbe5a3d1d1928102074",
    },
    "gru-2-layers-dropout-adam": {
        "best.npz": "d6c0bd78644ddc776f194863569791fb4d5069657df890bc114c8f507e3b0002",
        "latest.npz": "e4032556af8892a90760139dd97e419fe19ae0ac6a0d931f75f90760cf12f3b3",
        "step_00000015.npz": "3b6d710af9b67f31e83bfed132ca1f17692f86b682c1a1ab2fde96b268440d08",
        "step_00000030.npz": "e4032556af8892a90760139dd97e419fe19ae0ac6a0d931f75f90760cf12f3b3",
    },
    "lstm-rmsprop-float64": {
        "best.npz": "5e98725e6899de8334a58f74430c10a790d0d829f1a8ae1f81ddacbf544d2b10",
        "latest.npz": "5e98725e6899de8334a58f74430c10a790d0d829f1a8ae1f81ddacbf544d2b10",
        "step_00000015.npz": "ffff8e6dcf35396e3d232c430ee58dc0bb7c572f2db6dc39ecc7edbb454c1cef",
        "step_00000030.npz": "5e98725e6899de8334a58f74430c10a790d0d829f1a8ae1f81ddacbf544d2b10",
    },
    "jieba-max-vocab": {
        "best.npz": "2e945bc746dba253f31a73a0c8af3bd8412a718c6754129bf4a60aeed812c34e",
        "latest.npz": "2e945bc746dba253f31a73a0c8af3bd8412a718c6754129bf4a60aeed812c34e",
        "step_00000015.npz": "f65c70b716b44e2ce7533859c3e2b12e20a41fe5f132e795d0ccbdbd429104f6",
        "step_00000030.npz": "2e945bc746dba253f31a73a0c8af3bd8412a718c6754129bf4a60aeed812c34e",
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
