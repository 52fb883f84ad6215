"""The charrnn command end to end: CliRunner for exact output, and the installed script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from charrnn import __version__
from charrnn.checkpoints import checkpoint
from charrnn.cli import cli
from conftest import StderrLines

FAST = ["--hidden-size", "16", "--batch-size", "4", "--seq-length", "10", "--rng-seed", "3", "--sample-every", "0"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def invoke_ok(*args: str):
    """``invoke``, failing the test (with the command's stderr) unless the command exits 0."""
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    return result


def assert_clean_error(result, code: int, message: str, *, alone: bool = False) -> None:
    """The command failed with ``code``, nothing on stdout, and a last stderr line ``Error: ...message...``
    (with ``alone``, the only stderr line: no note or progress before it)."""
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: ") and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not alone or len(lines) == 1, result.stderr


def test_version_and_help_for_every_command():
    assert invoke_ok("--version").stdout == f"charrnn, version {__version__}\n"
    for command in [[], ["train"], ["sample"]]:
        result = invoke(*command, "--help")
        assert result.exit_code == 0 and "Usage: " in result.stdout
    assert "--learning-rate" in invoke_ok("train", "--help").stdout
    assert "Exit codes" in invoke_ok("--help").stdout


def test_train_then_sample(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "30", *FAST)
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    # 942 distinct characters; an embedding of 16 (the hidden size): 942·16 + 16·16 + 16·16 + 16 + 16·942
    # + 942 parameters; 5% (143 characters) held out in four blocks of whole lines; 2,857 // 4 = 714 tokens
    # a stream, (714 − 1) // 10 chunks.
    assert ("training: rnn, vocabulary 942, hidden 16, 31,614 parameters, 2,856 training tokens, "
            "143 validation tokens, 71 steps per epoch, rng seed 3") in result.stderr
    assert "trained to step 30 (30 steps, 1,200 tokens this run)" in result.stderr
    assert "validation " in result.stderr and " bits/char" in result.stderr
    assert sorted(os.listdir(workdir / "checkpoints" / "poems")) == ["best.npz", "latest.npz", "step_00000030.npz"]

    sampled = invoke("sample", "--seed", "春风", "--length", "20", "--rng-seed", "1")
    assert sampled.exit_code == 0, sampled.stderr
    assert sampled.stderr == "using checkpoints/poems/best.npz\n"  # the lowest validation loss
    text = sampled.stdout
    assert text.startswith("春风") and text.endswith("\n")
    vocab = set(checkpoint.load("checkpoints/poems/latest.npz").tokenizer.vocab)
    assert set(text[:-1]) <= vocab
    assert len(text) == 2 + 20 + 1  # seed, 20 characters, the final newline

    again = invoke_ok("sample", "-c", "checkpoints/poems/latest.npz", "--seed", "春风", "--length", "20",
                      "--rng-seed", "1", "-q")
    assert again.stdout == text and again.stderr == ""


def test_sample_options(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "10", *FAST)
    three = invoke("sample", "--length", "15", "--num-samples", "3", "--rng-seed", "2", "-q")
    samples = three.stdout[:-1].split("\n-- >8 --\n")
    assert three.exit_code == 0 and len(samples) == 3 and all(len(s) == 16 for s in samples)
    greedy = [invoke_ok("sample", "--seed", "月", "--greedy", "--length", "15", "-q").stdout for _ in range(2)]
    assert greedy[0] == greedy[1]
    assert invoke_ok("sample", "--seed", "月", "--temperature", "0", "--length", "15", "-q").stdout == greedy[0]
    top1 = invoke_ok("sample", "--seed", "月", "--top-k", "1", "--length", "15", "-q", "--rng-seed", "9").stdout
    assert top1 == greedy[0]


def test_same_seed_gives_bit_identical_checkpoints(tmp_path, small_corpus):
    for run in ("a", "b"):
        result = invoke("train", small_corpus, "--steps", "12", *FAST, "--checkpoint-dir", tmp_path / run)
        assert result.exit_code == 0
    assert (tmp_path / "a" / "latest.npz").read_bytes() == (tmp_path / "b" / "latest.npz").read_bytes()


def test_resume_equals_one_uninterrupted_run(tmp_path, small_corpus):
    once = invoke("train", small_corpus, "--steps", "25", *FAST, "--checkpoint-dir", tmp_path / "once")
    assert once.exit_code == 0
    first = invoke("train", small_corpus, "--steps", "10", *FAST, "--checkpoint-dir", tmp_path / "twice")
    assert first.exit_code == 0
    resumed = invoke("train", "--resume", tmp_path / "twice" / "latest.npz", "--steps", "25",
                     "--checkpoint-dir", tmp_path / "twice", "--sample-every", "0")
    assert resumed.exit_code == 0, resumed.stderr
    assert "resuming" in resumed.stderr and "at step 10" in resumed.stderr
    assert "trained to step 25 (15 steps" in resumed.stderr
    a = checkpoint.load(str(tmp_path / "once" / "latest.npz"))
    b = checkpoint.load(str(tmp_path / "twice" / "latest.npz"))
    for name in a.params:
        assert np.array_equal(a.params[name], b.params[name])
    assert (tmp_path / "once" / "latest.npz").read_bytes() == (tmp_path / "twice" / "latest.npz").read_bytes()


def test_resume_with_a_conflicting_option_is_refused(tmp_path, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "5", *FAST, "--checkpoint-dir", tmp_path)
    before = (tmp_path / "latest.npz").read_bytes()
    result = invoke("train", "--resume", tmp_path / "latest.npz", "--hidden-size", "32", "--steps", "9",
                    "--checkpoint-dir", tmp_path)
    assert_clean_error(result, 2, "--hidden-size 32 conflicts with the checkpoint, which has 16")
    assert (tmp_path / "latest.npz").read_bytes() == before


def test_gbk_corpus(workdir, tmp_path):
    corpus = tmp_path / "gbk.txt"
    corpus.write_bytes(("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n" * 20).encode("gbk"))
    result = invoke("train", corpus, "--steps", "5", *FAST)
    assert result.exit_code == 0, result.stderr
    ckpt = checkpoint.load("checkpoints/gbk/latest.npz")
    assert ckpt.corpus.encodings == ("gb18030",)
    assert "黄" in ckpt.tokenizer.vocab
    assert invoke_ok("sample", "--seed", "黄河", "--length", "5", "-q").stdout.startswith("黄河")


def test_jieba_word_model_round_trip(workdir, small_corpus):
    result = invoke("train", small_corpus, "--tokenizer", "jieba", "--steps", "8", *FAST)
    assert result.exit_code == 0, result.stderr
    assert "Building prefix dict" not in result.stderr  # jieba's own log lines are silenced
    ckpt = checkpoint.load("checkpoints/poems/latest.npz")
    assert ckpt.tokenizer.kind == "jieba"
    assert "作者" in ckpt.tokenizer.vocab  # a two-character word is one token
    sampled = invoke("sample", "--seed", "作者", "--length", "10", "--rng-seed", "4")
    assert sampled.exit_code == 0 and sampled.stdout.startswith("作者")
    conflict = invoke("train", "--resume", "checkpoints/poems/latest.npz", "--tokenizer", "char", "--steps", "9")
    assert_clean_error(conflict, 2, "--tokenizer char conflicts with the checkpoint, which has jieba")


def test_fresh_run_refuses_to_replace_existing_checkpoints(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "3", *FAST, "--checkpoint-dir", "run")
    before = (workdir / "run" / "latest.npz").read_bytes()
    result = invoke("train", small_corpus, "--steps", "3", *FAST, "--hidden-size", "8", "--checkpoint-dir", "run")
    assert_clean_error(result, 2, "already holds a checkpoint")
    assert "continue it with --resume run," in result.stderr
    assert (workdir / "run" / "latest.npz").read_bytes() == before
    assert invoke("train", small_corpus, "--steps", "3", *FAST, "--hidden-size", "8", "--checkpoint-dir", "run",
                  "--overwrite").exit_code == 0
    assert checkpoint.load("run/latest.npz").model_config.hidden_size == 8


@pytest.mark.parametrize(
    "write, args, message",
    [
        (None, [], "no such file"),
        (b"", [], "is empty"),
        (b"\xff\x80 not text \xff\x80", [], "pass its codec with --encoding"),
        ("短".encode(), [], "fewer than --seq-length + 1 = 11"),
        ("足够长的诗句。\n".encode() * 100, ["--hidden-size", "0"], "--hidden-size must be positive, got 0"),
        ("足够长的诗句。\n".encode() * 100, ["--learning-rate", "-1"], "--learning-rate must be positive"),
        ("足够长的诗句。\n".encode() * 100, ["--steps", "0"], "--steps must be positive, got 0"),
        ("足够长的诗句。\n".encode() * 100, ["--encoding", "nope"], "'nope' is not a codec"),
    ],
)
def test_training_input_errors(workdir, tmp_path, write, args, message):
    corpus = tmp_path / "corpus.txt"
    if write is not None:
        corpus.write_bytes(write)
    result = invoke("train", corpus, "--steps", "2", *FAST, *args)
    assert_clean_error(result, 2, message)
    assert not (workdir / "checkpoints").exists()  # a run that never started leaves no folder


def test_train_without_corpus_is_a_usage_error(workdir):
    result = invoke("train")
    assert result.exit_code == 2 and "give at least one CORPUS file" in result.stderr


@pytest.fixture
def trained(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "4", *FAST)
    return workdir / "checkpoints" / "poems" / "latest.npz"


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (lambda p: p.unlink(), "no checkpoint at"),
        (lambda p: p.write_bytes(p.read_bytes()[:5000]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"PK\x03\x04" + b"\x00" * 100), "truncated or corrupt"),
        (lambda p: p.write_text("just text"), "not an .npz archive"),
    ],
)
def test_sample_checkpoint_errors(trained, corrupt, message):
    corrupt(trained)
    assert_clean_error(invoke("sample", "-c", trained), 2, message)


def test_sample_errors(trained, workdir):
    assert_clean_error(invoke("sample", "--seed", "春xyz"), 2, "--seed has tokens not in the model's vocabulary: 'x', 'y', 'z'")
    assert_clean_error(invoke("sample", "--length", "0"), 2, "--length must be positive, got 0")
    assert_clean_error(invoke("sample", "--top-k", "-2"), 2, "--top-k must be positive, got -2")
    for name in ("best.npz", "latest.npz", "step_00000004.npz"):
        (workdir / "checkpoints" / "poems" / name).unlink()
    assert_clean_error(invoke("sample"), 2, "no checkpoint in checkpoints/")


def test_installed_command_in_a_subprocess(charrnn_executable, tmp_path, small_corpus):
    run = subprocess.run(
        [charrnn_executable, "train", str(small_corpus), "--steps", "6", *FAST, "-q"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout == "" and run.stderr == ""
    sampled = subprocess.run(
        [charrnn_executable, "sample", "--seed", "山", "--length", "12", "--rng-seed", "5"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert sampled.returncode == 0 and sampled.stdout.startswith("山") and len(sampled.stdout) == 14
    bad = subprocess.run([charrnn_executable, "sample", "--seed", "⚡"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr == "using checkpoints/poems/best.npz\nError: --seed has tokens not in the model's vocabulary: '⚡'\n"
    module = subprocess.run([sys.executable, "-m", "charrnn", "--version"], capture_output=True, text=True, timeout=120)
    assert module.returncode == 0 and module.stdout == f"charrnn, version {__version__}\n"


def test_sigterm_saves_a_checkpoint_and_exits_143(charrnn_executable, tmp_path, small_corpus):
    process = subprocess.Popen(
        [charrnn_executable, "train", str(small_corpus), "--steps", "1000000", *FAST, "--checkpoint-every", "0",
         "--log-every", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    stderr = StderrLines(process)
    try:
        # Once a step has finished (however long a cold start took), the signal ends the run.
        line = stderr.wait_for(lambda line: line.startswith("step "), "a finished step")
        process.send_signal(signal.SIGTERM)
        stdout = process.stdout.read()
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 143, stderr.text()
    assert stdout == ""
    assert "Interrupted; checkpoint saved to checkpoints/poems/latest.npz" in stderr.text()
    ckpt = checkpoint.load(str(tmp_path / "checkpoints" / "poems" / "latest.npz"))
    assert int(line.split()[1].split("/")[0]) <= ckpt.progress.step < 1000000


def _folder_with_best_before_latest(small_corpus, folder):
    """A run folder whose best.npz (step 2) is older than its latest.npz (step 4)."""
    result = invoke("train", small_corpus, "--steps", "4", *FAST, "--checkpoint-every", "2", "--checkpoint-dir",
                    folder, "-q")
    assert result.exit_code == 0, result.stderr
    (folder / "best.npz").write_bytes((folder / "step_00000002.npz").read_bytes())
    return folder


def _step(result) -> int:
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["progress"]["step"]


def test_every_command_reads_a_checkpoint_file_or_folder_the_same_way(workdir, small_corpus):
    run = _folder_with_best_before_latest(small_corpus, workdir / "run")
    text = str(small_corpus)
    # A folder means its best.npz, named on stderr, whichever command and spelling reads it.
    for args in (["info", "run", "--json"], ["info", "-c", "run", "--json"], ["info", "--checkpoint", "run/", "--json"]):
        result = invoke(*args)
        assert _step(result) == 2 and result.stderr == f"using {os.path.join('run', 'best.npz')}\n", args
    for args in (["eval", "run", text, "--json"], ["eval", "-c", "run", text, "--json"],
                 ["sample", "-c", "run", "--json", "--length", "3"]):
        result = invoke(*args)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["checkpoint"] == os.path.join("run", "best.npz"), args
        assert result.stderr == f"using {os.path.join('run', 'best.npz')}\n", args
    # The old spellings of a file work as before, and a file is used without a note.
    for args in (["info", "run/latest.npz", "--json"], ["info", "-c", "run/latest.npz", "--json"]):
        result = invoke(*args)
        assert _step(result) == 4 and result.stderr == "", args
    plain = invoke("eval", "run/latest.npz", text)
    assert plain.exit_code == 0 and plain.stderr == "" and plain.stdout.startswith("2,999 tokens scored, 0 unknown: ")
    # Nothing given: the newest run's folder under checkpoints/, the same way; then latest.npz, then the
    # newest step file.
    shutil.copytree(run, "checkpoints/poems")
    assert invoke_ok("sample", "--length", "2").stderr == "using checkpoints/poems/best.npz\n"
    assert invoke_ok("eval", text).stderr == "using checkpoints/poems/best.npz\n"
    os.unlink("checkpoints/poems/best.npz")
    assert invoke_ok("info").stderr == "using checkpoints/poems/latest.npz\n"
    os.unlink("checkpoints/poems/latest.npz")
    newest = invoke("info", "--json")
    assert newest.stderr == "using checkpoints/poems/step_00000004.npz\n" and _step(newest) == 4
    # Resuming a folder continues its newest checkpoint, never its best (that would roll the folder back).
    resumed = invoke("train", "--resume", "run", "--steps", "6", "--sample-every", "0")
    assert resumed.exit_code == 0, resumed.stderr
    assert f"resuming {os.path.join('run', 'latest.npz')} at step 4" in resumed.stderr
    assert _step(invoke("info", "run/latest.npz", "--json")) == 6


def test_checkpoint_arguments_that_cannot_be_meant(workdir, small_corpus):
    _folder_with_best_before_latest(small_corpus, workdir / "run")
    twice = invoke("info", "run", "-c", "run")
    assert twice.exit_code == 2 and "give the checkpoint once" in twice.stderr
    twice = invoke("eval", "-c", "run", "run/latest.npz", str(small_corpus))
    assert twice.exit_code == 2 and "give the checkpoint once" in twice.stderr
    no_text = invoke("eval", "run/best.npz")
    assert no_text.exit_code == 2 and "give the text FILE(s) to score after the checkpoint run/best.npz" in no_text.stderr
    (workdir / "empty").mkdir()
    for args in (["info", "empty"], ["sample", "-c", "empty"], ["eval", "empty", str(small_corpus)]):
        assert_clean_error(invoke(*args), 2, "no checkpoint in empty/; train one with 'charrnn train CORPUS'")


def test_training_says_which_encoding_it_read(workdir, tmp_path):
    poem = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。\n" * 20
    (tmp_path / "gbk.txt").write_bytes(poem.encode("gbk"))
    (tmp_path / "utf8.txt").write_text(poem, encoding="utf-8")
    detected = invoke("train", tmp_path / "gbk.txt", "--steps", "2", *FAST, "--checkpoint-dir", "a")
    assert detected.exit_code == 0, detected.stderr
    assert detected.stderr.splitlines()[1] == "encoding: gb18030 (detected; --encoding overrides)"
    both = invoke_ok("train", tmp_path / "utf8.txt", tmp_path / "gbk.txt", "--steps", "2", *FAST,
                     "--checkpoint-dir", "b")
    assert "\nencoding: utf8.txt utf-8, gbk.txt gb18030 (detected; --encoding overrides)\n" in both.stderr
    given = invoke_ok("train", tmp_path / "utf8.txt", "--encoding", "utf-8", "--steps", "2", *FAST,
                      "--checkpoint-dir", "c")
    assert "\nencoding: utf-8 (--encoding)\n" in given.stderr
    assert invoke_ok("train", tmp_path / "utf8.txt", "--steps", "2", *FAST, "--checkpoint-dir", "d", "-q").stderr == ""
