"""kill -9 at any moment of a run that saves every step: every checkpoint that survives loads and resumes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from charrnn.checkpoints import checkpoint
from conftest import NUMPY_BACKEND, wait_until
from test_cli import FAST


def _kill_during_saves(charrnn_executable: str, tmp_path: Path, corpus: Path, trials: int, seed: int) -> list[str]:
    """Run ``trials`` trainings that save every step, each killed with SIGKILL at a random moment after its
    first save; return every checkpoint file left behind (all of them are checked by the callers)."""
    chooser = random.Random(seed)
    left = []
    for trial in range(trials):
        folder = tmp_path / f"run{trial}"
        with open(tmp_path / f"run{trial}.stderr", "w+") as stderr:
            process = subprocess.Popen(
                [charrnn_executable, "train", str(corpus), *FAST, *NUMPY_BACKEND, "--steps", "100000",
                 "--checkpoint-every", "1",
                 "--checkpoint-dir", str(folder), "-q"],
                stdout=subprocess.DEVNULL, stderr=stderr,
            )
            try:
                wait_until((folder / "latest.npz").exists, "the first save", process)
                time.sleep(chooser.uniform(0.0, 0.3))  # any moment will do: not a bet on speed
            finally:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=120)
        left += [str(folder / name) for name in os.listdir(folder) if name.endswith(".npz")]
    return left


def _check_survivors(charrnn_executable: str, tmp_path: Path, paths: list[str]) -> None:
    assert paths
    for path in paths:
        checkpoint.load(path)  # raises on a damaged file
    # The folder each killed run left behind resumes: its stale temporary files are swept, the lock is free.
    for folder in sorted({os.path.dirname(p) for p in paths}):
        step = checkpoint.load(os.path.join(folder, "latest.npz")).progress.step
        resumed = subprocess.run(
            [charrnn_executable, "train", "--resume", os.path.join(folder, "latest.npz"), "--steps", str(step + 2),
             *NUMPY_BACKEND,
             "-q"], capture_output=True, text=True, timeout=120,
        )
        assert resumed.returncode == 0, resumed.stderr
        assert not [n for n in os.listdir(folder) if n.endswith(".tmp") or n == ".charrnn.lock"]


def test_kill_9_during_saves_leaves_only_loadable_checkpoints(charrnn_executable, tmp_path, small_corpus):
    survivors = _kill_during_saves(charrnn_executable, tmp_path, small_corpus, trials=2, seed=1)
    _check_survivors(charrnn_executable, tmp_path, survivors)


@pytest.mark.slow
def test_kill_9_during_saves_thirty_times(charrnn_executable, tmp_path, small_corpus):
    survivors = _kill_during_saves(charrnn_executable, tmp_path, small_corpus, trials=30, seed=2)
    _check_survivors(charrnn_executable, tmp_path, survivors)
