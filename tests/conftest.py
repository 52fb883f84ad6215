"""Shared fixtures: a tiny corpus on disk, a working directory of its own, and numeric gradients.

Every test runs in a fresh current directory with no CHARRNN_* variables in its environment, so the
suite passes right after a user's quick start has filled the repository's checkpoints/ and data/.cache,
and whatever the user's shell exports.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Optional

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


class ChosenValidationLosses:
    """A stand-in for charrnn.inference.scoring.score_ids while training: the n-th validation since it
    was installed (across the runs that follow) scores ``losses[n]`` nats per token, and every later one
    ``then``, whatever the model, the processor or the backend. Losses like 3.25 (a few binary digits)
    survive the Score's total / count exactly."""

    def __init__(self, losses: list[float], then: float) -> None:
        self.losses, self.then, self.calls = list(losses), then, 0

    def __call__(self, params, config, ids, token_lengths, *args, **kwargs):
        from charrnn.inference.scoring import Score

        loss = self.losses[self.calls] if self.calls < len(self.losses) else self.then
        self.calls += 1
        scored = len(ids) - 1
        return Score(scored, scored, loss * scored)


@pytest.fixture
def validation_losses(monkeypatch: pytest.MonkeyPatch) -> Callable[..., ChosenValidationLosses]:
    """``validation_losses([4.0, 3.5], then=3.75)``: from now on, training's validations score these
    losses (see ChosenValidationLosses), so that best checkpoints, "new best" events and early stopping
    are the test's choice rather than the outcome of one machine's float32 rounding."""
    from charrnn.inference import scoring

    def choose(losses: list[float], then: float = 9.0) -> ChosenValidationLosses:
        chosen = ChosenValidationLosses(losses, then)
        monkeypatch.setattr(scoring, "score_ids", chosen)
        return chosen

    return choose


@pytest.fixture(scope="session")
def charrnn_executable() -> str:
    """The installed ``charrnn`` console script of the interpreter running the tests."""
    found = shutil.which("charrnn", path=os.path.dirname(sys.executable)) or shutil.which("charrnn")
    if found is None:
        pytest.fail("the charrnn command is not installed; install the project with pip first")
    return found


# For a real process whose kernels play no part in what a test checks (pipes, files, locks, names): it
# starts without loading numba and its cached kernels, a second and a half of CPU sooner.
NUMPY_BACKEND = ["--backend", "numpy"]


def sigint_at_default() -> None:
    """``preexec_fn`` for a child process that a test will send SIGINT: the signal at its default action.

    A shell starts background jobs (and some CI runners their steps) with SIGINT ignored; an ignored
    signal stays ignored in every child, across exec, and charrnn keeps an inherited ignore as Unix
    programs do. Without this, such a test would pass or fail with the way the suite was started.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wait_until(condition: Callable[[], bool], what: str, process: Optional[subprocess.Popen] = None,
               timeout: float = 120) -> None:
    """Poll ``condition`` until it holds; fail the test if ``process`` ends first or ``timeout`` s pass.

    The timeout is generous on purpose: it only bounds a failure, it is never what a test waits for.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the process ended (exit {process.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout} s")
        time.sleep(0.01)


class StderrLines:
    """The lines a child process writes on stderr (a text pipe), read by a thread as they come, so that
    the pipe never fills and a test can wait for a line (an event) instead of sleeping."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._ended = False
        self._reader = threading.Thread(target=self._read, name="stderr-lines", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stderr:
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], what: str, timeout: float = 120) -> str:
        """The first line for which ``predicate`` holds; fails the test if stderr ends first, or after
        ``timeout`` s (generous: a cold start compiles the numba kernels)."""
        deadline = time.monotonic() + timeout
        checked = 0
        with self._changed:
            while True:
                for line in self.lines[checked:]:
                    if predicate(line):
                        return line
                checked = len(self.lines)
                if self._ended:
                    pytest.fail(f"stderr ended (exit {self.process.wait()}) before {what}: {''.join(self.lines)}")
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    pytest.fail(f"no {what} within {timeout} s: {''.join(self.lines)}")
                self._changed.wait(remaining)

    def text(self) -> str:
        """Everything written so far (all of it, once the process has ended and closed stderr)."""
        if self.process.poll() is not None:
            self._reader.join(60)
        with self._changed:
            return "".join(self.lines)
