"""A training run's checkpoint folder: resumes write beside their checkpoint, no run destroys another's
model, one run at a time, --overwrite leaves nothing of the previous run, unfinished writes are swept
up, and no non-finite model is ever written."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint, folder_files
from charrnn.model import optim
from charrnn.training import folder
from conftest import NUMPY_BACKEND, wait_until
from crafted_checkpoints import meta_json, read_checkpoint, replaced, with_meta
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
    common = [charrnn_executable, "train", str(small_corpus), *FAST, *NUMPY_BACKEND, "--checkpoint-dir", "run", "-q"]
    first = subprocess.Popen([*common, "--steps", "1000000"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
    try:
        wait_until((tmp_path / "run" / ".charrnn.lock").exists, "the first run's lock", first)
        second = subprocess.run([*common, "--steps", "3"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip().splitlines()[-1] == (
            f"Error: run is in use by another charrnn run (process {first.pid}); wait for it to finish or write "
            "elsewhere with --checkpoint-dir")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=120)
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


# --- the lock file (issue 19, item 2) ------------------------------------------------------------------


@pytest.mark.parametrize("link", ["symbolic", "hard"])
def test_a_lock_file_that_is_a_link_is_refused_and_its_target_left_alone(workdir, small_corpus, link):
    # ln -s ../v.txt run/.charrnn.lock made the run truncate v.txt and write its process id into it.
    os.mkdir("run")
    (workdir / "v.txt").write_text("precious\n")
    if link == "symbolic":
        os.symlink("../v.txt", "run/.charrnn.lock")
    else:
        os.link("v.txt", "run/.charrnn.lock")
    refused = invoke("train", small_corpus, *FAST, "--steps", "3", "--checkpoint-dir", "run")
    kind = "a symbolic link" if link == "symbolic" else "a file with other names (hard links)"
    assert_clean_error(refused, 2, f"cannot lock run: its lock file run/.charrnn.lock is {kind}, which charrnn never "
                                   "writes into")
    assert (workdir / "v.txt").read_text() == "precious\n"
    assert sorted(os.listdir("run")) == [".charrnn.lock"]


def test_a_lock_file_that_is_a_device_is_refused(workdir, small_corpus):
    os.mkdir("run")
    os.mkfifo("run/.charrnn.lock")  # a device needs root; a named pipe is refused by the same check
    refused = invoke("train", small_corpus, *FAST, "--steps", "3", "--checkpoint-dir", "run")
    assert_clean_error(refused, 2, "its lock file run/.charrnn.lock is a named pipe")


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_run_whose_lock_file_is_deleted_or_replaced_stops_before_its_next_save(workdir, small_corpus,
                                                                                  monkeypatch, how):
    # Deleting or replacing .charrnn.lock let a second run in, and both wrote the same model.
    real_save = folder_files.save
    saved, other = [], folder.FolderLock("run")

    def save_then_lose_the_lock(ckpt, directory):
        path = real_save(ckpt, directory)
        saved.append(ckpt.progress.step)
        if len(saved) == 1:
            lock_path = os.path.join(directory, folder.LOCK_NAME)
            if how == "deleted":
                os.unlink(lock_path)
            else:
                with open(lock_path + ".new", "w") as f:
                    f.write("12345\n")
                os.replace(lock_path + ".new", lock_path)
            other.acquire()  # a second run now takes the folder: nothing stops it
        return path

    monkeypatch.setattr(folder_files, "save", save_then_lose_the_lock)
    result = invoke("train", small_corpus, *FAST, "--steps", "6", "--checkpoint-every", "1", "--eval-every", "2",
                    "--patience", "0", "--checkpoint-dir", "run")
    assert_clean_error(result, 1, "the lock file run/.charrnn.lock was removed or replaced while this run held it, so "
                                  "another run may be writing to run; stopped without saving")
    assert saved == [1]  # the validation at step 2 wrote no best.npz, and no step 2 checkpoint followed
    assert sorted(os.listdir("run")) == [".charrnn.lock", "latest.npz", "step_00000001.npz"]
    assert checkpoint.load("run/latest.npz").progress.step == 1
    # The lock file now at the path is the other run's: the stopped run left it in place.
    other.release()
    assert sorted(os.listdir("run")) == ["latest.npz", "step_00000001.npz"]


def test_verify_passes_while_the_lock_is_in_place(tmp_path):
    lock = folder.FolderLock(str(tmp_path))
    lock.acquire()
    lock.verify()
    os.unlink(lock.path)
    with pytest.raises(Exception, match="was removed or replaced"):
        lock.verify()
    lock.release()
    assert os.listdir(tmp_path) == []


# --- crash windows around best.npz (issue 19, item 3) ------------------------------------------------


def _best_loss(path) -> float:
    return checkpoint.read_metadata(str(path)).progress.best_val_loss_nats


def _crashed_between_a_best_and_a_save(corpus, folder_name="run"):
    """The issue's repro: a run validated and wrote best.npz at step 20, and died before saving step 20."""
    _train(corpus, folder_name, "--steps", "20", "--checkpoint-every", "10", "--eval-every", "5", "--patience", "0")
    shutil.copy(f"{folder_name}/step_00000010.npz", f"{folder_name}/latest.npz")
    os.unlink(f"{folder_name}/step_00000020.npz")


def test_a_folder_resumes_from_a_best_npz_newer_than_latest(workdir, small_corpus):
    _crashed_between_a_best_and_a_save(small_corpus)
    best_step = checkpoint.read_metadata("run/best.npz").progress.step
    assert best_step > 10  # with this seed the best is at step 20, newer than latest.npz
    best_before = _best_loss("run/best.npz")
    # It said "holds a later checkpoint of this run (best.npz)", and --overwrite replaced the better best.
    resumed = invoke("train", "--resume", "run", "--steps", "30", "--eval-every", "5", "--patience", "0")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming run/best.npz at step {best_step}" in resumed.stderr
    assert checkpoint.load("run/latest.npz").progress.step == 30
    assert _best_loss("run/best.npz") <= best_before


def test_a_resume_from_an_earlier_file_keeps_a_later_better_best_of_its_run(workdir, small_corpus):
    _crashed_between_a_best_and_a_save(small_corpus)
    # Make best.npz better than anything the resumed run can reach: it must survive untouched.
    taken = read_checkpoint("run/best.npz")
    (workdir / "run" / "best.npz").write_bytes(
        with_meta(taken, meta_json(replaced(taken.meta, ("progress", "best_val_loss_nats"), 0.5))))
    best_bytes = (workdir / "run" / "best.npz").read_bytes()
    resumed = invoke("train", "--resume", "run/latest.npz", "--steps", "30", "--eval-every", "5", "--patience", "0",
                     "--json")
    assert resumed.exit_code == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert (document["best_step"], document["best_val_loss_nats"]) == (20, 0.5)
    assert (workdir / "run" / "best.npz").read_bytes() == best_bytes
    assert checkpoint.load("run/latest.npz").progress.step == 30
    # Resumed again, now from a step after best.npz's, whose own record of its best is worse: still kept.
    assert checkpoint.load("run/latest.npz").progress.best_val_loss_nats > 0.5
    again = invoke("train", "--resume", "run", "--steps", "40", "--eval-every", "5", "--patience", "0")
    assert again.exit_code == 0, again.stderr
    assert (workdir / "run" / "best.npz").read_bytes() == best_bytes


def test_a_later_best_of_the_run_is_replaced_by_a_better_one(workdir, small_corpus):
    _crashed_between_a_best_and_a_save(small_corpus)
    taken = read_checkpoint("run/best.npz")
    (workdir / "run" / "best.npz").write_bytes(
        with_meta(taken, meta_json(replaced(taken.meta, ("progress", "best_val_loss_nats"), 1000.0))))
    resumed = invoke("train", "--resume", "run/latest.npz", "--steps", "30", "--eval-every", "5", "--patience", "0")
    assert resumed.exit_code == 0, resumed.stderr
    assert _best_loss("run/best.npz") < 1000 and checkpoint.read_metadata("run/best.npz").progress.step > 10


def test_a_folder_holding_only_best_npz_resumes_and_a_fresh_run_is_told_how(workdir, small_corpus):
    # A crash before the first periodic save left only best.npz: "no checkpoint in run/", "--resume None".
    _train(small_corpus, "run", "--steps", "6", "--checkpoint-every", "100", "--eval-every", "3", "--patience", "0")
    for name in ("latest.npz", "step_00000006.npz"):
        os.unlink(f"run/{name}")
    refused = invoke("train", small_corpus, *FAST, "--steps", "3", "--checkpoint-dir", "run")
    assert_clean_error(refused, 2, "run already holds a checkpoint (run/best.npz); continue it with --resume run, ")
    assert "None" not in refused.stderr
    resumed = invoke("train", "--resume", "run", "--steps", "8", "--eval-every", "3")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming run/best.npz at step 6" in resumed.stderr
    assert checkpoint.load("run/latest.npz").progress.step == 8


def test_find_newest_takes_the_highest_step_of_latest_best_and_step_files(workdir, small_corpus):
    assert folder_files.find_newest("nothing") is None
    _train(small_corpus, "run", "--steps", "4", "--checkpoint-every", "2", "--eval-every", "0")
    assert folder_files.find_newest("run") == "run/latest.npz"  # latest and step_4 tie: latest
    shutil.copy("run/step_00000002.npz", "run/latest.npz")
    assert folder_files.find_newest("run") == "run/step_00000004.npz"
    shutil.copy("run/step_00000004.npz", "run/best.npz")
    os.unlink("run/step_00000004.npz")
    assert folder_files.find_newest("run") == "run/best.npz"
    (workdir / "run" / "best.npz").write_bytes(b"damaged")  # unreadable files are passed over
    assert folder_files.find_newest("run") == "run/latest.npz"
    os.unlink("run/latest.npz")
    os.mkfifo("run/latest.npz")  # never opened: a named pipe would block the read
    assert folder_files.find_newest("run") == "run/step_00000002.npz"


def test_a_resume_with_nothing_left_to_train_brings_latest_up_to_a_newer_best(workdir, small_corpus):
    # The run died after writing best.npz at its last step, before latest.npz: resuming it trains nothing,
    # but saves, so that latest.npz is again the newest checkpoint.
    _crashed_between_a_best_and_a_save(small_corpus)
    resumed = invoke("train", "--resume", "run", "--steps", "20")
    assert resumed.exit_code == 0, resumed.stderr
    assert "note: nothing to train: run/best.npz is at step 20 already" in resumed.stderr
    assert resumed.stderr.endswith("saved step 20 of run/best.npz as run/latest.npz, which was behind it\n")
    assert checkpoint.load("run/latest.npz").progress.step == 20 and (workdir / "run" / "step_00000020.npz").exists()
