"""charrnn from shell scripts: JSON on stdout, quiet stderr, plain progress lines, JSONL logs,
environment variables, shell completion, and the example sweep script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn.cli import ENVVAR_PREFIX, cli
from test_cli import FAST, invoke

REPO = Path(__file__).resolve().parent.parent


def test_every_command_has_help_with_its_options():
    for name, command in cli.commands.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0 and f"Usage: cli {name}" in result.stdout, name
        assert "-q, --quiet" in result.stdout, name


def test_train_json_is_the_only_thing_on_stdout(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "12", *FAST, "--json", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    document = json.loads(result.stdout)
    assert document["checkpoint"] == os.path.join("checkpoints", "latest.npz")
    assert document["best_checkpoint"] == os.path.join("checkpoints", "best.npz")
    assert document["steps"] == 12 and document["tokens"] == 12 * 40 and document["interrupted"] is False
    assert document["val_bits_per_char"] == pytest.approx(document["val_loss_nats"] / 0.6931471805599453)
    no_validation = invoke("train", small_corpus, "--steps", "3", *FAST, "--json", "-q", "--val-fraction", "0",
                           "--checkpoint-dir", "other")
    plain = json.loads(no_validation.stdout)
    assert plain["val_loss_nats"] is None and plain["best_checkpoint"] is None  # null, not NaN


def test_sample_eval_and_prepare_json(workdir, small_corpus):
    invoke("train", small_corpus, "--steps", "5", *FAST)
    sampled = json.loads(invoke("sample", "--seed", "春", "--num-samples", "3", "--length", "7", "--json", "-q").stdout)
    assert len(sampled["samples"]) == 3 and all(s.startswith("春") and len(s) == 8 for s in sampled["samples"])
    assert sampled["seed"] == "春" and sampled["greedy"] is False
    scored = json.loads(invoke("eval", "checkpoints/latest.npz", small_corpus, "--json").stdout)
    assert scored["tokens_scored"] == 2999 and scored["tokens_unknown"] == 0
    assert scored["bits_per_char"] == pytest.approx(scored["loss_nats"] / 0.6931471805599453)
    prepared = json.loads(invoke("prepare", small_corpus, "--json", "-q").stdout)
    assert prepared["from_cache"] is True and prepared["tokens"] == 3000 and prepared["dtype"] == "uint16"


def test_stream_prints_the_same_text_as_a_normal_sample(workdir, small_corpus):
    invoke("train", small_corpus, "--steps", "5", *FAST)
    normal = invoke("sample", "--seed", "月", "--length", "30", "--rng-seed", "4", "-q").stdout
    streamed = invoke("sample", "--seed", "月", "--length", "30", "--rng-seed", "4", "--stream", "-q").stdout
    assert streamed == normal
    refused = invoke("sample", "--stream", "--num-samples", "2")
    assert refused.exit_code == 2 and "--stream prints one sample" in refused.stderr


def test_plain_progress_lines_without_a_terminal_and_quiet(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "30", *FAST, "--log-every", "10", "--eval-every", "20",
                    "--log-jsonl", "log.jsonl")
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == ["step 10/30", "step 20/30", "step 30/30"]
    assert "val " not in lines[0] and "tokens/s" in lines[0]
    # A step validated as well as logged shows its own validation loss, not the previous one.
    records = {r["step"]: r for r in map(json.loads, Path("log.jsonl").read_text(encoding="utf-8").splitlines())}
    assert f"val {records[20]['val_loss_nats']:.4f}," in lines[1]
    assert f"val {records[30]['val_loss_nats']:.4f}," in lines[2]
    assert records[20]["val_loss_nats"] != records[30]["val_loss_nats"]
    quiet = invoke("train", small_corpus, "--steps", "30", *FAST, "--log-every", "10", "-q", "--checkpoint-dir", "q")
    assert quiet.exit_code == 0 and quiet.stderr == "" and quiet.stdout == ""
    for command in (["sample", "-c", "q/latest.npz"], ["eval", "q/latest.npz", str(small_corpus)],
                    ["info", "q/latest.npz"], ["prepare", str(small_corpus)]):
        assert invoke(*command, "-q").stderr == "", command


def test_log_jsonl_records_logged_and_validated_steps_and_appends_on_resume(workdir, small_corpus):
    args = ["--log-every", "10", "--eval-every", "15", "--log-jsonl", "log.jsonl"]
    assert invoke("train", small_corpus, "--steps", "20", *FAST, *args).exit_code == 0
    assert invoke("train", "--resume", "checkpoints/latest.npz", "--steps", "30", *args).exit_code == 0
    records = [json.loads(line) for line in Path("log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == [10, 15, 20, 30]
    assert [r["val_loss_nats"] is not None for r in records] == [False, True, True, True]
    assert set(records[0]) == {
        "step", "epoch", "tokens", "train_loss_nats", "train_bits_per_char", "val_loss_nats",
        "val_bits_per_char", "learning_rate", "tokens_per_s", "elapsed_s",
    }
    assert records[-1]["tokens"] == 30 * 40 and records[0]["learning_rate"] == 0.02
    pytest.importorskip("matplotlib")
    plotted = invoke("plot", "log.jsonl", "-o", "loss.png")
    assert plotted.exit_code == 0, plotted.stderr
    assert Path("loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_options_from_the_environment(workdir, small_corpus):
    result = CliRunner().invoke(
        cli, ["train", str(small_corpus), "--steps", "2", "--batch-size", "4", "--seq-length", "10", "-q"],
        auto_envvar_prefix=ENVVAR_PREFIX, env={"CHARRNN_TRAIN_HIDDEN_SIZE": "12", "CHARRNN_TRAIN_STEPS": "99"},
    )
    assert result.exit_code == 0, result.stderr
    info = json.loads(invoke("info", "checkpoints/latest.npz", "--json").stdout)
    assert info["model"]["hidden_size"] == 12
    assert info["progress"]["step"] == 2  # the command line wins over the environment


def test_shell_completion_and_environment_through_the_installed_command(charrnn_executable, tmp_path):
    completion = subprocess.run([charrnn_executable], env={**os.environ, "_CHARRNN_COMPLETE": "bash_source"},
                                capture_output=True, text=True, timeout=60)
    assert completion.returncode == 0 and "_charrnn_completion" in completion.stdout
    words = subprocess.run(
        [charrnn_executable], capture_output=True, text=True, timeout=60,
        env={**os.environ, "_CHARRNN_COMPLETE": "bash_complete", "COMP_WORDS": "charrnn tr", "COMP_CWORD": "1"},
    )
    assert "train" in words.stdout
    corpus = tmp_path / "c.txt"
    corpus.write_text((REPO / "data" / "tang300.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    run = subprocess.run([charrnn_executable, "train", str(corpus), "-q", "--json"], cwd=tmp_path, timeout=120,
                         capture_output=True, text=True,
                         env={**os.environ, "CHARRNN_TRAIN_STEPS": "3", "CHARRNN_TRAIN_HIDDEN_SIZE": "8"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["steps"] == 3


def test_the_example_sweep_script_runs(tmp_path):
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "CORPUS": str(REPO / "data" / "tang300.txt"),
        "OUT": str(tmp_path / "runs"),
        "STEPS": "3",
        "HIDDEN_SIZES": "8 12",
        "LEARNING_RATES": "0.1",
        "CHARRNN_TRAIN_BATCH_SIZE": "4",
    }
    run = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    table = run.stdout.strip().splitlines()
    assert table[0].split()[:2] == ["run", "bits/char"]
    assert sorted(row.split()[0] for row in table[1:]) == ["h12_lr0.1", "h8_lr0.1"]
    bits = [float(row.split()[1]) for row in table[1:]]
    assert bits == sorted(bits)


class _Terminal:
    """A stand-in for stderr on a terminal: records what is written, says it is a tty."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    encoding = "utf-8"

    def write(self, text) -> int:
        self.parts.append(text.decode() if isinstance(text, bytes) else text)
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return True

    @property
    def text(self) -> str:
        return "".join(self.parts)


def test_on_a_terminal_a_progress_bar_with_samples_above_it(workdir, small_corpus, monkeypatch):
    from charrnn.training import schedule
    from charrnn.cli.training_output import TrainingOutput
    from charrnn.config import ModelConfig, ScheduleConfig, TrainConfig
    from charrnn.training.session import TrainRequest, open_session

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    request = TrainRequest(
        corpus_paths=(str(small_corpus),),
        schedule=ScheduleConfig(sample_every=5, sample_length=12, eval_every=5),
        model=ModelConfig(hidden_size=8),
        train=TrainConfig(max_steps=10, batch_size=4, seq_length=10, rng_seed=1),
    )
    finished = TrainingOutput(quiet=False, log_every=4, log_jsonl=None).run(schedule.run(open_session(request)))
    assert finished.steps == 10
    text = terminal.text
    assert "--- sample at step 5 (temperature 1) ---" in text and "--- sample at step 10" in text
    assert "10/10" in text and "loss=" in text and "val=" in text  # tqdm's bar with its postfix
    assert "step 4/10:" not in text  # no plain progress lines on a terminal
