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
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
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
    assert len(names) == len(set(names)) == 351


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
                           capture_output=True, text=True, timeout=600)
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
            stderr.wait_for(lambda line: line.startswith(f"step {step}/"), f"step {step}", timeout=600)
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
                                  "--eval-every", "0", "-q"], cwd=tmp_path, capture_output=True, text=True, timeout=600)
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

        def change_after_hashing(source, out, check_head=bool, path=corpus, keep=len(text) // (trial + 2)):
            result = original(source, out, check_head)
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
