"""How a training run ends when it trains nothing, when a signal comes, and what it says then: every line
true, none with -q, and a signal ignored when charrnn starts left ignored."""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import time

import pytest

from charrnn.checkpoints import checkpoint
from charrnn.training import runner
from conftest import TANG300
from test_cli import FAST, assert_clean_error, invoke, invoke_ok


def _trained(small_corpus, folder: str = "run", steps: int = 6):
    result = invoke("train", small_corpus, "--steps", str(steps), *FAST, "--checkpoint-dir", folder, "-q")
    assert result.exit_code == 0, result.stderr
    return os.path.join(folder, "latest.npz")


def test_a_resume_with_nothing_left_to_train_says_so_in_one_line_and_changes_nothing(workdir, small_corpus):
    latest = _trained(small_corpus)
    before = {name: (workdir / "run" / name).read_bytes() for name in os.listdir(workdir / "run")}
    for steps in ("6", "4"):
        result = invoke("train", "--resume", latest, "--steps", steps)
        assert result.exit_code == 0, result.stderr
        assert result.stdout == ""
        assert result.stderr == (f"note: nothing to train: {latest} is at step 6 already, and --steps {steps} counts "
                                 f"from the model's first step (--steps {6 + int(steps)} would train {steps} more)\n")
    # The same with the epochs a model has used up, and in --json: a run of no steps.
    epochs = json.loads(invoke_ok("info", latest, "--json").stdout)["progress"]["epochs"]
    result = invoke("train", "--resume", latest, "--epochs", f"{epochs / 2}", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.stderr.startswith(f"note: nothing to train: {latest} has trained the --epochs ")
    assert len(result.stderr.splitlines()) == 1
    document = json.loads(result.stdout)
    assert document["steps"] == 6 and document["steps_this_run"] == 0 and document["checkpoint"] == latest
    assert invoke_ok("train", "--resume", latest, "--steps", "4", "-q").stderr == ""
    assert {name: (workdir / "run" / name).read_bytes() for name in os.listdir(workdir / "run")} == before


def test_a_new_run_too_short_for_one_step_is_refused(workdir, small_corpus):
    result = invoke("train", small_corpus, "--epochs", "1e-12", *FAST, "--checkpoint-dir", "run")
    assert_clean_error(result, 2, "--epochs 1e-12 is less than one step (")
    assert not list((workdir / "run").glob("*.npz"))


def test_a_signal_before_the_first_step_says_that_nothing_was_saved(workdir, small_corpus, monkeypatch):
    real = runner.run_session

    def signalled_at_once(session, should_stop):
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before the next line: the stop flag is up
        return real(session, should_stop)

    monkeypatch.setattr(runner, "run_session", signalled_at_once)
    fresh = invoke("train", small_corpus, "--steps", "5", *FAST, "--checkpoint-dir", "run")
    assert fresh.exit_code == 143
    assert fresh.stderr.splitlines()[-1] == "Interrupted before the first step; nothing was saved"
    assert "None" not in fresh.stderr and "trained to step" not in fresh.stderr
    assert not list((workdir / "run").glob("*.npz"))

    monkeypatch.setattr(runner, "run_session", real)
    latest = _trained(small_corpus, "run2")
    before = (workdir / latest).read_bytes()
    monkeypatch.setattr(runner, "run_session", signalled_at_once)
    resumed = invoke("train", "--resume", latest, "--steps", "9", "--json")
    assert resumed.exit_code == 143
    assert resumed.stderr.splitlines()[-1] == f"Interrupted before the first step; {latest} is unchanged"
    assert json.loads(resumed.stdout)["steps_this_run"] == 0
    assert (workdir / latest).read_bytes() == before
    quiet = invoke("train", "--resume", latest, "--steps", "9", "-q")
    assert quiet.exit_code == 143 and quiet.stderr == ""


def _wait_for(predicate, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(0.05)


def _long_run(charrnn_executable, tmp_path, *extra, preexec_fn=None):
    """A training run in a subprocess that logs every step to run.jsonl; returns it once it has trained a step."""
    log = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        [charrnn_executable, "train", str(TANG300), "--steps", "1000000", "--hidden-size", "16", "--rng-seed", "1",
         "--sample-every", "0", "--checkpoint-every", "0", "--eval-every", "0", "--log-every", "1",
         "--log-jsonl", str(log), "--checkpoint-dir", "run", *extra],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn,
    )
    _wait_for(lambda: log.exists() and log.read_text(encoding="utf-8").count("\n") >= 1 or process.poll() is not None,
              "the first step")
    assert process.poll() is None, process.communicate()
    return process


def test_quiet_means_quiet_when_sigterm_stops_a_run(charrnn_executable, tmp_path):
    process = _long_run(charrnn_executable, tmp_path, "-q")
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143
    assert (stdout, stderr) == ("", "")
    assert checkpoint.load(str(tmp_path / "run" / "latest.npz")).progress.step >= 1


def test_sigint_ignored_by_the_parent_stays_ignored_while_training(charrnn_executable, tmp_path):
    # As a shell starts `charrnn train ... &` from a script: SIGINT ignored. Ctrl-C at the terminal must
    # not stop it; SIGTERM still does (and saves).
    process = _long_run(charrnn_executable, tmp_path,
                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr
    assert "Interrupted; checkpoint saved to run/latest.npz" in stderr


def test_sigint_ignored_by_the_parent_stays_ignored_while_sampling(charrnn_executable, tmp_path, small_corpus):
    trained = subprocess.run([charrnn_executable, "train", str(small_corpus), "--steps", "2", *FAST, "-q"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    process = subprocess.Popen([charrnn_executable, "sample", "--stream", "--length", "100000000", "-q"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        assert len(process.stdout.read(30)) == 30  # text is flowing
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143 and stderr.decode() == "Error: interrupted by SIGTERM\n"


def _stderr_on_a_terminal(command: list[str], cwd) -> tuple[int, str, str]:
    """Run ``command`` with stderr on a pseudo-terminal 100 columns wide: (exit code, what the terminal
    showed, stdout)."""
    import fcntl
    import pty
    import struct
    import termios

    main, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stderr=terminal, stdout=subprocess.PIPE)
    os.close(terminal)
    shown, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline:
        if select.select([main], [], [], 1)[0]:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other end closed: the process has ended
                break
            if not chunk:
                break
            shown += chunk
    stdout = process.communicate(timeout=120)[0]
    os.close(main)
    return process.returncode, shown.decode("utf-8", "replace"), stdout.decode()


def test_the_finished_progress_bar_shows_the_final_validation(charrnn_executable, tmp_path, small_corpus):
    code, shown, stdout = _stderr_on_a_terminal(
        [charrnn_executable, "train", str(small_corpus), "--steps", "7", *FAST, "--eval-every", "5",
         "--checkpoint-dir", "run", "--json"], tmp_path)
    assert code == 0, shown
    document = json.loads(stdout)
    # Validated at step 5 and at the end (step 7): the bar's last drawing shows step 7's validation.
    drawings = [d for d in re.split(r"[\r\n]+", shown) if "7/7" in d]
    assert drawings, shown
    shown_val = re.search(r"val=(\d+\.\d{3})", drawings[-1])
    assert shown_val is not None, drawings[-1]
    assert shown_val.group(1) == f"{document['val_loss_nats']:.3f}"
    assert f"validation {document['val_loss_nats']:.4f} nats/token" in shown


@pytest.mark.parametrize("args, message", [
    (["train", "corpus.txt", "--steps"], "Option '--steps' requires an argument."),
    (["sample", "--length", "0"], "--length must be positive, got 0"),
    (["sample", "--length"], "Option '--length' requires an argument."),
    (["sample", "--length", "abc"], "Invalid value for '--length': 'abc' is not a valid integer."),
    (["sample", "--bogus"], "No such option '--bogus'."),
    (["eval", "x.npz", "y.txt", "--batch-size", "0"], "--batch-size must be positive, got 0"),
    (["train", "corpus.txt", "--hidden-size", "0"], "--hidden-size must be positive, got 0"),
    (["train"], "give at least one CORPUS file, or --sample-corpus (or --resume a checkpoint)"),
    (["plot", "run.jsonl"], "Missing option '-o' / '--output'."),
    (["trian"], "No such command 'trian'. Did you mean 'train'?"),
    (["--bogus", "info"], "No such option '--bogus'."),
])
def test_every_mistake_on_the_command_line_is_one_error_line(workdir, args, message):
    (workdir / "corpus.txt").write_text("春眠不觉晓，处处闻啼鸟。\n" * 20, encoding="utf-8")
    result = invoke(*args)
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", f"Error: {message}\n")
