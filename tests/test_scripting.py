"""charrnn from shell scripts: JSON on stdout, quiet stderr, plain progress lines, JSONL logs,
environment variables, shell completion, and the example sweep script."""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import pytest
from click.testing import CliRunner

from charrnn.checkpoints import checkpoint
from charrnn.cli import ENVVAR_PREFIX, cli
from conftest import NUMPY_BACKEND
from test_cli import FAST, assert_clean_error, invoke, invoke_ok

REPO = Path(__file__).resolve().parent.parent


def test_every_command_has_help_with_its_options():
    for name, command in cli.commands.items():
        result = invoke(name, "--help")
        assert result.exit_code == 0 and f"Usage: cli {name}" in result.stdout, name
        assert "-q, --quiet" in result.stdout, name


def test_every_command_help_ends_with_examples_that_parse():
    """Each example's charrnn part (up to a pipe or redirection) is a valid command line of that command,
    so an example cannot outlive a renamed option."""
    for name, command in cli.commands.items():
        text = invoke_ok(name, "--help").stdout
        tail = text[text.index("  Examples:\n") + len("  Examples:\n"):].splitlines()
        assert 2 <= len(tail) <= 4 and all(line.startswith("    ") for line in tail), (name, tail)
        for line in tail:
            words = shlex.split(line)
            words = words[words.index("charrnn") + 1:]
            words = words[: next((i for i, w in enumerate(words) if w in ("|", ">")), len(words))]
            assert words[0] == name, line
            with command.make_context(name, words[1:]) as ctx:  # raises click's UsageError if it does not parse
                assert ctx.params, line


def test_train_json_is_the_only_thing_on_stdout(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "12", *FAST, "--json", "-q")
    assert result.exit_code == 0 and result.stderr == ""
    document = json.loads(result.stdout)
    assert document["checkpoint"] == os.path.join("checkpoints", "poems", "latest.npz")
    assert document["best_checkpoint"] == os.path.join("checkpoints", "poems", "best.npz")
    assert document["steps"] == 12 and document["tokens"] == 12 * 40 and document["interrupted"] is False
    assert document["val_bits_per_char"] == pytest.approx(document["val_loss_nats"] / 0.6931471805599453)
    no_validation = invoke_ok("train", small_corpus, "--steps", "3", *FAST, "--json", "-q", "--val-fraction", "0",
                              "--checkpoint-dir", "other")
    plain = json.loads(no_validation.stdout)
    assert plain["val_loss_nats"] is None and plain["best_checkpoint"] is None  # null, not NaN


def test_sample_eval_and_prepare_json(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "5", *FAST)
    sampled = json.loads(invoke_ok("sample", "--seed", "春", "--num-samples", "3", "--length", "7", "--json",
                                   "-q").stdout)
    assert len(sampled["samples"]) == 3 and all(s.startswith("春") and len(s) == 8 for s in sampled["samples"])
    assert sampled["seed"] == "春" and sampled["greedy"] is False
    scored = json.loads(invoke_ok("eval", "checkpoints/poems/latest.npz", small_corpus, "--json").stdout)
    assert scored["tokens_scored"] == 2999 and scored["tokens_unknown"] == 0
    assert scored["bits_per_char"] == pytest.approx(scored["loss_nats"] / 0.6931471805599453)
    prepared = json.loads(invoke_ok("prepare", small_corpus, "--json", "-q").stdout)
    assert prepared["from_cache"] is True and prepared["tokens"] == 3000 and prepared["dtype"] == "uint16"


def test_stream_prints_the_same_text_as_a_normal_sample(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "5", *FAST)
    normal = invoke_ok("sample", "--seed", "月", "--length", "30", "--rng-seed", "4", "-q").stdout
    streamed = invoke_ok("sample", "--seed", "月", "--length", "30", "--rng-seed", "4", "--stream", "-q").stdout
    assert streamed == normal
    refused = invoke("sample", "--stream", "--num-samples", "2")
    assert refused.exit_code == 2 and "--stream prints one sample" in refused.stderr


def test_plain_progress_lines_without_a_terminal_and_quiet(workdir, small_corpus):
    result = invoke_ok("train", small_corpus, "--steps", "30", *FAST, "--log-every", "10", "--eval-every", "20",
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
        assert invoke_ok(*command, "-q").stderr == "", command


def test_log_jsonl_records_logged_and_validated_steps_and_appends_on_resume(workdir, small_corpus):
    args = ["--log-every", "10", "--eval-every", "15", "--log-jsonl", "log.jsonl"]
    assert invoke("train", small_corpus, "--steps", "20", *FAST, *args).exit_code == 0
    assert invoke("train", "--resume", "checkpoints/poems/latest.npz", "--steps", "30", *args).exit_code == 0
    records = [json.loads(line) for line in Path("log.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == [10, 15, 20, 30]
    assert [r["val_loss_nats"] is not None for r in records] == [False, True, True, True]
    assert set(records[0]) == {
        "step", "epoch", "tokens", "train_loss_nats", "train_bits_per_char", "val_loss_nats",
        "val_bits_per_char", "learning_rate", "tokens_per_s", "elapsed_s", "run_start_step", "run_start_tokens",
        "model", "corpus",
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
    info = json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)
    assert info["model"]["hidden_size"] == 12
    assert info["progress"]["step"] == 2  # the command line wins over the environment


def test_shell_completion_and_environment_through_the_installed_command(charrnn_executable, tmp_path):
    completion = subprocess.run([charrnn_executable], env={**os.environ, "_CHARRNN_COMPLETE": "bash_source"},
                                capture_output=True, text=True, timeout=120)
    assert completion.returncode == 0 and "_charrnn_completion" in completion.stdout
    words = subprocess.run(
        [charrnn_executable], capture_output=True, text=True, timeout=120,
        env={**os.environ, "_CHARRNN_COMPLETE": "bash_complete", "COMP_WORDS": "charrnn tr", "COMP_CWORD": "1"},
    )
    assert words.returncode == 0 and "train" in words.stdout
    corpus = tmp_path / "c.txt"
    corpus.write_text((REPO / "data" / "tang300.txt").read_text(encoding="utf-8")[:3000], encoding="utf-8")
    run = subprocess.run([charrnn_executable, "train", str(corpus), *NUMPY_BACKEND, "-q", "--json"], cwd=tmp_path,
                         timeout=120, capture_output=True, text=True,
                         env={**os.environ, "CHARRNN_TRAIN_STEPS": "3", "CHARRNN_TRAIN_HIDDEN_SIZE": "8"})
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["steps"] == 3


def test_the_example_sweep_script_runs(tmp_path):
    env = {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "CORPUS": str(REPO / "data" / "tang300.txt"),
        "OUT": str(tmp_path / "runs"),
        "STEPS": "1000000",
        "MAX_SECONDS": "0.5",  # every model the same budget, as the script is meant to be used
        "HIDDEN_SIZES": "8 12",
        "LEARNING_RATES": "0.1",
        "CHARRNN_TRAIN_BATCH_SIZE": "4",
        "CHARRNN_BACKEND": "numpy",  # the kernels play no part here; the processes start without numba
    }
    run = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    table = run.stdout.strip().splitlines()
    assert table[0].split()[:2] == ["run", "bits/char"]
    assert sorted(row.split()[0] for row in table[1:]) == ["h12_lr0.1", "h8_lr0.1"]
    bits = [float(row.split()[1]) for row in table[1:]]
    assert bits == sorted(bits)
    for run in ("h8_lr0.1", "h12_lr0.1"):
        trained = json.loads((tmp_path / "runs" / f"{run}.train.json").read_text(encoding="utf-8"))
        assert trained["out_of_time"] is True and 0 < trained["steps"] < 1000000


def _sweep_environment(out: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "CORPUS": str(REPO / "data" / "tang300.txt"),
        "OUT": str(out),
        "MAX_SECONDS": "0.5",
        "HIDDEN_SIZES": "8 12",
        "LEARNING_RATES": "0.1",
        "CHARRNN_TRAIN_BATCH_SIZE": "4",
        "CHARRNN_BACKEND": "numpy",
    }


def test_the_sweep_script_as_a_slurm_array_trains_one_point_per_task_then_tabulates(tmp_path):
    env = _sweep_environment(tmp_path / "runs")
    sweep = ["bash", str(REPO / "scripts" / "sweep.sh")]
    listed = subprocess.run([*sweep, "list"], env=env, capture_output=True, text=True, timeout=60)
    assert listed.stdout.splitlines() == ["0 8 0.1", "1 12 0.1"]
    for task in ("1", "0"):  # an array's tasks run in any order, each with its own SLURM_ARRAY_TASK_ID
        run = subprocess.run(sweep, env={**env, "SLURM_ARRAY_TASK_ID": task}, capture_output=True, text=True,
                             timeout=300)
        assert run.returncode == 0, run.stderr
        assert run.stdout == ""  # a task trains its point; the table comes after the whole array
    past = subprocess.run(sweep, env={**env, "SLURM_ARRAY_TASK_ID": "2"}, capture_output=True, text=True, timeout=60)
    assert past.returncode == 2
    assert past.stderr == "Error: array task 2 is past the grid's 2 points (--array=0-1)\n"
    table = subprocess.run([*sweep, "table"], env=env, capture_output=True, text=True, timeout=60)
    assert table.returncode == 0, table.stderr
    assert sorted(row.split()[0] for row in table.stdout.splitlines()[1:]) == ["h12_lr0.1", "h8_lr0.1"]


@pytest.mark.skipif(shutil.which("parallel") is None, reason="GNU parallel is not installed (apt-get install parallel)")
def test_the_sweep_script_runs_its_points_at_once_under_gnu_parallel(tmp_path):
    env = {**_sweep_environment(tmp_path / "runs"), "JOBS": "2"}
    run = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh")], env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    assert sorted(row.split()[0] for row in run.stdout.splitlines()[1:]) == ["h12_lr0.1", "h8_lr0.1"]
    for name in ("h8_lr0.1", "h12_lr0.1"):
        assert json.loads((tmp_path / "runs" / f"{name}.train.json").read_text(encoding="utf-8"))["out_of_time"]
    # A run that fails ends the sweep with its exit code.
    failing = subprocess.run(["bash", str(REPO / "scripts" / "sweep.sh")], capture_output=True, text=True,
                             env={**env, "OUT": str(tmp_path / "bad"), "LEARNING_RATES": "-1"}, timeout=300)
    assert failing.returncode == 2


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
    from charrnn.training import runner
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
    finished = TrainingOutput(quiet=False, log_every=4, log_jsonl=None).run(runner.run_session(open_session(request)))
    assert finished.steps == 10
    text = terminal.text
    assert "--- sample at step 5 (temperature 1) ---" in text and "--- sample at step 10" in text
    assert "10/10" in text and "loss=" in text and "val=" in text  # tqdm's bar with its postfix
    assert "step 4/10:" not in text  # no plain progress lines on a terminal


def test_quiet_before_the_command_works_as_after_it(workdir, small_corpus):
    invoke_ok("train", small_corpus, "--steps", "2", *FAST, "-q")
    loud = invoke("info")
    assert loud.exit_code == 0 and loud.stderr == "using checkpoints/poems/best.npz\n"
    for args in (["-q", "info"], ["info", "-q"], ["--quiet", "eval", "checkpoints/poems/latest.npz", str(small_corpus)]):
        result = invoke(*args)
        assert result.exit_code == 0 and result.stderr == "" and result.stdout, args


def test_eval_says_its_note_first_and_counts_with_thousands_separators(workdir, small_corpus, tmp_path):
    invoke_ok("train", small_corpus, "--steps", "2", *FAST, "-q")
    text = tmp_path / "mixed.txt"
    text.write_text(small_corpus.read_text(encoding="utf-8")[:1500] + "xyz" * 500, encoding="utf-8")
    result = invoke("eval", "checkpoints/poems/latest.npz", text)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("1,499 tokens scored, 1,500 unknown (50%): ")
    # Half the text unknown: the score covers the other half only, and says so.
    assert result.stderr == ("warning: 1,500 of the text's 3,000 tokens (50%) are outside the model's vocabulary and "
                             "left out: the score covers only the rest, and flatters the model on this text\n")
    assert result.output.index("warning:") < result.output.index("tokens scored")  # as the README shows it


def _invoke_with_input(*args, input):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)


def test_standard_input_as_an_eval_file_and_a_seed_file(workdir, small_corpus, tmp_path):
    invoke_ok("train", small_corpus, "--steps", "2", *FAST, "-q")
    text = small_corpus.read_text(encoding="utf-8")
    from_file = invoke_ok("eval", "checkpoints/poems/latest.npz", small_corpus, "-q").stdout
    from_pipe = _invoke_with_input("eval", "checkpoints/poems/latest.npz", "-", "-q", input=text.encode("gb18030"))
    assert from_pipe.exit_code == 0, from_pipe.stderr
    assert from_pipe.stdout == from_file and from_file.startswith("2,999 tokens scored")
    twice = _invoke_with_input("eval", "checkpoints/poems/latest.npz", "-", "-", input=text)
    assert twice.exit_code == 2 and "standard input (-) can be read only once; give - once" in twice.stderr
    empty = _invoke_with_input("eval", "checkpoints/poems/latest.npz", "-", input=b"")
    assert empty.exit_code == 2 and empty.stderr.endswith("Error: standard input is empty\n")

    seed = text[:300]  # a long priming text, lines and all
    (tmp_path / "seed.txt").write_bytes(seed.encode("gb18030"))  # decoded as --encoding auto says
    args = ["sample", "--length", "20", "--rng-seed", "5", "-q"]
    by_option = invoke_ok(*args, "--seed", seed).stdout
    assert by_option.startswith(seed) and len(by_option) == 300 + 20 + 1
    assert invoke_ok(*args, "--seed-file", tmp_path / "seed.txt").stdout == by_option
    from_pipe = _invoke_with_input(*args, "--seed-file", "-", input=seed)
    assert from_pipe.exit_code == 0 and from_pipe.stdout == by_option
    both = invoke(*args, "--seed", "月", "--seed-file", tmp_path / "seed.txt")
    assert both.exit_code == 2 and "give the priming text as --seed or as --seed-file, not both" in both.stderr
    (tmp_path / "odd.txt").write_text("月⚡", encoding="utf-8")
    odd = invoke(*args, "--seed-file", tmp_path / "odd.txt")
    assert odd.exit_code == 2 and odd.stderr == "Error: --seed-file has tokens not in the model's vocabulary: '⚡'\n"


def test_standard_input_through_the_installed_command(charrnn_executable, tmp_path, small_corpus):
    text = small_corpus.read_bytes()
    trained = subprocess.run([charrnn_executable, "train", "-", "--steps", "2", *FAST, *NUMPY_BACKEND, "-q"], input=text,
                             cwd=tmp_path, capture_output=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    scored = subprocess.run([charrnn_executable, "eval", "-", "-q"], input=text, cwd=tmp_path, capture_output=True,
                            timeout=120)
    assert scored.returncode == 0 and scored.stdout.startswith(b"2,999 tokens scored, 0 unknown: "), scored.stderr
    both = subprocess.run([charrnn_executable, "train", "-", "--val-file", "-", "--steps", "2"], input=text,
                          cwd=tmp_path, capture_output=True, timeout=120)
    assert both.returncode == 2 and b"standard input (-) can be read only once" in both.stderr


def _sample_held_up_on_a_terminal(command: list[str], cwd, stdout_terminal: bool = False) -> tuple[int, str]:
    """Run ``command`` (a sample) with stderr on a pseudo-terminal, and stdout on another one or on a pipe:
    (exit code, what stderr's terminal showed).

    The sample's reader holds it up for longer than the progress bar's delay: stdout's pipe is shrunk to
    a page, and once text beyond the seed has come (the bar exists by then) nothing is read for 0.6 s,
    while the process waits in its write. How fast the machine samples decides nothing.
    """
    import fcntl
    import pty
    import struct
    import termios

    err_main, err_terminal = pty.openpty()
    fcntl.ioctl(err_terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 100 columns, not 0
    if stdout_terminal:
        out_main, out_end = pty.openpty()
    else:
        out_main, out_end = os.pipe()
        fcntl.fcntl(out_end, 1031, 4096)  # F_SETPIPE_SZ: the smallest pipe, a page
    process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out_end, stderr=err_terminal)
    os.close(err_terminal)
    os.close(out_end)
    shown, received, open_ends = b"", 0, [err_main, out_main]

    def pump(text_bytes: Optional[int]) -> None:
        """Read what the process writes until ``text_bytes`` bytes of its text (one at a time, so as to
        free no room in the pipe), or everything until it ends (None)."""
        nonlocal shown, received
        deadline = time.monotonic() + 120
        while open_ends and (text_bytes is None or received < text_bytes) and time.monotonic() < deadline:
            for fd in select.select(open_ends, [], [], 1)[0]:
                try:
                    chunk = os.read(fd, 1 if fd == out_main and text_bytes is not None else 65536)
                except OSError:  # a terminal's other end closed: the process has ended
                    chunk = b""
                if not chunk:
                    open_ends.remove(fd)
                elif fd == err_main:
                    shown += chunk
                else:
                    received += len(chunk)

    try:
        pump(8)  # more than the seed: text of the first block, so the bar exists
        time.sleep(0.6)  # longer than the bar's delay; no bet on speed: the process cannot go on meanwhile
        pump(None)
        process.wait(timeout=120)
    finally:
        process.kill()
        process.wait()
        for fd in (err_main, out_main):
            os.close(fd)
    return process.returncode, shown.decode("utf-8", "replace")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pseudo-terminals and pipe sizes as Linux has them")
def test_a_long_sample_shows_a_progress_bar_on_a_terminal_unless_its_text_goes_there(charrnn_executable, tmp_path):
    trained = subprocess.run([charrnn_executable, "train", str(REPO / "data" / "tang300.txt"), "--steps", "2",
                              *NUMPY_BACKEND, "--hidden-size", "8", "--batch-size", "4", "--seq-length", "10", "-q"],
                             cwd=tmp_path, capture_output=True, timeout=120)
    assert trained.returncode == 0, trained.stderr
    command = [charrnn_executable, "sample", "--length", "12000"]
    code, shown = _sample_held_up_on_a_terminal(command, tmp_path)
    assert code == 0 and "sampling: " in shown and "12000/12000" in shown, shown
    # Text arriving on a terminal is its own progress: no bar beside it, however long it takes.
    code, shown = _sample_held_up_on_a_terminal(command, tmp_path, stdout_terminal=True)
    assert code == 0 and shown == "using checkpoints/tang300/best.npz\r\n", shown


def test_eval_reports_its_scoring_to_a_progress_bar(workdir, small_corpus, monkeypatch):
    # What the bar shows on a terminal is tqdm's, and the test above sees it drawn for a sample; here,
    # that eval feeds it every token it scores, and hides it under -q.
    import importlib

    from charrnn.cli.common import ProgressBar

    eval_command = importlib.import_module("charrnn.cli.eval_command")  # the module, not the command it defines
    bars = []

    class RecordedBar(ProgressBar):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.reports: list[tuple[int, int]] = []
            bars.append(self)

        def __call__(self, done: int, total: int) -> None:
            self.reports.append((done, total))
            super().__call__(done, total)

    monkeypatch.setattr(eval_command, "ProgressBar", RecordedBar)
    invoke_ok("train", small_corpus, "--steps", "2", *FAST, "--checkpoint-dir", "run", "-q")
    invoke_ok("eval", "run/latest.npz", small_corpus, "--batch-size", "1")
    invoke_ok("eval", "run/latest.npz", small_corpus, "-q")
    shown, quiet = bars
    assert (shown.description, shown.hidden, shown.delay, quiet.hidden) == ("scoring", False, 0.5, True)
    size = small_corpus.stat().st_size  # the text is scored as it is read: the bar counts its bytes
    for bar in bars:
        assert bar.reports[-1] == (size, size) and bar.reports == sorted(bar.reports)


def test_max_seconds_stops_training_validates_saves_and_exits_0(workdir, small_corpus):
    result = invoke("train", small_corpus, "--steps", "1000000", *FAST, "--max-seconds", "0.5", "--json",
                    "--eval-every", "0", "--checkpoint-every", "0", "--log-every", "0")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["out_of_time"] is True and document["interrupted"] is False
    # At least a step: the budget starts just before the first one. No upper bound on the time: that would
    # be a bet on this machine's speed.
    assert 0 < document["steps"] < 1000000 and document["seconds"] >= 0.5
    assert document["val_loss_nats"] is not None  # validated at the end, as at any end
    steps = f"{document['steps']:,} step{'s' if document['steps'] > 1 else ''}"
    assert f"note: --max-seconds reached after {steps} of this run; stopped, validated and saved\n" in result.stderr
    info = json.loads(invoke_ok("info", "checkpoints/poems/latest.npz", "--json").stdout)
    assert info["progress"]["step"] == document["steps"] and info["validation"]["step"] == document["steps"]
    # A per-run setting: a resumed run takes another budget, or none, and may end at its step limit.
    resumed = invoke("train", "--resume", "checkpoints/poems", "--steps", str(document["steps"] + 3), "--max-seconds",
                     "60", "--json", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert again["steps"] == document["steps"] + 3 and again["out_of_time"] is False
    for bad, message in (("0", "--max-seconds must be positive, got 0"), ("nan", "--max-seconds must be a finite number"),
                         ("-1", "--max-seconds must be positive, got -1")):
        refused = invoke("train", small_corpus, "--steps", "3", "--max-seconds", bad, "--checkpoint-dir", "x")
        assert refused.exit_code == 2 and message in refused.stderr, refused.stderr


def test_a_budget_that_ends_before_the_first_step_still_trains_one_and_says_so(workdir, small_corpus):
    # --max-seconds 1e-9 trained 0 steps, wrote nothing, and said "stopped, validated and saved" and
    # "checkpoint None", exit 0 (also when resuming).
    result = invoke("train", small_corpus, "--steps", "100", *FAST, "--max-seconds", "1e-9", "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["steps"], document["steps_this_run"], document["out_of_time"]) == (1, 1, True)
    assert document["checkpoint"] == "checkpoints/poems/latest.npz" and document["val_loss_nats"] is not None
    assert "note: --max-seconds reached after 1 step of this run; stopped, validated and saved\n" in result.stderr
    assert "; checkpoint checkpoints/poems/latest.npz\n" in result.stderr and "None" not in result.stderr
    assert checkpoint.load("checkpoints/poems/latest.npz").progress.step == 1
    resumed = invoke("train", "--resume", "checkpoints/poems", "--max-seconds", "1e-9", "--json")
    assert resumed.exit_code == 0, resumed.stderr
    again = json.loads(resumed.stdout)
    assert (again["steps"], again["steps_this_run"], again["checkpoint"]) == (2, 1, "checkpoints/poems/latest.npz")
    assert "None" not in resumed.stderr
    assert checkpoint.load("checkpoints/poems/latest.npz").progress.step == 2
    # Without validation text the note does not claim a validation.
    unvalidated = invoke("train", small_corpus, "--steps", "100", *FAST, "--max-seconds", "1e-9", "--val-fraction",
                         "0", "--checkpoint-dir", "plain")
    assert unvalidated.exit_code == 0, unvalidated.stderr
    assert "note: --max-seconds reached after 1 step of this run; stopped and saved\n" in unvalidated.stderr


def test_the_summary_line_never_names_a_checkpoint_that_was_not_written():
    from charrnn.cli.training_output import describe_finish, interrupted_line
    from charrnn.training.runner import Finished

    finished = Finished(steps=0, steps_this_run=0, tokens_seen=0, tokens_this_run=0, smoothed_loss_nats=6.0,
                        val_score=None, seconds=0.1, checkpoint_path=None, interrupted=True, out_of_time=False,
                        backend="numpy")
    with contextlib.redirect_stderr(io.StringIO()) as shown:
        describe_finish(finished, quiet=False)
    assert shown.getvalue() == ""  # the interruption's own line says what happened
    assert interrupted_line(finished, None) == "Interrupted before the first step; nothing was saved"


def test_a_time_budget_alone_sets_no_epoch_limit_and_its_resume_asks_for_one(workdir, small_corpus,
                                                                             validation_losses):
    # A --max-seconds run used to stop at the default 50 epochs, long before its budget on a small corpus:
    # 3,000 characters in 16 streams of 50 steps are 3 steps an epoch, 50 epochs 150 steps. Validated every
    # 20 steps, the best comes at step 160 and patience ends the run at step 220, past 50 epochs.
    validation_losses([9.0 - i for i in range(8)], then=2.0)
    options = ["--hidden-size", "8", "--batch-size", "16", "--seq-length", "50", "--eval-every", "20",
               "--sample-every", "0", "--lr-reductions", "0", "--patience", "3", "--backend", "numpy"]
    result = invoke("train", small_corpus, *options, "--max-seconds", "100000", "--checkpoint-dir", "run", "--json", "-q")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["steps"], document["stopped_early"], document["best_step"]) == (220, True, 160)
    recorded = checkpoint.load("run/latest.npz").train_config
    assert (recorded.max_steps, recorded.max_epochs) == (None, None)
    # Its resume has no limit of its own: it asks for one rather than training forever.
    refused = invoke("train", "--resume", "run", "--patience", "0")
    assert_clean_error(refused, 2, "give --steps, --epochs or --max-seconds to say when training stops")
    resumed = invoke("train", "--resume", "run", "--patience", "0", "--steps", "222", "--json", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 222
    # Without a budget the default limit still applies.
    plain = invoke("train", small_corpus, *options, "--checkpoint-dir", "plain", "--json", "-q", "--eval-every", "0")
    assert plain.exit_code == 0, plain.stderr
    assert json.loads(plain.stdout)["steps"] == 150
    assert checkpoint.load("plain/latest.npz").train_config.max_epochs == 50
