"""The long fault catalogue (slow): every family of the adversarial campaign, counted.

    python -m pytest -m slow tests/test_fault_catalogue.py

prints one table at the end (cases tried and passed per family, and what failed) and fails if any case
did. Each family also has fast variants in the default run (test_cli_faults, test_checkpoint_faults,
test_corpus_faults, test_folder, test_crash_safety); this module runs them at length:

- command-line cases: every numeric option of every command × values no option should take (NaN, ±inf,
  overflow, underflow, negative, huge, not a number), and the binary codecs as --encoding: each ends
  in exit 0 or exit 2 with one ``Error:`` line, no traceback or warning, and a refused resume leaves
  its checkpoint folder byte for byte as it was;
- crafted checkpoints (tests/crafted_checkpoints.py) × the five commands that read one, in this
  process with a deadline, and a sample of them through the installed command: tracebacks, hangs;
- kill -9 at random moments of runs that save every step: every checkpoint left loads and resumes;
- SIGINT at random moments: exit 130, and the run resumed from what it saved ends with exactly the
  weights of an uninterrupted run;
- kill -9 of a parallel jieba ``prepare``: no worker left running;
- two runs started on one folder: the second refused (exit 2), the first intact;
- a corpus file changed while ``prepare`` reads it: no stale cache entry;
- round two (issue 19): a symbolic link, a named pipe or a device at every path charrnn writes; the
  lock file deleted or replaced during a run; a death (as kill -9) before and after every change to
  the file system of a validating, saving run, fresh or resumed, then a resume of the folder; every
  2-D array stored column-major. (Non-finite and out-of-bound values of every array are variants of
  the crafted-checkpoint families.)
- standard input without an end (`yes |` for up to half a minute) into every command that reads it, each
  child held to a 2 GB address space: one error line and exit 2 where the input must be held (the
  spool, a seed, all of a validation file), a score where it is streamed (eval), never a MemoryError;
- numba's environment (NUMBA_ variables it refuses or cannot parse, cache folders it cannot use) and
  damaged files in its cache: numpy with a note, one error line, or a rebuilt cache, never a traceback;
- SIGINT, SIGTERM, SIGHUP and SIGQUIT at random moments of the start-up of info, export, sample, eval
  and train: one line and 128 + the signal's number (SIGQUIT: a death by it), never a traceback; and
  from the process's very start, where the interpreter's own start (before charrnn's first line) is
  counted apart;
- SIGHUP during training (saved, exit 129, resumes) and SIGHUP or SIGQUIT during export (no
  unfinished write left, the output whole or absent).
"""

from __future__ import annotations

import os
import random
import resource
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from charrnn.checkpoints import checkpoint
from charrnn.data import token_cache
from conftest import NUMPY_BACKEND, TANG300, StderrLines, sigint_at_default
from crafted_checkpoints import iter_crafted_checkpoints, read_checkpoint, with_arrays
from test_checkpoint_faults import _commands, crafted_outcomes, invoke_with_deadline, verdict
from test_cli import FAST, invoke
from test_corpus_faults import _children, _running, _wait_until
from test_crash_safety import _check_survivors, _kill_during_saves, crash_cycle_cases
from test_output_paths import CASES, SPECIALS, WRITTEN_PATHS, can_make_devices, special_path_outcome

pytestmark = pytest.mark.slow

# family -> Counter of outcomes ("passed" or what went wrong), printed at the end of the module.
REPORT: dict[str, Counter] = {}
BAD_VALUES = ["nan", "inf", "-inf", "1e39", "1e308", "1e-310", "-1", "0", "100000000000", "1" + "0" * 30, "abc", ""]
TRAIN_NUMERIC = [
    "--hidden-size", "--num-layers", "--dropout", "--seq-length", "--batch-size", "--learning-rate", "--lr-decay",
    "--lr-decay-after", "--clip", "--steps", "--epochs", "--val-fraction", "--eval-every", "--eval-tokens",
    "--rng-seed", "--sample-every", "--checkpoint-every", "--checkpoint-keep", "--log-every", "--max-vocab",
    "--lr-reductions",
]
# Options a resume may change: tried on a resume, whose folder must not change when they are refused.
CHANGEABLE_ON_RESUME = {"--learning-rate", "--lr-decay", "--lr-decay-after", "--clip", "--steps", "--epochs",
                        "--lr-reductions"}
SAMPLE_NUMERIC = ["--length", "--temperature", "--top-k", "--rng-seed", "--num-samples"]
CODECS = ["rot13", "base64", "hex", "zlib", "bz2", "uu", "quopri", "utf-16", "utf-32", "undefined", "punycode"]


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """Print the catalogue's table once every family has run."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    lines = ["", "fault catalogue", "| family | tried | passed | failed (what) |", "| --- | ---: | ---: | --- |"]
    for family, outcomes in REPORT.items():
        failed = {k: v for k, v in outcomes.items() if k != "passed"}
        lines.append(f"| {family} | {sum(outcomes.values()):,} | {outcomes['passed']:,} | "
                     f"{', '.join(f'{k}: {v}' for k, v in sorted(failed.items())) or '0'} |")
    for line in lines:
        reporter.write_line(line) if reporter else print(line)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(a folder with a trained tiny model, its corpus)."""
    folder = tmp_path_factory.mktemp("trained")
    corpus = folder / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8")[:3000], encoding="utf-8")
    result = invoke("train", corpus, *FAST, "--steps", "3", "--checkpoint-dir", folder / "run", "--cache-dir",
                    folder / "cache")
    assert result.exit_code == 0, result.stderr
    return folder, corpus


def _command_line_cases(folder: Path, corpus: Path) -> list[tuple[str, list, bool]]:
    """(name, arguments, whether it resumes the trained folder) for every case of the family."""
    run, cache = folder / "run", folder / "cache"
    cases = []
    for option in TRAIN_NUMERIC:
        for value in BAD_VALUES:
            if option in ("--steps", "--epochs") and value in ("100000000000", "1e39", "1e308"):
                continue  # valid: a run of that length would just train (for days)
            if option in CHANGEABLE_ON_RESUME:
                cases.append((f"train --resume {option} {value}",
                              ["train", "--resume", run / "latest.npz", option, value, "--cache-dir", cache], True))
            else:
                out = folder / f"new{len(cases)}"
                cases.append((f"train {option} {value}", ["train", corpus, *FAST, "--steps", "2", option, value,
                                                          "--checkpoint-dir", out, "--cache-dir", cache], False))
    for option in SAMPLE_NUMERIC:
        for value in BAD_VALUES:
            if option == "--length" and value == "100000000000":
                continue  # valid: sample writes as it generates, so it would just generate (for days)
            cases.append((f"sample {option} {value}", ["sample", "-c", run / "latest.npz", "--length", "5", option,
                                                      value], False))
    for value in BAD_VALUES:
        cases.append((f"eval --batch-size {value}", ["eval", run / "latest.npz", corpus, "--batch-size", value], False))
        cases.append((f"prepare --workers {value}", ["prepare", corpus, "--workers", value, "--cache-dir", cache],
                      False))
        cases.append((f"prepare --max-vocab {value}", ["prepare", corpus, "--max-vocab", value, "--cache-dir", cache],
                      False))
    for codec in CODECS:
        cases.append((f"train --encoding {codec}", ["train", corpus, *FAST, "--steps", "2", "--encoding", codec,
                                                    "--checkpoint-dir", folder / f"new{len(cases)}",
                                                    "--cache-dir", cache], False))
        cases.append((f"eval --encoding {codec}", ["eval", run / "latest.npz", corpus, "--encoding", codec], False))
    return cases


def _command_line_verdict(run) -> str:
    """As test_checkpoint_faults.verdict, but a usage error may show click's usage lines above its one
    ``Error:`` line (the last line is what scripts read)."""
    result = run.result
    outcome = verdict(run)
    lines = result.stderr.strip().splitlines()
    if (outcome == "unclean" and result.exit_code == 2 and not result.stdout and lines[0].startswith("Usage: ")
            and lines[-1].startswith("Error: ") and sum(line.startswith("Error: ") for line in lines) == 1):
        return "error"
    return outcome


def test_command_line_cases(trained):
    folder, corpus = trained
    outcomes: Counter = Counter()
    for name, args, resumes in _command_line_cases(folder, corpus):
        before = _snapshot(folder / "run")
        outcome = _command_line_verdict(invoke_with_deadline(args))
        if outcome not in ("ok", "error"):
            outcomes[f"{outcome} ({name})"] += 1
        elif resumes and outcome == "error" and _snapshot(folder / "run") != before:
            outcomes["refused but changed the folder"] += 1
        else:
            outcomes["passed"] += 1
        if resumes and outcome == "ok":  # put the folder back for the next case
            for path in (folder / "run").iterdir():
                path.unlink()
            for name_, data in before.items():
                (folder / "run" / name_).write_bytes(data)
    REPORT["command-line cases"] = outcomes
    assert sum(outcomes.values()) > 300 and outcomes["passed"] == sum(outcomes.values()), outcomes


def test_the_command_line_catalogue_is_what_it_says(trained):
    folder, corpus = trained
    names = [name for name, _, _ in _command_line_cases(folder, corpus)]
    assert len(names) == len(set(names)) == 363


def test_crafted_checkpoints_through_every_command(trained, tmp_path):
    folder, corpus = trained
    outcomes = crafted_outcomes(folder / "run" / "latest.npz", corpus, tmp_path)
    counts = Counter("passed" if key[2] in ("ok", "error", "failed") else key[2] for key in outcomes.elements())
    REPORT["crafted checkpoints × 5 commands (in process)"] = counts
    assert counts["passed"] == sum(counts.values()) > 5 * 1300, counts


def test_a_sample_of_crafted_checkpoints_through_the_installed_command(charrnn_executable, trained, tmp_path):
    folder, corpus = trained
    variants = list(iter_crafted_checkpoints(str(folder / "run" / "latest.npz"), str(tmp_path / "marker")))
    outcomes: Counter = Counter()
    for index, (name, data) in enumerate(random.Random(3).sample(variants, 60)):
        path = tmp_path / f"{index}.npz"
        path.write_bytes(data)
        for args in _commands(path, corpus, tmp_path / f"out{index}").values():
            try:
                run = subprocess.run([charrnn_executable, *map(str, args)], capture_output=True, text=True,
                                     timeout=120, cwd=tmp_path)
            except subprocess.TimeoutExpired:
                outcomes["hang"] += 1
                continue
            lines = run.stderr.splitlines()
            if "Traceback" in run.stderr:
                outcomes["traceback"] += 1
            elif "Warning" in run.stderr:
                outcomes["warning"] += 1
            elif run.returncode == 0 or (run.returncode in (1, 2) and lines and lines[-1].startswith("Error: ")
                                          and not run.stdout):
                outcomes["passed"] += 1
            else:
                outcomes[f"exit {run.returncode}"] += 1
    assert not (tmp_path / "marker").exists(), "a pickle payload ran"
    REPORT["crafted checkpoints × 5 commands (installed command, 60 variants)"] = outcomes
    assert outcomes["passed"] == sum(outcomes.values()) == 300, outcomes


def test_kill_9_during_saves(charrnn_executable, tmp_path, small_corpus):
    survivors = _kill_during_saves(charrnn_executable, tmp_path, small_corpus, trials=30, seed=11)
    _check_survivors(charrnn_executable, tmp_path, survivors)  # raises on the first that does not load
    REPORT["kill -9 during saves (30 runs): checkpoints left, all load and resume"] = Counter(passed=len(survivors))


def test_sigint_at_random_moments_then_resume_equals_an_uninterrupted_run(charrnn_executable, tmp_path, small_corpus):
    common = [str(small_corpus), *FAST, "--eval-every", "0", "--steps", "20000"]
    whole = subprocess.run([charrnn_executable, "train", *common, "-q", "--checkpoint-dir", "whole"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=900)  # minutes on a loaded 2-core machine
    assert whole.returncode == 0, whole.stderr
    expected = checkpoint.load(str(tmp_path / "whole" / "latest.npz"))
    chooser = random.Random(5)
    outcomes: Counter = Counter()
    for trial in range(10):
        folder = f"part{trial}"
        # A random step of the first 2,000, and a random moment after it: the run is then still far from
        # its end, whatever the machine's speed.
        step = chooser.randrange(1, 2000)
        process = subprocess.Popen([charrnn_executable, "train", *common, "--log-every", "1", "--checkpoint-dir",
                                    folder],
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=sigint_at_default)
        stderr = StderrLines(process)
        try:
            stderr.wait_for(lambda line: line.startswith(f"step {step:,}/"), f"step {step:,}", timeout=600)
            time.sleep(chooser.uniform(0.0, 0.05))
            process.send_signal(signal.SIGINT)
            process.wait(timeout=120)
        finally:
            process.kill()
            process.wait()
        if process.returncode != 130:
            outcomes[f"exit {process.returncode}"] += 1
            continue
        # The same schedule as the uninterrupted run (validation is a schedule setting, free on resume,
        # and a validating run may stop early).
        resumed = subprocess.run([charrnn_executable, "train", "--resume", f"{folder}/latest.npz", "--steps", "20000",
                                  "--eval-every", "0", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=900)
        got = checkpoint.load(str(tmp_path / folder / "latest.npz"))
        same = resumed.returncode == 0 and all(np.array_equal(got.params[n], expected.params[n]) for n in got.params)
        outcomes["passed" if same else "resumed run differs"] += 1
    REPORT["SIGINT at a random moment, then resume == uninterrupted"] = outcomes
    assert outcomes == Counter(passed=10), outcomes


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds worker processes in /proc")
def test_kill_9_of_a_parallel_prepare_leaves_no_worker(charrnn_executable, tmp_path):
    corpus = tmp_path / "big.txt"
    text = TANG300.read_text(encoding="utf-8")
    corpus.write_text(text * (5_000_000 // len(text.encode("utf-8")) + 1), encoding="utf-8")
    outcomes: Counter = Counter()
    for trial in range(4):
        parent = subprocess.Popen([charrnn_executable, "prepare", str(corpus), "--tokenizer", "jieba", "--workers",
                                   "2", "--cache-dir", str(tmp_path / f"cache{trial}"), "-q"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        assert _wait_until(lambda: len(_children(parent.pid)) >= 2, 120), "the workers never started"
        workers = _children(parent.pid)
        parent.kill()
        parent.wait(timeout=120)
        orphaned = not _wait_until(lambda: not any(_running(w) for w in workers), 60)
        for worker in workers:
            if _running(worker):
                os.kill(worker, signal.SIGKILL)
        outcomes["orphaned workers" if orphaned else "passed"] += 1
    REPORT["kill -9 of prepare --workers 2"] = outcomes
    assert outcomes == Counter(passed=4), outcomes


def test_two_runs_started_on_one_folder(charrnn_executable, tmp_path, small_corpus):
    outcomes: Counter = Counter()
    for trial in range(5):
        command = [charrnn_executable, "train", str(small_corpus), *FAST, *NUMPY_BACKEND, "--steps", "200",
                   "--checkpoint-dir",
                   f"run{trial}", "-q", "--eval-every", "0"]
        runs = [subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
        results = sorted((run.wait(timeout=300), run.stderr.read()) for run in runs)
        for run in runs:
            run.stderr.close()
        codes = [code for code, _ in results]
        refused = results[1][1].strip().splitlines()[-1:] if codes == [0, 2] else []
        intact = checkpoint.load(str(tmp_path / f"run{trial}" / "latest.npz")).progress.step == 200
        # Both may also succeed one after the other, the second refused by the first's checkpoint.
        ok = codes == [0, 2] and intact and refused and (
            "is in use by another charrnn run (process" in refused[0] or "already holds a checkpoint" in refused[0])
        outcomes["passed" if ok else f"exits {codes}, step {'200' if intact else 'not 200'}: {results[1][1].strip()[-200:]}"] += 1
    REPORT["two runs started on one folder"] = outcomes
    assert outcomes == Counter(passed=5), outcomes


def test_a_corpus_changed_while_prepare_reads_it(tmp_path, monkeypatch):
    outcomes: Counter = Counter()
    text = TANG300.read_text(encoding="utf-8")
    for trial in range(5):
        corpus, cache = tmp_path / f"c{trial}.txt", tmp_path / f"cache{trial}"
        corpus.write_text(text, encoding="utf-8")
        original = token_cache._copy

        def change_after_hashing(source, out, check_head=bool, *args, path=corpus, keep=len(text) // (trial + 2),
                                 **kwargs):
            result = original(source, out, check_head, *args, **kwargs)
            path.write_text(text[:keep], encoding="utf-8")  # truncated between the hash and the read
            return result

        with monkeypatch.context() as patch:
            patch.setattr(token_cache, "_copy", change_after_hashing)
            try:
                token_cache.prepare([str(corpus)], cache_dir=str(cache))
                outcomes["served the changed file"] += 1
                continue
            except Exception as exc:  # noqa: BLE001 - the refusal is what is expected
                refused = "changed while being read" in str(exc)
        fresh = token_cache.prepare([str(corpus)], cache_dir=str(cache))
        matches = len(fresh.ids) == len(corpus.read_text(encoding="utf-8")) and not fresh.from_cache
        outcomes["passed" if refused and matches else "stale entry served"] += 1
    REPORT["corpus changed during prepare"] = outcomes
    assert outcomes == Counter(passed=5), outcomes


# --- round two (issue 19): written paths, the lock, the save/best cycle, loaded arrays ---------------


def test_links_pipes_and_devices_at_every_written_path(tmp_path, small_corpus):
    outcomes: Counter = Counter()
    for index, (written, special) in enumerate(CASES):
        if special == "device" and not can_make_devices():
            continue
        outcome = special_path_outcome(written, special, tmp_path / f"case{index}", small_corpus)
        outcomes["passed" if outcome == "passed" else f"{written.name}, {special}: {outcome}"] += 1
    REPORT[f"links, pipes and devices at every written path ({len(WRITTEN_PATHS)} paths × {len(SPECIALS)} kinds)"] = (
        outcomes)
    assert outcomes["passed"] == sum(outcomes.values()) >= len(WRITTEN_PATHS) * (len(SPECIALS) - 1), outcomes


def _lock_trial(charrnn_executable: str, cwd: Path, corpus: Path, how: str) -> str:
    """A run saving every step loses its lock file (deleted, or replaced by another file) and a second run
    resumes the folder at once: the first must stop with exit 1 before its next write."""
    common = ["--backend", "numpy", "--eval-every", "0", "-q"]
    first = subprocess.Popen([charrnn_executable, "train", str(corpus), *FAST, "--steps", "1000000",
                              "--checkpoint-every", "1", "--checkpoint-dir", "run", *common],
                             cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock = cwd / "run" / ".charrnn.lock"
        assert _wait_until(lambda: (cwd / "run" / "latest.npz").exists(), 120), "the first run never saved"
        if how == "deleted":
            lock.unlink()
        else:
            (cwd / "run" / "other.lock").write_text("12345\n")
            os.replace(cwd / "run" / "other.lock", lock)
        second = subprocess.run([charrnn_executable, "train", "--resume", "run", "--steps", "1000000",
                                 "--max-seconds", "2", *common], cwd=cwd, capture_output=True, text=True, timeout=300)
        _, first_stderr = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    if first.returncode != 1 or "was removed or replaced while this run held it" not in first_stderr:
        return f"first run: exit {first.returncode}: {first_stderr.strip()[-200:]}"
    refused_as_later = second.returncode == 2 and "holds a later checkpoint of this run" in second.stderr
    if second.returncode != 0 and not refused_as_later:
        return f"second run: exit {second.returncode}: {second.stderr.strip()[-200:]}"
    final = subprocess.run([charrnn_executable, "train", "--resume", "run", "--max-seconds", "0.5", "--steps",
                            "1000000", *common], cwd=cwd, capture_output=True, text=True, timeout=300)
    if final.returncode != 0:
        return f"resuming afterwards: exit {final.returncode}: {final.stderr.strip()[-200:]}"
    for path in (cwd / "run").glob("*.npz"):
        checkpoint.load(str(path))
    leftovers = [n for n in os.listdir(cwd / "run") if n.endswith(".tmp") or n == ".charrnn.lock"]
    return f"left {leftovers}" if leftovers else "passed"


def test_a_lock_file_deleted_or_replaced_during_a_run(charrnn_executable, tmp_path, small_corpus):
    outcomes: Counter = Counter()
    for trial, how in enumerate(["deleted", "replaced"] * 3):
        cwd = tmp_path / f"trial{trial}"
        cwd.mkdir()
        outcome = _lock_trial(charrnn_executable, cwd, small_corpus, how)
        outcomes["passed" if outcome == "passed" else f"{how}: {outcome}"] += 1
    REPORT["lock file deleted or replaced during a run, a second run resumes at once: the first stops (exit 1)"] = (
        outcomes)
    assert outcomes == Counter(passed=6), outcomes


@pytest.mark.parametrize("resumed", [False, True], ids=["fresh run", "resumed run"])
def test_a_death_at_every_change_of_the_save_best_cycle(tmp_path, small_corpus, resumed):
    changes, case = crash_cycle_cases(tmp_path, small_corpus, resumed)
    # Just before a temporary file is made the folder is as just after the change before it: not tried twice.
    points = [(index, when) for index, kind in enumerate(changes, 1) for when in ("before", "after")
              if when == "after" or kind != "mkstemp" or index == 1]
    outcomes: Counter = Counter()
    for die_at, when in points:
        outcome = case(die_at, when)
        outcomes["passed" if outcome == "passed" else f"{when} change {die_at} ({changes[die_at - 1]}): {outcome}"] += 1
    what = "a resumed run" if resumed else "a fresh run"
    REPORT[f"death (as kill -9) just before and after each of the {len(changes)} file changes of {what} that "
           "validates and saves; then resume from the folder: exit 0, best.npz never worse, nothing left over"] = (
        outcomes)
    assert outcomes["passed"] == sum(outcomes.values()) == len(points), outcomes


def test_every_array_stored_column_major_trains_like_row_major(tmp_path, small_corpus):
    folder = tmp_path / "source"
    trained = invoke("train", small_corpus, *FAST, "--steps", "2", "--checkpoint-dir", folder, "--cache-dir",
                     tmp_path / "cache", "--eval-every", "0", "-q")
    assert trained.exit_code == 0, trained.stderr
    source = read_checkpoint(str(folder / "latest.npz"))

    def resumed(name: str, data: bytes) -> checkpoint.Checkpoint:
        start = tmp_path / name / "start.npz"
        start.parent.mkdir()
        start.write_bytes(data)
        result = invoke("train", "--resume", start, "--steps", "4", "--cache-dir", tmp_path / "cache", "--backend",
                        "numpy", "-q")
        assert result.exit_code == 0, result.stderr
        return checkpoint.load(str(start.parent / "latest.npz"))

    expected = resumed("row-major", source.data)
    outcomes: Counter = Counter()
    for name, array in source.arrays.items():
        if array.ndim != 2 or name == "meta":
            continue
        got = resumed(name, with_arrays(source, {name: np.asfortranarray(array)}))
        same = all(np.array_equal(getattr(got, group)[key], value)
                   for group in ("params", "optimizer_state", "hidden")
                   for key, value in getattr(expected, group).items())
        outcomes["passed" if same else f"{name} trained differently"] += 1
    REPORT["each 2-D array stored column-major: resumed, trains exactly like row-major"] = outcomes
    assert outcomes["passed"] == sum(outcomes.values()) >= 7, outcomes
# --- issue 19: unbounded input, numba's environment and cache, signals during start-up, SIGHUP ---

MEMORY_LIMIT_BYTES = 2 << 30  # each child's address space in the unbounded-input family
FEED_SECONDS = 30  # how long standard input flows at most


def _child_setup(memory_limit=None):
    """preexec_fn: SIGINT at its default disposition (the test runner may have been started with it
    ignored, which a child would inherit and keep), and an address-space limit if given."""
    def setup() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if memory_limit:
            resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    return setup


def _traceback_or_warning(stderr: str) -> str:
    if "MemoryError" in stderr:
        return "MemoryError"
    if "Traceback" in stderr:
        return "traceback"
    if "Warning" in stderr:
        return "warning"
    return ""


def _run_with_endless_input(charrnn_executable, cwd, args, pattern: str, seconds: float = FEED_SECONDS):
    """Run charrnn with ``pattern`` flowing into its standard input for ``seconds`` (or until it stops
    reading), held to MEMORY_LIMIT_BYTES: (exit code or "hang", stdout, stderr, bytes fed)."""
    process = subprocess.Popen([charrnn_executable, *map(str, args)], cwd=cwd, stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               preexec_fn=_child_setup(MEMORY_LIMIT_BYTES))
    block = pattern.encode("utf-8") * max(1, (1 << 16) // len(pattern.encode("utf-8")))
    fed = [0]

    def feed() -> None:
        ends = time.monotonic() + seconds
        try:
            while time.monotonic() < ends:
                process.stdin.write(block)
                fed[0] += len(block)
        except (BrokenPipeError, ValueError, OSError):
            pass  # it stopped reading
        finally:
            try:
                process.stdin.close()
            except OSError:
                pass

    # Not communicate(), which closes standard input as it starts.
    outputs: dict = {}
    threads = [threading.Thread(target=feed, daemon=True)] + [
        threading.Thread(target=lambda name=name, stream=stream: outputs.update({name: stream.read()}), daemon=True)
        for name, stream in (("stdout", process.stdout), ("stderr", process.stderr))]
    for thread in threads:
        thread.start()
    try:
        process.wait(timeout=seconds + 600)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return "hang", "", "", fed[0]
    finally:
        for thread in threads:
            thread.join(30)
    text = {name: outputs.get(name, b"").decode("utf-8", "replace") for name in ("stdout", "stderr")}
    return process.returncode, text["stdout"], text["stderr"], fed[0]


def test_standard_input_without_an_end_into_every_command_that_reads_it(charrnn_executable, trained, tmp_path):
    folder, corpus = trained
    ckpt = folder / "run" / "latest.npz"
    known = corpus.read_text(encoding="utf-8").splitlines()[3] + "\n"  # a line of the corpus, in its vocabulary
    cache = tmp_path / "cache"
    cases = [  # (name, arguments, pattern, expected exit, what its last line says)
        ("yes | train -", ["train", "-", *FAST, "--steps", "1", "--spool-limit-mb", "200", "--cache-dir", cache,
                           "--checkpoint-dir", tmp_path / "a"], "y\n", 2, "--spool-limit-mb 200 (MB)"),
        ("prepare - (Chinese)", ["prepare", "-", "--spool-limit-mb", "300", "--cache-dir", cache], known, 2,
         "--spool-limit-mb 300 (MB)"),
        ("yes | sample --seed-file -", ["sample", "-c", ckpt, "--seed-file", "-"], "y\n", 2,
         "--seed-file standard input is longer than 1,000,000 characters"),
        ("sample --seed-file - (Chinese)", ["sample", "-c", ckpt, "--seed-file", "-"], known, 2,
         "--seed-file standard input is longer than 1,000,000 characters"),
        ("yes | train --val-file - --eval-tokens 0", ["train", corpus, *FAST, "--steps", "1", "--val-file", "-",
                                                      "--eval-tokens", "0", "--cache-dir", cache, "--checkpoint-dir",
                                                      tmp_path / "b"], "y\n", 2, "Error: --val-file standard input"),
        ("train --val-file - --eval-tokens 0 (Chinese)", ["train", corpus, *FAST, "--steps", "1", "--val-file", "-",
                                                          "--eval-tokens", "0", "--cache-dir", cache,
                                                          "--checkpoint-dir", tmp_path / "c"], known, 2,
         "holds more than 50,000,000 tokens"),
        ("train --val-file - (reads what --eval-tokens needs)", ["train", corpus, *FAST, "--steps", "1", "--val-file",
                                                                 "-", "--eval-tokens", "2000", "--cache-dir", cache,
                                                                 "--checkpoint-dir", tmp_path / "d"], known, 0,
         "trained to step"),
        # eval reads only as fast as it scores: a second of text (a 4 MB chunk or two) proves the point,
        # and scoring it takes long enough (before, it would have read gigabytes in that time).
        ("eval - (scored as it is read)", ["eval", ckpt, "-"], known, 0, None),
        ("yes | eval -", ["eval", ckpt, "-"], "y" * 99 + "\n", 0, None),
    ]
    outcomes: Counter = Counter()
    for name, args, pattern, expected, says in cases:
        # eval reads as fast as it scores: ten seconds of text is plenty, and takes minutes to score.
        code, stdout, stderr, fed = _run_with_endless_input(charrnn_executable, tmp_path, args, pattern,
                                                            1 if args[0] == "eval" else FEED_SECONDS)
        lines = stderr.strip().splitlines()
        problem = _traceback_or_warning(stderr) or ("hang" if code == "hang" else "")
        if not problem and code != expected:
            problem = f"exit {code}"
        if not problem and expected == 2 and not (len(lines) == 1 and lines[0].startswith("Error: ") and says in lines[0]):
            problem = "not one error line"
        if not problem and expected == 0 and says is None and not stdout.count("\n") == 1:
            problem = "no score"
        if not problem and says is not None and expected == 0 and says not in stderr:
            problem = "did not finish"
        if not problem and _temporaries_in(cache):
            problem = "leftover temporaries"
        outcomes[f"{problem} ({name})" if problem else "passed"] += 1
    REPORT["standard input without an end (2 GB address space)"] = outcomes
    assert outcomes == Counter(passed=len(cases)), outcomes


def _temporaries_in(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] if folder.is_dir() else []


def _damage_numba_cache(cache: Path, kind: str) -> int:
    """Damage every file of ``kind`` in a numba cache folder; returns how many."""
    index = sorted(cache.rglob("*.nbi"))
    data = sorted(cache.rglob("*.nbc"))
    damage = {
        "random index": (index, lambda p: p.write_bytes(os.urandom(40))),
        "empty index": (index, lambda p: p.write_bytes(b"")),
        "truncated index": (index, lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])),
        "random data": (data, lambda p: p.write_bytes(os.urandom(200))),
        "truncated data": (data, lambda p: p.write_bytes(p.read_bytes()[:-7])),
    }[kind]
    files, change = damage
    snapshot = [(p, p.read_bytes()) for p in files]
    for path, _ in snapshot:
        change(path)
    return len(snapshot)


def test_numba_environment_and_cache_damage(charrnn_executable, trained, tmp_path):
    from charrnn.model import backend

    if backend.select("auto").name != "numba":
        pytest.skip("numba is not installed")
    folder, corpus = trained
    ckpt = folder / "run" / "latest.npz"
    outcomes: Counter = Counter()

    def run(name, args, environment, expected_codes=(0,), expected_notes=None) -> None:
        result = subprocess.run([charrnn_executable, *map(str, args)], cwd=tmp_path, capture_output=True, text=True,
                                env={**os.environ, **environment}, timeout=900, preexec_fn=_child_setup())
        lines = result.stderr.strip().splitlines()
        problem = _traceback_or_warning(result.stderr)
        if not problem and result.returncode not in expected_codes:
            problem = f"exit {result.returncode}: {lines[-1:] }"
        if not problem and result.returncode == 2 and not (len(lines) == 1 and lines[0].startswith("Error: ")):
            problem = "not one error line"
        notes = [line for line in lines if line.startswith("note: ") and "numba" in line]
        if not problem and expected_notes is not None and len(notes) != expected_notes:
            problem = f"{len(notes)} notes"
        outcomes[f"{problem} ({name})" if problem else "passed"] += 1

    commands = {
        "train": ["train", corpus, *FAST, "--steps", "3", "--cache-dir", tmp_path / "cache", "--checkpoint-dir"],
        "eval": ["eval", ckpt, corpus],
    }

    def command(name: str, trial: str) -> list:
        return commands[name] + ([tmp_path / f"run-{trial}"] if name == "train" else [])

    unusable = tmp_path / "a-file"
    unusable.write_text("not a folder")
    environments = [
        ({"NUMBA_NUM_THREADS": "0"}, (0,), 1), ({"NUMBA_NUM_THREADS": "-1"}, (0,), 1),
        ({"NUMBA_NUM_THREADS": "abc"}, (0,), 1), ({"NUMBA_NUM_THREADS": "100000"}, (0,), None),
        ({"NUMBA_OPT": "9"}, (0,), 1), ({"NUMBA_OPT": "fast"}, (0,), 1), ({"NUMBA_BOUNDSCHECK": "maybe"}, (0,), 1),
        ({"NUMBA_CACHE_DIR": "/dev/null"}, (0,), 0), ({"NUMBA_CACHE_DIR": str(unusable)}, (0,), 0),
        ({"NUMBA_CACHE_DIR": "/proc/no/such"}, (0,), 0), ({"NUMBA_THREADING_LAYER": "nonsense"}, (0,), 0),
    ]
    for index, (environment, codes, notes) in enumerate(environments):
        # Both commands where numba refuses to start or to read a value; eval alone for the rest.
        for name in commands if index < 5 else ["eval"]:
            label = f"{name} with {' '.join(f'{k}={v}' for k, v in environment.items())}"
            run(label, command(name, f"env{index}"), environment, codes, notes)
    # Asking for numba by name when it cannot start: one error line naming the variable, exit 2.
    for threads in ("0", "-1"):
        run(f"eval --backend numba with NUMBA_NUM_THREADS={threads}", [*commands["eval"], "--backend", "numba"],
            {"NUMBA_NUM_THREADS": threads}, (2,))
    # A cache of its own, filled, then damaged in every way: one note, the same result, and healed after.
    cache = tmp_path / "numba-cache"
    for name in commands:
        run(f"{name}, filling the cache", command(name, "fill"), {"NUMBA_CACHE_DIR": str(cache)}, (0,), 0)
    # Damage, not tampering: a data file swapped for another kernel's is a valid pickle that numba would
    # run as that kernel. The folder must be private to the user (docs/performance.md), as numba's is.
    kinds = ["random index", "empty index", "truncated index", "random data", "truncated data"]
    for index, kind in enumerate(kinds):
        name = "train" if index % 2 else "eval"
        damaged = _damage_numba_cache(cache, kind)
        assert damaged, "numba wrote no cache"
        run(f"{name} with a damaged cache ({kind})", command(name, f"cache{index}"), {"NUMBA_CACHE_DIR": str(cache)},
            (0,), 1)
        run(f"{name} after it ({kind}): healed", command(name, f"healed{index}"), {"NUMBA_CACHE_DIR": str(cache)},
            (0,), 0)
    REPORT["numba's environment and damaged cache files"] = outcomes
    assert outcomes["passed"] == sum(outcomes.values()), outcomes


def _catches_sighup(pid: int) -> bool:
    """Whether charrnn's entry point has run: it catches SIGHUP, which Python leaves alone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            mask = next(line.split(":", 1)[1] for line in f if line.startswith("SigCgt:"))
        return bool(int(mask, 16) & (1 << (signal.SIGHUP - 1)))
    except (OSError, StopIteration):
        return False


def _startup_args(ckpt: Path, corpus: Path, work: Path, command: str) -> list:
    return {"info": ["info", ckpt], "export": ["export", ckpt, "-o", work / "m.npz"],
            "sample": ["sample", "-c", ckpt, "--length", "50"], "eval": ["eval", ckpt, corpus],
            "train": ["train", corpus, *FAST, "--steps", "5", "-q", "--cache-dir", work / "cache",
                      "--checkpoint-dir", work / "run"]}[command]


def _signal_outcome(process: subprocess.Popen, number: int, stderr: str, work: Path) -> str:
    lines = stderr.strip().splitlines()
    expected = -signal.SIGQUIT if number == signal.SIGQUIT else 128 + number
    leftovers = [p.name for p in work.rglob("*") if p.name.endswith(".tmp")]
    if leftovers:
        return "leftover temporaries"
    if process.returncode == 0:
        return "finished first"
    if process.returncode == -number and not stderr.strip():
        # Killed by the signal's default action (SIGQUIT: a core dump), before any handler was installed.
        return "in Python's own start-up, before charrnn's first line"
    if "Traceback" in stderr:
        # Before charrnn's first line, the interpreter's own start (its site module, the console script's
        # first import) is Python's to handle: counted apart, as no frame is charrnn's.
        package = os.sep + "charrnn" + os.sep
        return "traceback" if package in stderr else "in Python's own start-up, before charrnn's first line"
    if process.returncode != expected:
        return f"exit {process.returncode}"
    name = signal.Signals(number).name
    if lines == [f"Error: interrupted by {name}"]:
        return "passed"
    if lines and lines[-1] == f"Error: interrupted by {name}" and all(not line.startswith("Error") for line in lines[:-1]):
        return "passed"  # its informational lines first (export's "wrote ..." if the signal came as it ended)
    if lines and lines[-1].startswith("Interrupted; checkpoint saved to"):
        return "passed"  # train had begun training: it finished the step and saved
    return f"stderr {lines[-2:]}"


def test_signals_at_random_moments_of_start_up(charrnn_executable, trained, tmp_path):
    folder, corpus = trained
    ckpt = folder / "run" / "latest.npz"
    chooser = random.Random(19)
    after_entry: Counter = Counter()
    from_start: Counter = Counter()
    commands = ["info", "export", "sample", "eval", "train"]
    for trial in range(60):
        command = commands[trial % len(commands)]
        # SIGINT (Ctrl-C) most often; SIGTERM, SIGHUP and SIGQUIT to every command too.
        number = signal.SIGINT if trial < 40 else (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)[trial % 3]
        for counter, from_entry in ((after_entry, True), (from_start, False)):
            work = tmp_path / f"{trial}-{from_entry}"
            work.mkdir()
            process = subprocess.Popen([charrnn_executable, *map(str, _startup_args(ckpt, corpus, work, command))],
                                       cwd=work, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                       stderr=subprocess.PIPE, text=True, preexec_fn=_child_setup())
            if from_entry:
                deadline = time.monotonic() + 60
                while not _catches_sighup(process.pid) and process.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.001)
            time.sleep(chooser.uniform(0.0, 0.3))
            process.send_signal(number)
            try:
                _, stderr = process.communicate(timeout=120)
            except subprocess.TimeoutExpired:
                process.kill()
                counter["hang"] += 1
                continue
            counter[_signal_outcome(process, number, stderr, work)] += 1
    REPORT["SIGINT/TERM/HUP/QUIT in the first 300 ms after charrnn's entry point (60)"] = after_entry
    REPORT["the same from the process's start (the interpreter's own start counted apart)"] = from_start
    allowed = {"passed", "finished first"}
    assert set(after_entry) <= allowed and after_entry["passed"] >= 40, after_entry
    assert set(from_start) <= allowed | {"in Python's own start-up, before charrnn's first line"}, from_start


def test_sighup_during_training_saves_and_resumes_and_during_export_leaves_nothing_half_written(
        charrnn_executable, tmp_path, small_corpus):
    chooser = random.Random(7)
    training: Counter = Counter()
    for trial in range(5):
        folder = tmp_path / f"hup{trial}"
        process = subprocess.Popen([charrnn_executable, "train", str(small_corpus), *FAST, "--steps", "100000",
                                    "--checkpoint-every", "5", "--eval-every", "0", "-q", "--checkpoint-dir", folder],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_child_setup())
        deadline = time.monotonic() + 300
        while not (folder / "latest.npz").exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.01)
        time.sleep(chooser.uniform(0.0, 2.0))
        process.send_signal(signal.SIGHUP)
        _, stderr = process.communicate(timeout=120)
        if process.returncode != 129 or "Traceback" in stderr:
            training[f"exit {process.returncode}"] += 1
            continue
        step = checkpoint.load(str(folder / "latest.npz")).progress.step
        resumed = subprocess.run([charrnn_executable, "train", "--resume", str(folder), "--steps", str(step + 3), "-q"],
                                 capture_output=True, text=True, timeout=300)
        left = [name for name in os.listdir(folder) if name.startswith(".")]
        training["passed" if resumed.returncode == 0 and not left else f"resume {resumed.returncode}, left {left}"] += 1
    REPORT["SIGHUP during training: saved, exit 129, resumes (5)"] = training
    # export of a model of some megabytes, hit at random moments by SIGHUP or SIGQUIT.
    big = tmp_path / "big"
    result = subprocess.run([charrnn_executable, "train", str(small_corpus), "--hidden-size", "512", "--steps", "1",
                             "--batch-size", "2", "--seq-length", "5", "-q", "--checkpoint-dir", big],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    exports: Counter = Counter()
    for trial in range(20):
        number = signal.SIGHUP if trial % 2 else signal.SIGQUIT
        out = tmp_path / f"export{trial}"
        out.mkdir()
        process = subprocess.Popen([charrnn_executable, "export", str(big / "latest.npz"), "-o", str(out / "m.npz")],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=_child_setup())
        while not _catches_sighup(process.pid) and process.poll() is None:
            time.sleep(0.001)
        time.sleep(chooser.uniform(0.0, 1.5))
        process.send_signal(number)
        _, stderr = process.communicate(timeout=120)
        outcome = _signal_outcome(process, number, stderr, out)
        if outcome in ("passed", "finished first"):
            written = out / "m.npz"
            whole = not written.exists() or checkpoint.load(str(written)).contents == "model"
            outcome = outcome if whole else "a damaged output"
        exports[outcome] += 1
    REPORT["SIGHUP or SIGQUIT during export (20): nothing half-written"] = exports
    assert training == Counter(passed=5), training
    assert set(exports) <= {"passed", "finished first"} and exports["passed"] >= 5, exports
