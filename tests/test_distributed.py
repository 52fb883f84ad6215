"""Data-parallel training under MPI: real ``mpiexec -n 2 charrnn train`` runs, and the pieces they rest on.

The runs use the mpiexec installed beside the interpreter running the tests (the mpich wheel of the
``mpi`` extra: pip install '.[test,mpi]') and skip, saying why, where there is none. Those that take
longer are marked slow, out of the default run; CI runs them all (.ci/run). Models are
tiny, waits are bounded generously, and nothing is timed. Two processes sum their gradients in another
order than one process does, so models are compared within float32 reduction-order tolerance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from charrnn.config import ModelConfig
from charrnn.errors import ConfigError, TrainingError
from charrnn.inference import scoring
from charrnn.model import network, ops
from charrnn.training import corpus_data, distributed
from conftest import TANG300

# Options of every run here: a tiny model on the numpy backend (the same arithmetic in every process),
# no sampling, a fixed seed.
TINY = ["--hidden-size", "16", "--seq-length", "10", "--backend", "numpy", "--rng-seed", "5", "--sample-every", "0"]
# Generous bounds for a busy 2-core machine: a run that should end takes seconds.
RUN_TIMEOUT_S = 240


def _mpiexec() -> Optional[str]:
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable))


def _mpi_missing() -> Optional[str]:
    """Why the MPI tests cannot run here, or None when they can."""
    if _mpiexec() is None:
        return f"no mpiexec beside {sys.executable}: install the mpi extra (pip install '.[mpi]')"
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed: install the mpi extra (pip install '.[mpi]')"
    return None


needs_mpi = pytest.mark.skipif(_mpi_missing() is not None, reason=str(_mpi_missing()))


def _default_sigint() -> None:
    # Started from a shell's background job, this process may have SIGINT ignored; charrnn keeps an
    # ignored SIGINT ignored, so the runs get the default action back.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items()
            if not name.startswith(("CHARRNN_", "PMI_", "PMIX_", "OMPI_", "MPI_LOCAL"))}


def _start(*commands: list[str], processes: int = 2, cwd: Path, programs: Optional[list[list[str]]] = None,
           folders: Optional[list[Path]] = None) -> subprocess.Popen:
    """``mpiexec -n processes charrnn ...`` (several commands: one process each, MPMD), not waited for.

    With several commands, ``programs`` may start a process with another program than charrnn (an argv
    prefix per command) and ``folders`` give each process its working folder (mpiexec's -wdir), as the
    machines of a cluster each have their own copy of the files.
    """
    charrnn = shutil.which("charrnn", path=os.path.dirname(sys.executable))
    assert charrnn is not None
    line = [_mpiexec()]
    if len(commands) == 1:
        line += ["-n", str(processes), charrnn, *commands[0]]
    else:
        for index, command in enumerate(commands):
            program = programs[index] if programs else [charrnn]
            folder = ["-wdir", str(folders[index])] if folders else []
            line += ([":"] if index else []) + ["-n", "1", *folder, *program, *command]
    return subprocess.Popen(line, cwd=cwd, env=_environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=_default_sigint)


def _mpi(*commands: list[str], processes: int = 2, cwd: Path, programs: Optional[list[list[str]]] = None,
         folders: Optional[list[Path]] = None) -> subprocess.CompletedProcess:
    run = _start(*commands, processes=processes, cwd=cwd, programs=programs, folders=folders)
    stdout, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    return subprocess.CompletedProcess(run.args, run.returncode, stdout, stderr)


def _plain(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    charrnn = shutil.which("charrnn", path=os.path.dirname(sys.executable))
    return subprocess.run([charrnn, *command], cwd=cwd, env=_environment(), capture_output=True, text=True,
                          timeout=RUN_TIMEOUT_S, preexec_fn=_default_sigint)


def _assert_close(a: np.ndarray, b: np.ndarray, name: str, scale: float = 1e-4) -> None:
    """Equal within float32 reduction-order tolerance: no element further from the other than ``scale``
    times the array's largest magnitude (an element near zero differs by as much as a large one)."""
    assert a.shape == b.shape, name
    np.testing.assert_allclose(a, b, rtol=scale, atol=scale * float(np.abs(b).max(initial=1e-30)), err_msg=name)


def _assert_same_model(path_a: Path, path_b: Path) -> None:
    a, b = checkpoint.load(str(path_a)), checkpoint.load(str(path_b))
    assert a.progress.step == b.progress.step and a.progress.position == b.progress.position
    assert a.run_id == b.run_id
    assert sorted(a.params) == sorted(b.params) and sorted(a.hidden) == sorted(b.hidden)
    for name in a.params:
        _assert_close(a.params[name], b.params[name], name)
    for name in a.hidden:
        _assert_close(a.hidden[name], b.hidden[name], name)


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "poems.txt"
    path.write_text(TANG300.read_text(encoding="utf-8")[:6000], encoding="utf-8")
    return path


# --- real runs under mpiexec -----------------------------------------------------------------------------


@needs_mpi
def test_two_processes_train_the_model_one_process_trains(tmp_path, corpus):
    options = [str(corpus), "--steps", "30", "--batch-size", "4", *TINY, "--eval-every", "10", "--json"]
    one = _plain(["train", *options, "--checkpoint-dir", "one"], tmp_path)
    two = _mpi(["train", *options, "--checkpoint-dir", "two"], cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    # The root alone speaks: one --json document, and each line of the run on stderr once.
    summary = json.loads(two.stdout)
    assert summary["processes"] == 2 and summary["steps"] == 30 and summary["tokens"] == 30 * 4 * 10
    assert "note: training on 2 processes of an MPI job, 2 of the 4 streams each" in two.stderr
    assert two.stderr.count("training: rnn") == 1 and "Error" not in two.stderr
    assert json.loads(one.stdout)["processes"] == 1
    _assert_same_model(tmp_path / "one" / "latest.npz", tmp_path / "two" / "latest.npz")
    # Validation was shared between the processes and summed: the same score, the same best step.
    assert summary["best_step"] == json.loads(one.stdout)["best_step"]
    assert summary["val_loss_nats"] == pytest.approx(json.loads(one.stdout)["val_loss_nats"], rel=1e-5)
    assert sorted(os.listdir(tmp_path / "two")) == sorted(os.listdir(tmp_path / "one"))


@needs_mpi
def test_a_batch_that_does_not_split_or_processes_that_disagree_end_every_process_with_exit_2(tmp_path, corpus):
    odd = _mpi(["train", str(corpus), "--steps", "5", "--batch-size", "5", *TINY, "--checkpoint-dir", "odd"],
               cwd=tmp_path)
    assert odd.returncode == 2
    assert odd.stderr == ("Error: --batch-size 5 does not split evenly across 2 processes; use a multiple of 2, "
                          "such as 4 or 6\n")
    # Started with different options: found before any step, and no folder is left behind.
    common = [str(corpus), "--steps", "5", "--batch-size", "4", *TINY, "--checkpoint-dir", "mixed"]
    mixed = _mpi(["train", *common, "--num-layers", "1"], ["train", *common, "--num-layers", "2"], cwd=tmp_path)
    assert mixed.returncode == 2
    assert mixed.stderr.splitlines() == [
        "Error: process 1 of the MPI job was started with other options or other corpus bytes than process 0; "
        "start every process with the same command on the same files"
    ]
    assert not (tmp_path / "mixed").exists() and not (tmp_path / "odd").exists()


@needs_mpi
def test_a_mistake_on_one_process_command_line_ends_every_process_at_once(tmp_path, corpus):
    common = [str(corpus), "--steps", "5", "--batch-size", "4", *TINY, "--checkpoint-dir", "run"]
    run = _mpi(["train", *common], ["train", *common, "--num-layers", "many"], cwd=tmp_path)
    assert run.returncode == 2
    assert "Error: Invalid value for '--num-layers': 'many' is not a valid integer." in run.stderr
    assert "Error: another process of the MPI job could not start training" in run.stderr
    # A corpus that one process cannot read: that process's error, said once by the root.
    missing = _mpi(["train", *common], ["train", str(tmp_path / "absent.txt"), *common[1:]], cwd=tmp_path)
    assert missing.returncode == 2
    lines = missing.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: process 1 of 2 in the MPI job failed: ")
    assert "absent.txt" in lines[0]
    assert not (tmp_path / "run").exists()


@needs_mpi
def test_processes_that_read_other_corpus_bytes_end_with_exit_2_before_any_step(tmp_path, corpus):
    # Two machines, each with its own copy of poems.txt, one of them changed by a character.
    text = corpus.read_text(encoding="utf-8")
    first, second = tmp_path / "machine-a", tmp_path / "machine-b"
    for folder, copy in ((first, text), (second, text.replace("月", "日", 1))):
        folder.mkdir()
        (folder / "poems.txt").write_text(copy, encoding="utf-8")
    command = ["train", "poems.txt", "--steps", "5", "--batch-size", "4", *TINY, "--checkpoint-dir", str(tmp_path / "run")]
    run = _mpi(command, command, cwd=tmp_path, folders=[first, second])
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [
        "Error: process 1 of the MPI job was started with other options or other corpus bytes than process 0; "
        "start every process with the same command on the same files"
    ]
    assert not (tmp_path / "run").exists()
    # The same bytes in both folders: one model, trained.
    (second / "poems.txt").write_text(text, encoding="utf-8")
    same = _mpi(command, command, cwd=tmp_path, folders=[first, second])
    assert same.returncode == 0, same.stderr
    assert checkpoint.load(str(tmp_path / "run" / "latest.npz")).progress.step == 5


@needs_mpi
@pytest.mark.slow
def test_models_that_drift_apart_stop_the_run_with_exit_1_and_the_last_good_checkpoint_kept(tmp_path, corpus):
    command = ["train", str(corpus), "--steps", "40", "--batch-size", "4", *TINY, "--eval-every", "0",
               "--checkpoint-every", "5", "--checkpoint-keep", "0", "--checkpoint-dir", "run"]
    drift = [sys.executable, str(Path(__file__).with_name("drift_after_step.py")), "7"]
    charrnn = shutil.which("charrnn", path=os.path.dirname(sys.executable))
    run = _mpi(command, command, cwd=tmp_path, programs=[[charrnn], drift])
    assert run.returncode == 1, run.stderr
    # Found at the next comparison, the save at step 10, before anything of step 10 was written.
    assert run.stderr.splitlines()[-1] == (
        "Error: the processes no longer hold the same model at step 10 (rank 1 differs from rank 0): their arithmetic "
        "disagrees (different numpy, BLAS or processors?); stopped without saving, the last checkpoint is kept"
    )
    assert sorted(os.listdir(tmp_path / "run")) == ["latest.npz", "step_00000005.npz"]
    kept = checkpoint.load(str(tmp_path / "run" / "latest.npz"))
    assert kept.progress.step == 5
    resumed = _mpi(["train", "--resume", "run", "--steps", "15", "-q", "--json"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == 15


@needs_mpi
def test_a_time_budget_ends_every_process_after_the_same_step(tmp_path, corpus):
    run = _mpi(["train", str(corpus), "--steps", "1000000", "--max-seconds", "2", "--batch-size", "4", *TINY,
                "--eval-every", "0", "--json", "-q", "--checkpoint-dir", "run"], cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["out_of_time"] is True and summary["interrupted"] is False and summary["steps"] >= 1
    # Saved at the step every process stopped after: the gathered hidden state is the whole batch's.
    saved = checkpoint.load(str(tmp_path / "run" / "latest.npz"))
    assert saved.progress.step == summary["steps"]
    assert {state.shape for state in saved.hidden.values()} == {(4, 16)}


@needs_mpi
def test_sigint_to_mpiexec_stops_every_process_after_the_same_step_and_the_root_saves(tmp_path, corpus):
    log = tmp_path / "log.jsonl"
    options = [str(corpus), "--batch-size", "4", *TINY, "--eval-every", "0", "--checkpoint-every", "0"]
    run = _start(["train", *options, "--steps", "100000", "--log-every", "1", "--log-jsonl", str(log), "--json",
                  "--checkpoint-dir", "run"], cwd=tmp_path)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (not log.exists() or len(log.read_text().splitlines()) < 5) and run.poll() is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    run.send_signal(signal.SIGINT)
    stdout, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == 130, stderr
    # MPICH's mpiexec says on stdout that it passes the Ctrl-C on; the document follows.
    summary = json.loads(stdout[stdout.index("{"):])
    assert summary["interrupted"] is True and stderr.count("Interrupted; checkpoint saved to run/latest.npz") == 1
    stopped_at = summary["steps"]
    assert (tmp_path / "run" / f"step_{stopped_at:08d}.npz").exists()
    # Both processes trained every step up to it: the model one process trains in as many steps.
    again = _plain(["train", *options, "--steps", str(stopped_at), "--checkpoint-dir", "one"], tmp_path)
    assert again.returncode == 0, again.stderr
    _assert_same_model(tmp_path / "run" / "latest.npz", tmp_path / "one" / "latest.npz")


@needs_mpi
def test_the_sbatch_script_trains_on_every_task_and_resumes_when_submitted_again(tmp_path, corpus):
    script = Path(__file__).resolve().parent.parent / "scripts" / "train.sbatch"
    env = {
        **_environment(),
        "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
        "LAUNCH": f"{_mpiexec()} -n 2",  # in place of srun: two tasks on this machine
        "CORPUS": str(corpus), "RUN": "run", "HIDDEN_SIZE": "16", "BATCH_SIZE": "4", "STEPS": "6",
        "CHARRNN_TRAIN_SEQ_LENGTH": "10", "CHARRNN_BACKEND": "numpy", "CHARRNN_TRAIN_SAMPLE_EVERY": "0",
    }
    for steps in ("6", "10"):  # a first job, then the next of a chain
        job = subprocess.run(["bash", str(script)], cwd=tmp_path, env={**env, "STEPS": steps}, capture_output=True,
                             text=True, timeout=RUN_TIMEOUT_S, preexec_fn=_default_sigint)
        assert job.returncode == 0, job.stderr
        summary = json.loads(job.stdout[job.stdout.index("{"):])
        assert summary["processes"] == 2 and summary["steps"] == int(steps)
    assert summary["steps_this_run"] == 4
    assert checkpoint.load(str(tmp_path / "run" / "latest.npz")).model_config.hidden_size == 16


@needs_mpi
def test_a_plain_run_never_imports_mpi4py(tmp_path, corpus):
    script = (
        "import sys; from charrnn.cli import main\n"
        f"main(['train', {str(corpus)!r}, '--steps', '2', '--batch-size', '2', '--hidden-size', '8', '-q'], "
        "standalone_mode=False)\n"
        "print('mpi4py' in sys.modules)"
    )
    plain = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=_environment(), capture_output=True,
                           text=True, timeout=RUN_TIMEOUT_S)
    assert plain.stdout.strip().splitlines()[-1] == "False", plain.stderr
    # A launcher's rank variable with CHARRNN_MPI=0: trained alone, without MPI.
    alone = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                           env={**_environment(), "PMI_RANK": "0", "PMI_SIZE": "1", "CHARRNN_MPI": "0"},
                           timeout=RUN_TIMEOUT_S)
    assert alone.stdout.strip().splitlines()[-1] == "False", alone.stderr


@needs_mpi
@pytest.mark.slow
def test_checkpoints_resume_on_another_number_of_processes(tmp_path, corpus):
    options = [str(corpus), "--batch-size", "4", *TINY, "--eval-every", "0", "--checkpoint-every", "0", "-q"]
    whole = _plain(["train", *options, "--steps", "40", "--checkpoint-dir", "whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr
    # 2 processes, then 1, then 2 again: 10 + 15 + 15 steps.
    first = _mpi(["train", *options, "--steps", "10", "--checkpoint-dir", "split"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    second = _plain(["train", "--resume", "split", "--steps", "25", "-q"], tmp_path)
    assert second.returncode == 0, second.stderr
    third = _mpi(["train", "--resume", "split", "--steps", "40", "-q"], cwd=tmp_path)
    assert third.returncode == 0, third.stderr
    _assert_same_model(tmp_path / "whole" / "latest.npz", tmp_path / "split" / "latest.npz")
    # Every checkpoint holds the whole batch's hidden state, whoever wrote it.
    for path in (tmp_path / "split").glob("step_*.npz"):
        assert {state.shape for state in checkpoint.load(str(path)).hidden.values()} == {(4, 16)}


@needs_mpi
@pytest.mark.slow
@pytest.mark.parametrize("direction", [[], ["--bidirectional", "--look-ahead", "4"]], ids=["forward", "bidirectional"])
def test_dropout_draws_the_masks_one_process_would(tmp_path, corpus, direction):
    options = [str(corpus), "--steps", "12", "--batch-size", "4", *TINY, "--num-layers", "2", "--dropout", "0.3",
               *direction, "--eval-every", "6", "-q", "--json"]
    one = _plain(["train", *options, "--checkpoint-dir", "one"], tmp_path)
    two = _mpi(["train", *options, "--checkpoint-dir", "two"], cwd=tmp_path)
    assert one.returncode == 0 and two.returncode == 0, one.stderr + two.stderr
    _assert_same_model(tmp_path / "one" / "latest.npz", tmp_path / "two" / "latest.npz")
    # Validation shared between the processes scores as one process does (the bidirectional look-ahead too).
    assert json.loads(two.stdout)["val_loss_nats"] == pytest.approx(json.loads(one.stdout)["val_loss_nats"], rel=1e-5)


@needs_mpi
@pytest.mark.slow
def test_sigterm_to_mpiexec_ends_every_process_with_143_after_saving(tmp_path, corpus):
    log = tmp_path / "log.jsonl"
    run = _start(["train", str(corpus), "--steps", "100000", "--batch-size", "4", *TINY, "--log-every", "1",
                  "--log-jsonl", str(log), "--checkpoint-dir", "run", "-q"], cwd=tmp_path)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (not log.exists() or len(log.read_text().splitlines()) < 3) and run.poll() is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=RUN_TIMEOUT_S)
    assert run.returncode == 143, stderr
    saved = checkpoint.load(str(tmp_path / "run" / "latest.npz"))
    assert saved.progress.step >= 3 and not (tmp_path / "run" / ".charrnn.lock").exists()


def _rank_process(root_pid: int, rank: int) -> Optional[int]:
    """The pid of the charrnn process of ``rank`` among the descendants of ``root_pid`` (Linux /proc)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environment = Path(f"/proc/{entry}/environ").read_bytes().split(b"\0")
            command = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"PMI_RANK={rank}".encode() in environment and b"charrnn" in command and b"mpiexec" not in command:
            parent = int(entry)
            while parent > 1:  # a descendant of this test's mpiexec, not of another test's
                if parent == root_pid:
                    return int(entry)
                try:
                    parent = int(Path(f"/proc/{parent}/stat").read_text().rsplit(")", 1)[1].split()[1])
                except (OSError, IndexError, ValueError):
                    break
    return None


@needs_mpi
@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the processes of the job in /proc")
def test_a_process_killed_with_sigkill_ends_the_others_and_the_last_checkpoint_resumes(tmp_path, corpus):
    log = tmp_path / "log.jsonl"
    run = _start(["train", str(corpus), "--steps", "100000", "--batch-size", "4", *TINY, "--log-every", "1",
                  "--log-jsonl", str(log), "--checkpoint-every", "5", "--eval-every", "0", "--checkpoint-dir", "run",
                  "-q"], cwd=tmp_path)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while (not log.exists() or len(log.read_text().splitlines()) < 12) and run.poll() is None:
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.05)
    victim = _rank_process(run.pid, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    run.communicate(timeout=RUN_TIMEOUT_S)  # no hang: the launcher ends the others
    print(f"the job ended {time.monotonic() - killed_at:.1f} s after the kill")  # a figure, not an assertion
    assert run.returncode != 0
    latest = checkpoint.load(str(tmp_path / "run" / "latest.npz"))
    resumed = _plain(["train", "--resume", "run", "--steps", str(latest.progress.step + 5), "-q", "--json"],
                     tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"] == latest.progress.step + 5


def test_a_launcher_without_mpi4py_is_one_line_saying_how_to_install_it(tmp_path, corpus):
    # As under mpiexec (its rank variables set) on a machine where mpi4py is missing.
    script = (
        "import sys; sys.modules['mpi4py'] = None\n"  # import mpi4py now raises ImportError
        "from charrnn.cli import main\n"
        f"main(['train', {str(corpus)!r}, '--steps', '2'], prog_name='charrnn')\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                         env={**_environment(), "PMI_RANK": "0", "PMI_SIZE": "2"}, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 2
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: an MPI launcher started this process (it set one of PMI_RANK")
    assert "install it with pip install " in lines[0] and "[mpi]" in lines[0] and "CHARRNN_MPI=0" in lines[0]
    assert run.stdout == "" and not (tmp_path / "checkpoints").exists()


# --- the pieces, in one process -------------------------------------------------------------------------


def test_each_process_gets_a_contiguous_share_of_the_streams_or_one_line_saying_which_sizes_split():
    groups = [distributed.Group(rank, 4) for rank in range(4)]
    assert [distributed.streams_of_rank(8, group) for group in groups] == [slice(0, 2), slice(2, 4), slice(4, 6),
                                                                         slice(6, 8)]
    assert distributed.streams_of_rank(7, distributed.SOLO) == slice(0, 7)
    with pytest.raises(ConfigError, match=r"^--batch-size 10 does not split evenly across 4 processes; use a "
                                          r"multiple of 4, such as 8 or 12$"):
        distributed.streams_of_rank(10, groups[0])
    with pytest.raises(ConfigError, match="such as 4$"):
        distributed.streams_of_rank(3, groups[1])


def test_a_small_corpus_shrinks_the_batch_to_a_multiple_of_the_processes():
    from charrnn.config import TrainConfig

    ids = np.arange(100) % 7
    notes: list[str] = []
    config = TrainConfig(batch_size=64, seq_length=10, val_fraction=0.0, max_steps=1)
    data = corpus_data.prepare_streams(ids, None, config, True, notes, batch_multiple=4)
    assert data.config.batch_size == 8 and data.streams.shape == (8, 12)  # 9 fit; 8 split among 4 processes
    assert notes == ["the corpus is too short for 64 streams of --seq-length 10; using --batch-size 8"]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("window_tokens", [64, scoring.WINDOW_TOKENS])  # a text of several windows, and of one
def test_shares_of_the_validation_streams_add_up_to_the_whole_score(monkeypatch, bidirectional, window_tokens):
    monkeypatch.setattr(scoring, "WINDOW_TOKENS", window_tokens)
    config = ModelConfig(vocab_size=11, hidden_size=6, dtype="float64", bidirectional=bidirectional)
    params = network.init_params(config, np.random.default_rng(0), 0.5)
    ids = np.random.default_rng(1).integers(11, size=203)
    lengths = np.array([1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 1])
    options = dict(batch_size=8, warmup_tokens=10, window=5, look_ahead=3)
    whole = scoring.score_ids(params, config, ids, lengths, **options)
    assert whole.tokens_scored == 202
    for parts in (2, 3, 8, 9):  # 9 parts of 8 streams: one part is empty
        shares = [scoring.score_ids(params, config, ids, lengths, share=(k, parts), **options) for k in range(parts)]
        assert sum(s.tokens_scored for s in shares) == whole.tokens_scored
        assert sum(s.characters_scored for s in shares) == whole.characters_scored
        assert sum(s.total_nats for s in shares) == pytest.approx(whole.total_nats, rel=1e-12)
        assert all(s.tokens_scored < whole.tokens_scored for s in shares)  # each did a part of the work


def test_a_split_batch_draws_the_dropout_masks_of_the_whole_batch():
    config = ModelConfig(vocab_size=9, hidden_size=5, num_layers=2, dropout=0.5, dtype="float64")
    params = network.init_params(config, np.random.default_rng(0), 0.5)
    inputs = np.random.default_rng(1).integers(9, size=(4, 6))
    hidden = network.initial_hidden(config, 6)
    whole = network.loss_and_grads(params, config, inputs, np.roll(inputs, 1, 0), hidden, np.random.default_rng(7))
    rows = slice(2, 4)
    part = network.loss_and_grads(params, config, inputs[:, rows], np.roll(inputs, 1, 0)[:, rows],
                                  {k: v[rows] for k, v in hidden.items()}, np.random.default_rng(7),
                                  dropout_rows=(6, rows))
    np.testing.assert_allclose(part.hidden_last["h.1"], whole.hidden_last["h.1"][rows], rtol=1e-12)


def test_the_exchange_of_one_process_hands_back_its_gradient_and_keeps_the_embedding_sparse():
    config = ModelConfig(vocab_size=9, hidden_size=4, dtype="float64")
    params = network.init_params(config, np.random.default_rng(0), 0.5)
    inputs = np.array([[1, 2], [2, 5]])
    result = network.loss_and_grads(params, config, inputs, inputs[::-1], network.initial_hidden(config, 2))
    votes = iter([0, 130, 0])
    exchange = distributed.GradientExchange(params, distributed.SOLO, lambda: next(votes))
    assert exchange.bytes_per_step == 8 * (network.count_parameters(params) + 2)
    grads, loss = exchange(result.grads, result.loss_nats)
    assert loss == result.loss_nats and exchange.stop_code == 0
    embedding = result.grads["W_xe"]
    assert isinstance(embedding, ops.SparseRows) and isinstance(grads["W_xe"], ops.SparseRows)
    assert grads["W_xe"].rows.tolist() == embedding.rows.tolist() == [1, 2, 5]
    np.testing.assert_array_equal(grads["W_xe"].values, embedding.values)
    np.testing.assert_array_equal(grads["W_hy"], result.grads["W_hy"])
    exchange(result.grads, result.loss_nats)
    assert exchange.stop_code == 130 and exchange.agree() == 130  # a stop once voted stays agreed


def test_only_errors_raised_in_every_process_end_a_job_without_aborting_it():
    group = distributed.SOLO
    with pytest.raises(ConfigError) as raised:
        with distributed.together(group):
            raise ConfigError("bad")
    assert not distributed.raised_together(raised.value)  # one process: nothing was compared
    error = distributed.raise_together(TrainingError("the loss became nan"))
    assert distributed.raised_together(error)
    try:
        try:
            raise error
        except TrainingError:
            raise ConfigError("said differently") from None  # the mark is found behind it
    except ConfigError as converted:
        assert distributed.raised_together(converted)
    assert distributed.exit_code_of(error) == 1 and distributed.exit_code_of(OSError()) == 1
    assert distributed.exit_code_of(ConfigError("x")) == 2
