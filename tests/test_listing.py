"""Checkpoint housekeeping: charrnn ls lists a folder's checkpoints; charrnn export writes a sampling-only
checkpoint that sample, eval and info read and train --resume refuses."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from test_cli import FAST, assert_clean_error, invoke, invoke_ok


@pytest.fixture
def run(workdir, small_corpus):
    """checkpoints/poems/ after 30 steps saved every 10, with best.npz made that of step 10 (whatever the
    validation said), so that best, latest and a step file are three different checkpoints."""
    result = invoke("train", small_corpus, "--steps", "30", *FAST, "--checkpoint-every", "10", "--eval-every", "10",
                    "-q")
    assert result.exit_code == 0, result.stderr
    folder = workdir / "checkpoints" / "poems"
    (folder / "best.npz").write_bytes((folder / "step_00000010.npz").read_bytes())
    return folder


def test_ls_lists_steps_losses_sizes_and_which_is_best_and_latest(run):
    latest = checkpoint.read_metadata(str(run / "latest.npz")).progress
    result = invoke("ls", run)
    assert result.exit_code == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["file", "step", "tokens", "train", "loss", "val", "loss", "size"]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["step_00000010.npz", "best.npz", "step_00000020.npz", "step_00000030.npz", "latest.npz"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["latest.npz"].split()[1:6] == [
        "30", "1,200", f"{latest.smoothed_loss_nats:.4f}", f"{latest.val_loss_nats:.4f}",
        f"{(run / 'latest.npz').stat().st_size / 1e3:.1f}",
    ]
    assert rows["latest.npz"].endswith("kB  latest: where training resumes")
    assert rows["best.npz"].endswith("best: lowest validation loss")
    assert rows["step_00000030.npz"].endswith("= latest.npz")
    assert rows["step_00000010.npz"].endswith("= best.npz")
    assert rows["step_00000020.npz"].endswith("kB")
    document = json.loads(invoke_ok("ls", "checkpoints/poems", "--json").stdout)
    assert document["best"] == os.path.join("checkpoints", "poems", "best.npz")
    assert document["latest"] == os.path.join("checkpoints", "poems", "latest.npz")
    by_file = {entry["file"]: entry for entry in document["checkpoints"]}
    assert by_file["latest.npz"]["step"] == 30 and by_file["latest.npz"]["tokens_seen"] == 1200
    assert by_file["latest.npz"]["size_bytes"] == (run / "latest.npz").stat().st_size
    assert by_file["latest.npz"]["val_loss_nats"] == latest.val_loss_nats and by_file["latest.npz"]["val_step"] == 30
    assert by_file["step_00000030.npz"]["same_as"] == ["latest.npz"]
    assert by_file["step_00000020.npz"]["contents"] == "training" and by_file["step_00000020.npz"]["problem"] is None
    assert by_file["step_00000020.npz"]["same_as"] == [] and by_file["best.npz"]["step"] == 10


def test_ls_of_other_folders(run, tmp_path):
    (run / "notes.npz").write_bytes(b"not a zip")
    (run / ".latest.npz.123@abc.x.tmp").write_bytes(b"")  # an unfinished write: not listed
    last = invoke_ok("ls", run).stdout.splitlines()[-1]
    assert last.split()[:6] == ["notes.npz", "—", "—", "—", "—", "9"]
    assert last.endswith("unreadable: is not a charrnn checkpoint (not an .npz archive; truncated or the wrong file?)")
    (tmp_path / "empty").mkdir()
    empty = invoke("ls", tmp_path / "empty")
    assert empty.exit_code == 0 and empty.stdout == "" and empty.stderr == f"no checkpoints in {tmp_path / 'empty'}\n"
    assert json.loads(invoke_ok("ls", tmp_path / "empty", "--json").stdout)["checkpoints"] == []
    assert_clean_error(invoke("ls", tmp_path / "missing"), 2, f"{tmp_path / 'missing'} does not exist")


def test_ls_leaves_out_files_that_a_pruning_training_removes_while_it_reads(run, monkeypatch):
    """A training with --checkpoint-keep removes step files at any moment; ls must neither fail on one
    that vanished after it was named (its size taken too late) nor call one removed while its
    metadata was read unreadable: a file that is gone is simply not listed."""
    from charrnn.checkpoints import listing

    read_metadata, isfile = checkpoint.read_metadata, os.path.isfile

    def removed_while_read(path):
        if path.endswith("step_00000010.npz"):
            os.unlink(path)
        return read_metadata(path)

    def removed_after_the_check(path):
        found = isfile(path)
        if str(path).endswith("step_00000020.npz"):
            os.unlink(path)
        return found

    monkeypatch.setattr(listing.checkpoint, "read_metadata", removed_while_read)
    monkeypatch.setattr(listing.os.path, "isfile", removed_after_the_check)
    result = invoke("ls", "checkpoints/poems")
    monkeypatch.undo()
    assert result.exit_code == 0, result.stderr
    names = [line.split()[0] for line in result.stdout.splitlines()[1:]]
    assert names == ["best.npz", "step_00000030.npz", "latest.npz"]
    assert "unreadable" not in result.stdout


def test_export_writes_a_sampling_only_checkpoint_that_the_readers_take(run, small_corpus):
    result = invoke("export", "-o", "model.npz", "--json")
    assert result.exit_code == 0, result.stderr
    best = os.path.join("checkpoints", "poems", "best.npz")
    document = json.loads(result.stdout)
    size, full = os.path.getsize("model.npz"), (run / "best.npz").stat().st_size
    assert document == {"checkpoint": best, "output": "model.npz", "step": document["step"], "size_bytes": size,
                        "checkpoint_size_bytes": full, "direction": "left-to-right"}
    assert result.stderr == (f"using {best}\nwrote model.npz: the model of {best} at step {document['step']}, "
                             f"{size:,} bytes ({full:,} with the optimizer and stream state)\n")
    assert size < 0.6 * full  # Adagrad's accumulators and the streams' state are gone
    exported, original = checkpoint.load("model.npz"), checkpoint.load(best)
    assert exported.contents == "model" and exported.optimizer_state == {} and exported.hidden == {}
    for name, value in original.params.items():
        assert np.array_equal(exported.params[name], value)
    assert (exported.tokenizer, exported.progress, exported.run_id) == (original.tokenizer, original.progress,
                                                                        original.run_id)
    # sample, eval and info read it as they read the original.
    args = ["--seed", "月", "--length", "20", "--rng-seed", "3", "-q"]
    assert invoke_ok("sample", "-c", "model.npz", *args).stdout == invoke_ok("sample", "-c", best, *args).stdout
    assert invoke_ok("eval", "model.npz", small_corpus).stdout == invoke_ok("eval", best, small_corpus).stdout
    facts = json.loads(invoke_ok("info", "model.npz", "--json").stdout)
    assert facts["contents"] == "model"
    assert json.loads(invoke_ok("info", best, "--json").stdout)["contents"] == "training"
    assert "contents: the model only, for sampling and scoring (exported; cannot be resumed)" in invoke_ok(
        "info", "model.npz").stdout
    # Resuming it is refused with one line, and nothing is written anywhere.
    before = sorted(os.listdir("."))
    refused = invoke("train", "--resume", "model.npz", "--steps", "40")
    assert_clean_error(refused, 2, "model.npz is a sampling-only checkpoint (charrnn export: no optimizer or stream "
                                   "state), so training cannot continue from it; resume the checkpoint it was "
                                   "exported from")
    assert sorted(os.listdir(".")) == before


def test_export_never_replaces_a_file_unasked(run):
    assert invoke("export", "checkpoints/poems/latest.npz", "-o", "m.npz", "-q").exit_code == 0
    first = open("m.npz", "rb").read()
    assert_clean_error(invoke("export", "-c", "checkpoints/poems/best.npz", "-o", "m.npz"), 2,
                       "-o m.npz exists; give another name, or --overwrite to replace it")
    assert open("m.npz", "rb").read() == first
    assert invoke("export", "checkpoints/poems/best.npz", "-o", "m.npz", "--overwrite", "-q").exit_code == 0
    same = invoke("export", "checkpoints/poems/latest.npz", "-o", "checkpoints/poems/latest.npz", "--overwrite")
    assert_clean_error(same, 2, "-o checkpoints/poems/latest.npz is the checkpoint being exported; give another name")
    assert checkpoint.load("checkpoints/poems/latest.npz").resumable
    assert_clean_error(invoke("export", "-o", "checkpoints"), 2, "-o checkpoints is a folder")
    assert_clean_error(invoke("export", "-o", "no/such/m.npz"), 2, "the folder no/such does not exist")


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs /proc and /sys: folders nobody may write in")
def test_export_to_a_place_it_cannot_write_is_refused_before_any_work(run):
    """-o '' or a folder that refuses new files (found by trying: root passes every permission check,
    and still may not create files in /proc or /sys) is bad usage, exit 2, naming -o: as train does."""
    assert_clean_error(invoke("export", "-o", ""), 2, "-o is empty; give the name of the file to write", )
    assert_clean_error(invoke("export", "-o", "/proc/model.npz"), 2,
                       "cannot write -o /proc/model.npz: No such file or directory (the folder /proc); give another path")
    if os.path.isdir("/sys/kernel"):
        assert_clean_error(invoke("export", "-o", "/sys/kernel/model.npz"), 2, "cannot write -o /sys/kernel/model.npz: ")
    if os.geteuid() != 0:
        locked = run.parent / "locked"
        locked.mkdir(mode=0o555)
        assert_clean_error(invoke("export", "-o", locked / "m.npz"), 2, f"cannot write -o {locked / 'm.npz'}: "
                                                                        "Permission denied")


def test_export_removes_the_unfinished_writes_of_exports_that_were_killed(run):
    from charrnn import files

    finished = subprocess.Popen(["true"])
    finished.wait()  # a process number that no longer runs
    share = run.parent / "share"
    share.mkdir()
    orphan = share / f".m.npz.{finished.pid}@{files._HOST}.k2j4x9.tmp"
    orphan.write_bytes(b"half of a checkpoint")
    live = share / f".m.npz.{os.getpid()}@{files._HOST}.p0q1r2.tmp"  # a live process's: kept
    live.write_bytes(b"being written")
    assert invoke("export", "-o", share / "m.npz", "-q").exit_code == 0
    assert sorted(p.name for p in share.iterdir()) == sorted(["m.npz", live.name])


def test_reading_errors_of_the_text_name_the_file_and_blame_neither_the_cache_nor_the_system(run, small_corpus):
    """/proc/self/mem cannot be read at offset 0 (EIO): the input is bad, exit 2, and named."""
    if not os.path.exists("/proc/self/mem"):
        pytest.skip("needs /proc/self/mem")
    message = "Error: /proc/self/mem: cannot read (Input/output error)"
    for args in (["train", "/proc/self/mem", "--steps", "1", "--checkpoint-dir", "other"],
                 ["train", small_corpus, "--val-file", "/proc/self/mem", "--checkpoint-dir", "other"],
                 ["eval", "checkpoints", "/proc/self/mem"],
                 ["sample", "--seed-file", "/proc/self/mem"],
                 ["prepare", "/proc/self/mem"]):
        result = invoke(*args, "-q")
        assert (result.exit_code, result.stdout, result.stderr) == (2, "", message + "\n"), args
    assert not os.path.exists("other")


def test_ls_and_export_through_the_installed_command(charrnn_executable, run):
    exported = subprocess.run([charrnn_executable, "export", "-o", "checkpoints/poems/model.npz", "-q"],
                              cwd=run.parent.parent, capture_output=True, text=True, timeout=120)
    assert exported.returncode == 0 and exported.stdout == "" and exported.stderr == ""
    listed = subprocess.run([charrnn_executable, "ls", "checkpoints/poems", "--json"], cwd=run.parent.parent,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and listed.stderr == ""
    model = next(e for e in json.loads(listed.stdout)["checkpoints"] if e["file"] == "model.npz")
    assert model["contents"] == "model" and model["same_as"] == ["best.npz"]
