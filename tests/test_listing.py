"""Checkpoint housekeeping: charrnn ls lists a folder's checkpoints; charrnn export writes a sampling-only
checkpoint that sample, eval and info read and train --resume refuses."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from test_cli import FAST, assert_clean_error, invoke


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
    document = json.loads(invoke("ls", "checkpoints/poems", "--json").stdout)
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
    last = invoke("ls", run).stdout.splitlines()[-1]
    assert last.split()[:6] == ["notes.npz", "—", "—", "—", "—", "9"]
    assert last.endswith("unreadable: is not a charrnn checkpoint (not an .npz archive; truncated or the wrong file?)")
    (tmp_path / "empty").mkdir()
    empty = invoke("ls", tmp_path / "empty")
    assert empty.exit_code == 0 and empty.stdout == "" and empty.stderr == f"no checkpoints in {tmp_path / 'empty'}\n"
    assert json.loads(invoke("ls", tmp_path / "empty", "--json").stdout)["checkpoints"] == []
    assert_clean_error(invoke("ls", tmp_path / "missing"), 2, f"{tmp_path / 'missing'} does not exist")


def test_export_writes_a_sampling_only_checkpoint_that_the_readers_take(run, small_corpus):
    result = invoke("export", "-o", "model.npz", "--json")
    assert result.exit_code == 0, result.stderr
    best = os.path.join("checkpoints", "poems", "best.npz")
    document = json.loads(result.stdout)
    size, full = os.path.getsize("model.npz"), (run / "best.npz").stat().st_size
    assert document == {"checkpoint": best, "output": "model.npz", "step": document["step"], "size_bytes": size,
                        "checkpoint_size_bytes": full}
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
    assert invoke("sample", "-c", "model.npz", *args).stdout == invoke("sample", "-c", best, *args).stdout
    assert invoke("eval", "model.npz", small_corpus).stdout == invoke("eval", best, small_corpus).stdout
    facts = json.loads(invoke("info", "model.npz", "--json").stdout)
    assert facts["contents"] == "model" and json.loads(invoke("info", best, "--json").stdout)["contents"] == "training"
    assert "contents: the model only, for sampling and scoring (exported; cannot be resumed)" in invoke(
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


def test_ls_and_export_through_the_installed_command(charrnn_executable, run):
    exported = subprocess.run([charrnn_executable, "export", "-o", "checkpoints/poems/model.npz", "-q"],
                              cwd=run.parent.parent, capture_output=True, text=True, timeout=60)
    assert exported.returncode == 0 and exported.stdout == "" and exported.stderr == ""
    listed = subprocess.run([charrnn_executable, "ls", "checkpoints/poems", "--json"], cwd=run.parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stderr == ""
    model = next(e for e in json.loads(listed.stdout)["checkpoints"] if e["file"] == "model.npz")
    assert model["contents"] == "model" and model["same_as"] == ["best.npz"]
