"""A training run's checkpoint folder: resumes write beside their checkpoint, no run destroys another's
model, one run at a time, --overwrite leaves nothing of the previous run, unfinished writes are swept
up, and no non-finite model is ever written."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint, folder_files
from charrnn.model import optim
from charrnn.training import folder
from test_cli import FAST, assert_clean_error, invoke


def _train(corpus, folder, *args):
    result = invoke("train", corpus, *FAST, "--checkpoint-dir", folder, *args)
    assert result.exit_code == 0, result.stderr
    return result


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_resume_writes_beside_its_checkpoint_not_into_the_default_folder(workdir, small_corpus):
    _train(small_corpus, "checkpoints", "--steps", "3")  # run A in the default folder
    _train(small_corpus, "runB", "--steps", "4", "--rng-seed", "9")
    before = _snapshot(workdir / "checkpoints")
    resumed = invoke("train", "--resume", "runB/latest.npz", "--steps", "6")
    assert resumed.exit_code == 0, resumed.stderr
    assert _snapshot(workdir / "checkpoints") == before
    assert checkpoint.load("runB/latest.npz").progress.step == 6
    assert (workdir / "runB" / "step_00000006.npz").exists()


def test_a_resume_into_a_folder_holding_another_model_is_refused_unless_overwrite(workdir, small_corpus):
    _train(small_corpus, "a", "--steps", "3")
    _train(small_corpus, "b", "--steps", "4", "--rng-seed", "9")
    a_before, b_before = _snapshot(workdir / "a"), _snapshot(workdir / "b")
    refused = invoke("train", "--resume", "b/latest.npz", "--steps", "6", "--checkpoint-dir", "a")
    assert_clean_error(refused, 2, "a holds another model (a/latest.npz); write elsewhere with --checkpoint-dir")
    assert _snapshot(workdir / "a") == a_before and _snapshot(workdir / "b") == b_before

    replaced = invoke("train", "--resume", "b/latest.npz", "--steps", "6", "--checkpoint-dir", "a", "--overwrite")
    assert replaced.exit_code == 0, replaced.stderr
    # Nothing of model A is left that could be taken for the resumed model's.
    assert sorted(os.listdir(workdir / "a")) == ["best.npz", "latest.npz", "step_00000006.npz"]
    b_id = checkpoint.load("b/latest.npz").run_id
    assert {checkpoint.load(str(p)).run_id for p in (workdir / "a").iterdir()} == {b_id}
    assert _snapshot(workdir / "b") == b_before


def test_resuming_an_earlier_step_would_roll_the_folder_back_and_is_refused(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "4", "--checkpoint-every", "2")
    before = _snapshot(workdir / "run")
    refused = invoke("train", "--resume", "run/step_00000002.npz", "--steps", "6")
    assert_clean_error(refused, 2, "run holds a later checkpoint of this run (run/latest.npz, step 4)")
    assert _snapshot(workdir / "run") == before
    # Resuming the folder's own latest state is the ordinary case.
    assert invoke("train", "--resume", "run/latest.npz", "--steps", "6").exit_code == 0
    assert checkpoint.load("run/latest.npz").progress.step == 6


def test_overwrite_leaves_no_file_of_the_previous_run(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "40", "--checkpoint-every", "10", "--eval-every", "10")
    assert (workdir / "run" / "best.npz").exists() and (workdir / "run" / "step_00000040.npz").exists()
    _train(small_corpus, "run", "--steps", "20", "--checkpoint-every", "10", "--val-fraction", "0",
           "--rng-seed", "8", "--overwrite")
    # No validation in the new run, so no best.npz; the old run's step 30 and 40 files are gone.
    assert sorted(os.listdir(workdir / "run")) == ["latest.npz", "step_00000010.npz", "step_00000020.npz"]
    assert checkpoint.load("run/step_00000010.npz").train_config.rng_seed == 8


def test_checkpoint_keep_with_overwrite_keeps_the_new_runs_files(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "40", "--checkpoint-every", "10")
    _train(small_corpus, "run", "--steps", "20", "--checkpoint-every", "10", "--checkpoint-keep", "1",
           "--rng-seed", "8", "--overwrite")
    assert sorted(os.listdir(workdir / "run")) == ["best.npz", "latest.npz", "step_00000020.npz"]


def test_a_fresh_run_refused_by_an_occupied_folder_is_told_how_to_continue_it(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "3")
    refused = invoke("train", small_corpus, *FAST, "--steps", "3", "--checkpoint-dir", "run")
    assert_clean_error(refused, 2, "run already holds a checkpoint (run/latest.npz); continue it with --resume "
                                   "run, write elsewhere with --checkpoint-dir, or replace it with --overwrite")
    # The advice works: the resume goes to that folder.
    assert invoke("train", "--resume", "run", "--steps", "5").exit_code == 0
    assert checkpoint.load("run/latest.npz").progress.step == 5 and not (workdir / "checkpoints").exists()


def test_a_second_run_on_a_locked_folder_is_refused_with_the_holders_pid(workdir, small_corpus):
    os.mkdir("run")
    lock = folder.FolderLock("run")
    lock.acquire()
    try:
        refused = invoke("train", small_corpus, *FAST, "--steps", "3", "--checkpoint-dir", "run")
        assert_clean_error(refused, 2, f"run is in use by another charrnn run (process {os.getpid()})")
    finally:
        lock.release()
    assert os.listdir("run") == []
    _train(small_corpus, "run", "--steps", "3")  # released: the folder is free again, with no lock file left
    assert ".charrnn.lock" not in os.listdir("run")


def test_a_run_that_fails_before_training_leaves_no_folder_behind(workdir, tmp_path):
    missing = tmp_path / "missing.txt"
    assert invoke("train", missing, *FAST, "--steps", "3", "--checkpoint-dir", "new").exit_code == 2
    assert not (workdir / "new").exists()


def test_two_real_runs_on_one_folder_and_a_killed_holder(charrnn_executable, tmp_path, small_corpus):
    common = [charrnn_executable, "train", str(small_corpus), *FAST, "--checkpoint-dir", "run", "-q"]
    first = subprocess.Popen([*common, "--steps", "1000000"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run" / ".charrnn.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        second = subprocess.run([*common, "--steps", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"Error: run is in use by another charrnn run (process {first.pid}); wait for it to finish or write "
            "elsewhere with --checkpoint-dir")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    # kill -9 leaves the lock file but no lock: the next run takes the folder over at once.
    third = subprocess.run([*common, "--steps", "3", "--overwrite"], cwd=tmp_path, capture_output=True, text=True,
                           timeout=120)
    assert third.returncode == 0, third.stderr
    assert checkpoint.load(str(tmp_path / "run" / "latest.npz")).progress.step == 3


def test_unfinished_writes_of_a_dead_process_are_removed_at_start(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "3")
    leftovers = [".latest.npz.k2j4h1.tmp", ".step_00000003.npz.a8f0q.tmp", ".best.npz.zz1.tmp"]
    for name in leftovers:
        (workdir / "run" / name).write_bytes(b"PK half a checkpoint")
    (workdir / "run" / ".notes.tmp").write_text("someone else's file")
    resumed = invoke("train", "--resume", "run/latest.npz", "--steps", "4")
    assert resumed.exit_code == 0, resumed.stderr
    assert "note: removed 3 unfinished checkpoint write(s) left by a process that died" in resumed.stderr
    assert sorted(os.listdir(workdir / "run")) == [
        ".notes.tmp", "best.npz", "latest.npz", "step_00000003.npz", "step_00000004.npz"]


def test_weights_that_stop_being_finite_are_never_saved(workdir, small_corpus, monkeypatch):
    _train(small_corpus, "run", "--steps", "3")
    before = _snapshot(workdir / "run")
    real_adagrad = optim._adagrad

    def poisoned(param, grad, sum_sq, lr):  # an update gone wrong: the loss of this step was finite
        real_adagrad(param, grad, sum_sq, lr)
        param[...] = np.nan

    monkeypatch.setattr(optim, "_adagrad", poisoned)
    result = invoke("train", "--resume", "run/latest.npz", "--steps", "4", "--val-fraction", "0.05", "--backend", "numpy")
    assert_clean_error(result, 1, "is not finite (NaN) at step 4: training diverged; nothing was saved over the last "
                                  "checkpoint")
    assert _snapshot(workdir / "run") == before


def test_save_refuses_a_checkpoint_with_a_non_finite_array_and_writes_nothing(tmp_path):
    from test_checkpoint import _checkpoint

    ckpt = _checkpoint()
    ckpt.optimizer_state[next(iter(ckpt.optimizer_state))][0] = np.inf
    with pytest.raises(Exception, match=r"optimizer state sum_sq.W_xh is not finite \(infinity\)"):
        folder_files.save(ckpt, str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_an_exploding_loss_stops_with_exit_1_and_keeps_the_last_checkpoint(workdir, small_corpus):
    _train(small_corpus, "run", "--steps", "3")
    before = _snapshot(workdir / "run")
    result = invoke("train", "--resume", "run/latest.npz", "--steps", "400", "--learning-rate", "1e6",
                    "--checkpoint-every", "0", "--eval-every", "0")
    assert_clean_error(result, 1, "training diverged: the smoothed loss is")
    assert "try a lower --learning-rate" in result.stderr
    assert _snapshot(workdir / "run") == before


def test_a_crash_between_the_two_writes_of_a_save_leaves_latest_the_newest(workdir, small_corpus, monkeypatch):
    _train(small_corpus, "run", "--steps", "2", "--checkpoint-every", "1")
    real_write = checkpoint.atomic_write

    class Died(BaseException):
        """The process dies here, as under kill -9 (nothing of charrnn's may catch it)."""

    def dies_before_the_step_file(path, data):
        if os.path.basename(path).startswith("step_"):
            raise Died
        real_write(path, data)

    with monkeypatch.context() as patch, pytest.raises(Died):
        patch.setattr(checkpoint, "atomic_write", dies_before_the_step_file)
        invoke("train", "--resume", "run/latest.npz", "--steps", "3", "--checkpoint-every", "1", "--eval-every", "0")
    assert checkpoint.load("run/latest.npz").progress.step == 3 and not (workdir / "run" / "step_00000003.npz").exists()
    resumed = invoke("train", "--resume", "run/latest.npz", "--steps", "4")
    assert resumed.exit_code == 0, resumed.stderr
