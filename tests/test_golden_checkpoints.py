"""The same seeded command writes the same checkpoints, before and after a change that should not alter them.

The digests below were first recorded on 2026-11-30 with the code as it stood before the package was
reorganised (issue 12), and the reorganisation left them exactly as they were. They were recorded again
when checkpoints began to name the backend that wrote them (a new metadata field; every array and every
other field unchanged, checked by digesting without it), and must now change only with a change that
should change what training computes.
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
    "gru-2-layers-dropout-adam": {
        "best.npz": "435b5e98fcb3a2b02a2c7ed235c47ec16fb7ac2a4975732a51c3ced22ea01b2f",
        "latest.npz": "4d1aa19934fb64e244baa0895d9f688451cb1be9f0cd0ac8cb3349f20a0aed18",
        "step_00000015.npz": "0f9643ea0fb84d3253936c0a678c9e82efe8858b7805333cd5e93774922c1d10",
        "step_00000030.npz": "4d1aa19934fb64e244baa0895d9f688451cb1be9f0cd0ac8cb3349f20a0aed18",
    },
    "jieba-max-vocab": {
        "best.npz": "e58729c34461a2896ca22db0f952a728bb3dde782fd7e2148a99484ceb624eb7",
        "latest.npz": "e58729c34461a2896ca22db0f952a728bb3dde782fd7e2148a99484ceb624eb7",
        "step_00000015.npz": "90404a10b8d5054fc21becd3950cec21a5e048985518bedf2b73117580877b29",
        "step_00000030.npz": "e58729c34461a2896ca22db0f952a728bb3dde782fd7e2148a99484ceb624eb7",
    },
    "lstm-rmsprop-float64": {
        "best.npz": "b42c1df279596dad6cd1eac8959a13db9d8d1c1c619a25361b98662b0b65d4a8",
        "latest.npz": "b42c1df279596dad6cd1eac8959a13db9d8d1c1c619a25361b98662b0b65d4a8",
        "step_00000015.npz": "2b9798d14149e0e80fee4e538ed8ab99d1a1b6b8fc43d28f2df78768ff543b3f",
        "step_00000030.npz": "b42c1df279596dad6cd1eac8959a13db9d8d1c1c619a25361b98662b0b65d4a8",
    },
    "rnn-adagrad": {
        "best.npz": "9c7644c10f81b98db2c5f1f7390536d81a25ac05b8eecb85ca959011d5ce4c79",
        "latest.npz": "9c7644c10f81b98db2c5f1f7390536d81a25ac05b8eecb85ca959011d5ce4c79",
        "step_00000015.npz": "daf117c1efaa72dda73b14ed902721360854acc1f5db9e06631ed35e39157cfd",
        "step_00000030.npz": "9c7644c10f81b98db2c5f1f7390536d81a25ac05b8eecb85ca959011d5ce4c79",
    },
    "rnn-relu": {
        "best.npz": "1fee2f300b404b57cf29a0fc56be0d89a8a8c3464f465ee381e5cc75dab1ef17",
        "latest.npz": "1fee2f300b404b57cf29a0fc56be0d89a8a8c3464f465ee381e5cc75dab1ef17",
        "step_00000015.npz": "e365e13ceee2e651204ffa755692203a3d5bccb15b0e3638c1da970851faddb4",
        "step_00000030.npz": "1fee2f300b404b57cf29a0fc56be0d89a8a8c3464f465ee381e5cc75dab1ef17",
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
    result = invoke("train", corpus, *COMMON, *extra, "--checkpoint-dir", folder / "run", "--cache-dir", folder / "cache",
                    "--backend", "numpy")
    assert result.exit_code == 0, result.stderr
    return {path.name: digest(path) for path in sorted((folder / "run").iterdir())}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_seeded_commands_write_the_recorded_checkpoints(name, tmp_path):
    written = _train(tmp_path / "a", COMMANDS[name])
    assert written == _train(tmp_path / "b", COMMANDS[name])  # anywhere: a seeded run repeats itself
    if numeric_environment() != RECORDED_IN:
        pytest.skip(f"digests recorded in {RECORDED_IN}, this is {numeric_environment()}")
    assert written == DIGESTS[name]
