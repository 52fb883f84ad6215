"""kill -9 at any moment of a run that saves every step: every checkpoint that survives loads and resumes."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from charrnn.checkpoints import checkpoint, folder_files
from conftest import NUMPY_BACKEND, wait_until
from test_cli import FAST, invoke


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


# --- a death at every change of a validating, saving run (issue 19, item 3) ---------------------------

DIE_AT = Path(__file__).resolve().parent / "die_at_change.py"
# Validates every 2 steps (a new best.npz at most validations of a young model), saves every 3, keeps
# two step files (pruning), ends at 8: every kind of write of the save/best cycle, interleaved.
CYCLE = ["--eval-every", "2", "--checkpoint-every", "3", "--checkpoint-keep", "2", "--patience", "0", "--steps", "8",
         "--backend", "numpy", "-q"]


def _best_loss(folder: Path):
    best = folder / "best.npz"
    return checkpoint.read_metadata(str(best)).progress.best_val_loss_nats if best.exists() else None


def _dying_run(args: list, cwd: Path, die_at: int, when: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(DIE_AT), str(die_at), when, *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def list_changes(args: list, cwd: Path) -> list[str]:
    """The kinds of the changes to the file system (mkstemp, replace, unlink, ...) the command ``args``
    makes, in order, when nothing kills it."""
    run = _dying_run(args, cwd, 0, "never")
    assert run.returncode == 0, run.stderr
    return run.stderr.strip().splitlines()[-1].split()[1:]


def death_and_recovery(args: list, recovery: list, fresh: list, cwd: Path, folder: Path, die_at: int,
                       when: str) -> str:
    """Run ``args`` in a process that dies at change ``die_at`` (``when``: before or after it), then resume
    the folder in this process (``recovery``; ``fresh`` if no checkpoint was left): 'passed', or what
    went wrong."""
    died = _dying_run(args, cwd, die_at, when)
    if died.returncode != 137:
        return f"did not die (exit {died.returncode}): {died.stderr.strip()[-200:]}"
    best_at_death = _best_loss(folder)
    resumable = folder_files.find_newest(str(folder)) is not None
    again = invoke(*(recovery if resumable else fresh))
    if again.exit_code != 0:
        return f"the {'resume' if resumable else 'fresh run'} failed (exit {again.exit_code}): {again.stderr.strip()}"
    if checkpoint.load(str(folder / "latest.npz")).progress.step != 8:
        return "the resumed run did not reach its end"
    best = _best_loss(folder)
    if best is None or (best_at_death is not None and best > best_at_death):
        return f"best.npz got worse: {best_at_death} -> {best}"
    leftovers = [n for n in os.listdir(folder) if n.endswith(".tmp") or n == ".charrnn.lock"]
    if leftovers:
        return f"left {leftovers}"
    for path in folder.glob("*.npz"):
        checkpoint.load(str(path))
    return "passed"


def crash_cycle_cases(tmp_path: Path, corpus: Path, resumed: bool) -> tuple[list[str], Callable[[int, str], str]]:
    """(the kinds of its changes, a function running the death at one of them, numbered from 1, and the
    recovery) for a fresh run into an empty folder, or (``resumed``) a run resumed from a folder at step 2."""
    cache = tmp_path / "cache"
    prepared_cache = invoke("prepare", corpus, "--cache-dir", cache, "-q")  # the runs then change no cache file
    assert prepared_cache.exit_code == 0, prepared_cache.stderr
    start = tmp_path / "start"
    if resumed:
        first = invoke("train", corpus, *FAST, *CYCLE[:-5], "--steps", "2", "--checkpoint-dir", start, "--cache-dir",
                       cache, "--backend", "numpy", "-q")
        assert first.exit_code == 0, first.stderr
    trial = [0]

    def prepared() -> Path:
        trial[0] += 1
        cwd = tmp_path / f"trial{trial[0]}"
        cwd.mkdir()
        if resumed:
            shutil.copytree(start, cwd / "run")
        return cwd

    def commands(folder: Path) -> tuple[list, list, list]:
        fresh = ["train", corpus, *FAST, *CYCLE, "--cache-dir", cache, "--checkpoint-dir", folder]
        recovery = ["train", "--resume", folder, *CYCLE, "--cache-dir", cache]
        return (recovery if resumed else fresh), recovery, fresh

    cwd = prepared()
    changes = list_changes(commands(cwd / "run")[0], cwd)

    def case(die_at: int, when: str) -> str:
        cwd = prepared()
        return death_and_recovery(*commands(cwd / "run"), cwd, cwd / "run", die_at, when)

    return changes, case


def test_a_death_at_two_changes_of_the_save_best_cycle_still_resumes(tmp_path, small_corpus):
    changes, case = crash_cycle_cases(tmp_path, small_corpus, resumed=False)
    assert {"mkstemp", "replace", "unlink"} <= set(changes) and len(changes) >= 15
    # The slow catalogue dies at every one of them, in a fresh and a resumed run; here, two.
    for die_at, when in ((len(changes) // 2, "after"), (len(changes) - 2, "before")):
        assert case(die_at, when) == "passed", (die_at, when)
