"""Shared fixtures: a tiny corpus on disk, a working directory of its own, and numeric gradients.

Every test runs in a fresh current directory with no CHARRNN_* variables in its environment, so the
suite passes right after a user's quick start has filled the repository's checkpoints/ and data/.cache,
and whatever the user's shell exports.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
TANG300 = REPO / "data" / "tang300.txt"


def numeric_gradient(f: Callable[[], float], array: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Centered finite differences of scalar ``f()`` with respect to every element of ``array``."""
    grad = np.zeros_like(array)
    it = np.nditer(array, flags=["multi_index"])
    for _ in it:
        index = it.multi_index
        original = array[index]
        array[index] = original + eps
        plus = f()
        array[index] = original - eps
        minus = f()
        array[index] = original
        grad[index] = (plus - minus) / (2 * eps)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """‖a − n‖ / (‖a‖ + ‖n‖), the usual scale-free measure for gradient checks."""
    denominator = np.linalg.norm(analytic) + np.linalg.norm(numeric)
    return float(np.linalg.norm(analytic - numeric) / denominator) if denominator else 0.0


@pytest.fixture(autouse=True)
def hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test in an empty folder of its own, with charrnn's environment variables unset."""
    folder = tmp_path_factory.mktemp("cwd")
    monkeypatch.chdir(folder)
    for name in [n for n in os.environ if n.upper().startswith(("CHARRNN_", "_CHARRNN_"))]:
        monkeypatch.delenv(name)
    return folder


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh current directory, so the default checkpoints/ folder lands in tmp_path."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    """The first 3,000 characters of the bundled Tang poems, as UTF-8."""
    path = tmp_path / "poems.txt"
    path.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def charrnn_executable() -> str:
    """The installed ``charrnn`` console script of the interpreter running the tests."""
    found = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or shutil.which("charrnn")
    if found is None:
        pytest.fail("the charrnn command is not installed; install the project with pip first")
    return found
