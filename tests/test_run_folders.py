"""Every new run gets a checkpoint folder of its own (checkpoints/<corpus name>/, then -2/, -3/...), says
where, and the commands given no checkpoint read the newest run's best; an explicit --checkpoint-dir and
--resume keep their own rules."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from charrnn.checkpoints import checkpoint
from charrnn.training import folder
from test_cli import FAST, assert_clean_error, invoke, invoke_ok


def _train(*args, expect: int = 0):
    result = invoke("train", *FAST, "--steps", "4", "--json", *args)
    assert result.exit_code == expect, result.stderr
    return result


def _snapshot(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir())}


def test_two_runs_in_a_row_go_to_two_folders_of_their_own(workdir, small_corpus):
    first = _train(small_corpus)
    assert json.loads(first.stdout)["checkpoint_dir"] == os.path.join("checkpoints", "poems")
    assert f"checkpoints: {os.path.join('checkpoints', 'poems', '')}\n" in first.stderr
    kept = _snapshot(workdir / "checkpoints" / "poems")
    second = _train(small_corpus, "--rng-seed", "4")
    document = json.loads(second.stdout)
    assert document["checkpoint_dir"] == os.path.join("checkpoints", "poems-2")
    assert document["checkpoint"] == os.path.join("checkpoints", "poems-2", "latest.npz")
    assert document["best_checkpoint"] == os.path.join("checkpoints", "poems-2", "best.npz")
    assert _snapshot(workdir / "checkpoints" / "poems") == kept  # never touched
    assert _train(small_corpus, "--rng-seed", "5").stdout.count("poems-3") == 3
    # The readers take the newest run's best.
    sampled = invoke("sample", "--length", "3", "--rng-seed", "1")
    assert sampled.exit_code == 0 and sampled.stderr == f"using {os.path.join('checkpoints', 'poems-3', 'best.npz')}\n"
    info = json.loads(invoke_ok("info", "--json", "-q").stdout)
    assert info["path"] == os.path.join("checkpoints", "poems-3", "best.npz")
    # Resuming an older run writes beside it, and makes it the newest.
    resumed = invoke("train", "--resume", "checkpoints/poems", "--steps", "6", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert invoke_ok("info").stderr == f"using {os.path.join('checkpoints', 'poems', 'best.npz')}\n"
    assert sorted(os.listdir("checkpoints")) == ["poems", "poems-2", "poems-3"]


def test_the_folder_is_named_after_the_first_corpus_file(workdir, small_corpus):
    assert folder.run_folder_name([str(small_corpus), "other.txt"]) == "poems"
    assert folder.run_folder_name(["-"]) == "stdin"
    assert folder.run_folder_name(["dir/唐诗.tar.txt"]) == "唐诗.tar"
    assert folder.run_folder_name([".hidden"]) == "hidden"
    assert folder.run_folder_name(["corpora/"]) == "corpora"
    piped = invoke_with_stdin(small_corpus.read_bytes(), "train", "-", "--steps", "2", *FAST, "-q", "--json")
    assert json.loads(piped)["checkpoint_dir"] == os.path.join("checkpoints", "stdin")


def invoke_with_stdin(data: bytes, *args) -> str:
    from click.testing import CliRunner

    from charrnn.cli import cli

    result = CliRunner().invoke(cli, [str(a) for a in args], input=data, catch_exceptions=False)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def test_a_folder_that_holds_anything_of_another_model_is_passed_over(workdir, small_corpus):
    taken = workdir / "checkpoints" / "poems"
    taken.mkdir(parents=True)
    (taken / "step_00000007.npz").write_bytes(b"someone's, even unreadable")
    empty = workdir / "checkpoints" / "poems-2"
    empty.mkdir()  # a run that stopped before saving left it empty: it is free
    document = json.loads(_train(small_corpus).stdout)
    assert document["checkpoint_dir"] == os.path.join("checkpoints", "poems-2")
    assert (taken / "step_00000007.npz").read_bytes() == b"someone's, even unreadable"


def test_a_folder_another_run_is_writing_is_passed_over(workdir, small_corpus):
    busy = folder.FolderLock(os.path.join("checkpoints", "poems"))
    os.makedirs(busy.directory)
    busy.acquire()
    try:
        document = json.loads(_train(small_corpus).stdout)
    finally:
        busy.release()
    assert document["checkpoint_dir"] == os.path.join("checkpoints", "poems-2")


def test_an_explicit_folder_and_a_resume_keep_their_rules(workdir, small_corpus):
    _train(small_corpus, "--checkpoint-dir", "mine")
    refused = invoke("train", small_corpus, "--steps", "4", *FAST, "--checkpoint-dir", "mine")
    assert_clean_error(refused, 2, "mine already holds a checkpoint")
    overwritten = _train(small_corpus, "--checkpoint-dir", "mine", "--overwrite", "--rng-seed", "9")
    assert json.loads(overwritten.stdout)["checkpoint_dir"] == "mine"
    assert not os.path.exists("checkpoints")
    # The readers given nothing look only under checkpoints/.
    assert_clean_error(invoke("sample"), 2, "no checkpoint in checkpoints/")
    # --overwrite without a folder: nothing to replace, and it says so.
    fresh = invoke("train", small_corpus, "--steps", "2", *FAST, "--overwrite")
    assert fresh.exit_code == 0 and "note: --overwrite replaces checkpoints only in a --checkpoint-dir given" in fresh.stderr


def test_checkpoints_left_in_checkpoints_itself_are_still_found(workdir, small_corpus):
    _train(small_corpus, "--checkpoint-dir", "checkpoints")  # the layout before run folders
    assert invoke_ok("sample", "--length", "2").stderr == f"using {os.path.join('checkpoints', 'best.npz')}\n"
    _train(small_corpus)  # a new run's own folder beside those files, now the newest
    assert invoke_ok("sample", "--length", "2").stderr == f"using {os.path.join('checkpoints', 'poems', 'best.npz')}\n"
    listed = json.loads(invoke_ok("ls", "--json").stdout)
    assert [run["folder"] for run in listed["runs"]] == ["checkpoints", os.path.join("checkpoints", "poems")]


def test_ls_without_a_folder_lists_the_runs(workdir, small_corpus):
    empty = invoke("ls")
    assert empty.exit_code == 0 and empty.stdout == "" and empty.stderr == (
        "no runs in checkpoints/; train one with 'charrnn train CORPUS'\n")
    assert json.loads(invoke_ok("ls", "--json").stdout) == {"folder": "checkpoints", "newest": None, "runs": []}
    _train(small_corpus, "--eval-every", "2")
    _train(small_corpus, "--hidden-size", "8", "--num-layers", "2")
    result = invoke("ls")
    assert result.exit_code == 0 and result.stderr == ""
    header, first, second = result.stdout.splitlines()
    assert header.split() == ["run", "model", "corpus", "step", "best", "val", "loss", "at", "step", "written"]
    best = checkpoint.read_metadata("checkpoints/poems/best.npz").progress
    assert first.split()[:8] == ["checkpoints/poems", "rnn", "16,", "char", "poems.txt", "4",
                                 f"{best.val_loss_nats:.4f}", str(best.val_step)]
    assert second.split()[:5] == ["checkpoints/poems-2", "2×rnn", "8,", "char", "poems.txt"]
    assert second.endswith("newest: read when no checkpoint is given") and "newest" not in first
    document = json.loads(invoke_ok("ls", "--json").stdout)
    assert document["newest"] == os.path.join("checkpoints", "poems-2")
    run = document["runs"][0]
    assert run["folder"] == os.path.join("checkpoints", "poems") and run["step"] == 4 and run["tokens_seen"] == 160
    assert run["best"] == os.path.join("checkpoints", "poems", "best.npz") and run["best_step"] == best.val_step
    assert run["latest"] == os.path.join("checkpoints", "poems", "latest.npz")
    assert run["model"] == "rnn 16, char" and run["corpus"] == ["poems.txt"]
    # The folder named: the same runs; a run's folder: its files.
    assert invoke_ok("ls", "checkpoints").stdout == result.stdout
    assert invoke_ok("ls", "checkpoints/poems").stdout.splitlines()[0].split()[0] == "file"


def test_two_quick_starts_in_a_row_then_a_sample(charrnn_executable, tmp_path, small_corpus):
    runs = []
    for _ in range(2):
        done = subprocess.run([charrnn_executable, "train", str(small_corpus), "--steps", "3", *FAST], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        runs.append(next(line for line in done.stderr.splitlines() if line.startswith("checkpoints: ")))
    assert runs == [f"checkpoints: {os.path.join('checkpoints', name, '')}" for name in ("poems", "poems-2")]
    sampled = subprocess.run([charrnn_executable, "sample", "--seed", "春", "--length", "5"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
    assert sampled.returncode == 0 and sampled.stdout.startswith("春")
    assert sampled.stderr == f"using {os.path.join('checkpoints', 'poems-2', 'best.npz')}\n"


@pytest.mark.parametrize("command", [["eval", "{corpus}"], ["export", "-o", "model.npz"], ["info"]])
def test_every_reader_takes_the_newest_run(workdir, small_corpus, command):
    _train(small_corpus)
    _train(small_corpus, "--rng-seed", "8")
    result = invoke(*[part.format(corpus=small_corpus) for part in command])
    assert result.exit_code == 0, result.stderr
    assert result.stderr.splitlines()[0] == f"using {os.path.join('checkpoints', 'poems-2', 'best.npz')}"


def test_the_folder_of_runs_named_means_its_newest_run(workdir, small_corpus):
    _train(small_corpus)
    _train(small_corpus, "--rng-seed", "8")
    newest = os.path.join("checkpoints", "poems-2")
    assert invoke_ok("sample", "-c", "checkpoints", "--length", "2").stderr == f"using {os.path.join(newest, 'best.npz')}\n"
    resumed = invoke("train", "--resume", "checkpoints", "--steps", "6", "--json", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    document = json.loads(resumed.stdout)
    assert document["checkpoint_dir"] == newest and document["steps_this_run"] == 2
    assert sorted(os.listdir("checkpoints")) == ["poems", "poems-2"]
