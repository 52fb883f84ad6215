"""The corpus under faults: names that are not UTF-8, pipes and FIFOs, killed and interrupted prepares.

Real subprocesses of the installed ``charrnn`` where the operating system is the point (signals,
pipes, FIFOs, orphaned processes), each with a timeout, so that a regression fails rather than hangs.
"""

from __future__ import annotations

import glob
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Optional

import pytest
from click.testing import CliRunner

from charrnn import files
from charrnn.checkpoints import checkpoint
from charrnn.data import parallel_tokenize, token_cache
from charrnn.cli import cli
from conftest import NUMPY_BACKEND, TANG300, wait_until

LINUX = sys.platform.startswith("linux")
TINY = ["--steps", "2", "--hidden-size", "8", "--batch-size", "4", "--seq-length", "8", "--rng-seed", "1",
        *NUMPY_BACKEND]
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # 'caf\udce9': how Python sees a Latin-1 name on a UTF-8 system


def _children(pid: int) -> set[int]:
    """The child processes of ``pid`` (of all its threads), from /proc."""
    found: set[int] = set()
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            found.update(int(child) for child in Path(path).read_text().split())
        except OSError:
            pass
    return found


def _running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (a zombie has ended; only its exit status is left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _wait_until(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def _temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp")) if folder.exists() else []


@pytest.fixture
def jieba_corpus(tmp_path: Path) -> Path:
    """A corpus of 5 MB, above the size at which prepare cuts jieba words in worker processes."""
    path = tmp_path / "big.txt"
    text = TANG300.read_text(encoding="utf-8")
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(5_000_000 // len(text.encode("utf-8")) + 1):
            f.write(text)
    assert path.stat().st_size >= parallel_tokenize.PARALLEL_MIN_BYTES
    return path


# --- item 11: workers die with their parent; item 12: a killed prepare's temporary files are removed later ---


@pytest.mark.skipif(not LINUX, reason="finds the worker processes in /proc")
@pytest.mark.parametrize("signal_number", [signal.SIGKILL, signal.SIGTERM])
def test_killing_a_parallel_prepare_leaves_no_worker_running(
    charrnn_executable, tmp_path, jieba_corpus, small_corpus, signal_number
):
    cache = tmp_path / "cache"
    command = [charrnn_executable, "prepare", str(jieba_corpus), "--tokenizer", "jieba", "--workers", "2",
               "--cache-dir", str(cache), "-q"]
    workers: set[int] = set()
    parent = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert _wait_until(lambda: len(_children(parent.pid)) >= 2, 120), "the workers never started"
        workers = _children(parent.pid)
        os.kill(parent.pid, signal_number)
        parent.wait(timeout=120)
        assert _wait_until(lambda: not any(_running(w) for w in workers), 60), f"orphaned workers {workers}"
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for worker in workers:  # only after a failure is any of them left
            if _running(worker):
                os.kill(worker, signal.SIGKILL)
        if parent.stderr is not None:
            parent.stderr.close()
    if signal_number == signal.SIGKILL:  # nothing could clean up: the provisional ids are left behind
        assert [name.split(".")[1] for name in _temporaries(cache)] == ["provisional"]
    # The next prepare in the folder removes what a dead process left.
    run = subprocess.run([charrnn_executable, "prepare", str(small_corpus), "--cache-dir", str(cache), "-q"],
                         capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert _temporaries(cache) == []


# Where the workers of the next test leave their marks (set before they are forked, so they inherit it).
_WORKER_MARKS: Optional[Path] = None


def _cut_words_for_two_minutes(text: str) -> list[str]:
    """A worker's cut of a piece that takes two minutes: a prepare that waited for it would be seen to."""
    (_WORKER_MARKS / f"started.{os.getpid()}").touch()
    time.sleep(120)
    (_WORKER_MARKS / f"finished.{os.getpid()}").touch()
    return list(text)


@pytest.mark.skipif(not LINUX, reason="finds the worker processes in /proc")
def test_an_interrupt_during_a_parallel_prepare_stops_the_workers_at_once(tmp_path, jieba_corpus, monkeypatch):
    # KeyboardInterrupt stands for Ctrl-C, or a SIGTERM that the command line turns into an exception.
    # It comes while a worker is cutting a piece: the workers are stopped, not left to finish it.
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(sys.modules[__name__], "_WORKER_MARKS", marks)
    # The workers are forked, so they cut with the module's tokenize as patched here.
    monkeypatch.setattr(parallel_tokenize, "tokenize", lambda text, kind: _cut_words_for_two_minutes(text))
    workers: set[int] = set()

    def interrupt(done, total):
        if not _children(os.getpid()):
            return  # no piece handed out yet: read on
        wait_until(lambda: any(marks.glob("started.*")), "a worker cutting a piece")
        workers.update(_children(os.getpid()))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        token_cache.prepare([str(jieba_corpus)], "jieba", cache_dir=str(tmp_path / "cache"), workers=2,
                            on_progress=interrupt)
    assert list(marks.glob("started.*")) and not list(marks.glob("finished.*"))
    assert len(workers) == 2 and not any(_running(w) for w in workers)
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.skipif(not LINUX, reason="finds the worker processes in /proc")
def test_an_exception_in_the_code_taking_the_workers_words_stops_them(tmp_path, monkeypatch):
    monkeypatch.setattr(parallel_tokenize, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(parallel_tokenize, "PIECE_CHARS", 2000)
    corpus = tmp_path / "poems.txt"
    corpus.write_text(TANG300.read_text(encoding="utf-8"), encoding="utf-8")
    workers: set[int] = set()

    def add_tokens(*args):
        workers.update(_children(os.getpid()))
        raise KeyboardInterrupt

    monkeypatch.setattr(token_cache.VocabularyBuilder, "add_tokens", add_tokens)
    with pytest.raises(KeyboardInterrupt):
        token_cache.prepare([str(corpus)], "jieba", cache_dir=str(tmp_path / "cache"), workers=2)
    # Checked while the exception (and its traceback) is still alive, as it is in the command's handler.
    assert len(workers) == 2 and not any(_running(w) for w in workers)
    assert os.listdir(tmp_path / "cache") == []


# --- item 13: standard input, pipes and FIFOs ---


@pytest.mark.skipif(not LINUX, reason="/dev/stdin and FIFOs")
@pytest.mark.parametrize("name, stdin", [("-", "pipe"), ("/dev/stdin", "pipe"), ("/dev/stdin", "file"), ("-", "file")])
def test_train_reads_its_corpus_from_standard_input(charrnn_executable, tmp_path, small_corpus, name, stdin):
    cache = tmp_path / "cache"
    command = [charrnn_executable, "train", name, *TINY, "-q", "--cache-dir", str(cache),
               "--checkpoint-dir", str(tmp_path / "run")]
    if stdin == "pipe":
        run = subprocess.run(command, input=small_corpus.read_bytes(), capture_output=True, timeout=120)
    else:
        with open(small_corpus, "rb") as f:
            run = subprocess.run(command, stdin=f, capture_output=True, timeout=120)
    assert (run.returncode, run.stderr) == (0, b"")
    corpus = checkpoint.load(str(tmp_path / "run" / "latest.npz")).corpus
    assert corpus.paths == (name,) and corpus.num_tokens == 3000
    assert _temporaries(cache) == []
    assert len(os.listdir(cache)) == 2  # the entry's .npy and .json


@pytest.mark.skipif(not LINUX, reason="FIFOs")
def test_a_fifo_as_the_corpus_is_read_once_and_never_hangs(charrnn_executable, tmp_path, small_corpus):
    fifo = tmp_path / "poems.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as f:
            f.write(small_corpus.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        run = subprocess.run([charrnn_executable, "train", str(fifo), *TINY, "-q", "--cache-dir", str(tmp_path / "c"),
                              "--checkpoint-dir", str(tmp_path / "run")], capture_output=True, timeout=120)
    finally:
        if writer.is_alive():  # charrnn never opened the FIFO: open it here so that the writer ends
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)
    assert (run.returncode, run.stderr) == (0, b"")
    assert checkpoint.load(str(tmp_path / "run" / "latest.npz")).corpus.num_tokens == 3000
    assert _temporaries(tmp_path / "c") == []


@pytest.mark.skipif(not LINUX, reason="standard input as a pipe")
def test_resuming_a_model_trained_on_standard_input_asks_for_the_corpus(charrnn_executable, tmp_path, small_corpus):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    common = ["--cache-dir", str(cache), "--checkpoint-dir", str(run_dir), *NUMPY_BACKEND]
    first = subprocess.run([charrnn_executable, "train", "-", *TINY, "-q", *common],
                           input=small_corpus.read_bytes(), capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    latest = str(run_dir / "latest.npz")
    # Standard input left open and empty, as a terminal would be: reading it would wait for ever.
    resumed = subprocess.Popen([charrnn_executable, "train", "--resume", latest, "--steps", "4", "-q", *common],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        code = resumed.wait(timeout=120)
        stdout, stderr = resumed.stdout.read(), resumed.stderr.read().decode()
    finally:
        resumed.kill()
        for stream in (resumed.stdin, resumed.stdout, resumed.stderr):
            stream.close()
        resumed.wait()
    assert (code, stdout) == (2, b"")
    assert stderr == (
        f"Error: {latest} was trained on text from standard input, which cannot be read again; "
        f"pass the corpus again, e.g. charrnn train - --resume {latest} < corpus.txt\n"
    )
    again = subprocess.run([charrnn_executable, "train", "-", "--resume", latest, "--steps", "4", *common],
                           input=small_corpus.read_bytes(), capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr
    assert b"differs" not in again.stderr  # the same text: training goes on where it stopped
    assert checkpoint.load(latest).progress.step == 4


def test_standard_input_in_process(tmp_path, small_corpus):
    runner = CliRunner()
    result = runner.invoke(cli, ["prepare", "-", "--cache-dir", str(tmp_path / "cache"), "--json"],
                           input=small_corpus.read_bytes())
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["files"] == ["-"] and document["tokens"] == 3000 and not document["from_cache"]
    assert document["megabytes_per_s"] > 0
    result = runner.invoke(cli, ["prepare", "-", "--cache-dir", str(tmp_path / "cache"), "-q"], input=b"")
    assert (result.exit_code, result.stdout, result.stderr) == (2, "", "Error: standard input is empty\n")


# --- item 5: file names that are not UTF-8 ---


def test_json_keeps_text_readable_and_escapes_only_the_undecodable_bytes_of_a_name():
    data = files.json_bytes({"path": f"/语料/{NOT_UTF8}.txt"})
    assert data == '{"path": "/语料/caf\\udce9.txt"}'.encode("utf-8")
    assert json.loads(data) == {"path": f"/语料/{NOT_UTF8}.txt"}


@pytest.fixture
def latin1_named(tmp_path: Path, small_corpus: Path) -> Path:
    """The small corpus under the name b'caf\\xe9.txt', in a folder b'd\\xe9j\\xe0'."""
    folder = tmp_path / os.fsdecode(b"d\xe9j\xe0")
    try:
        folder.mkdir()
        path = folder / f"{NOT_UTF8}.txt"
        path.write_bytes(small_corpus.read_bytes())
    except (OSError, UnicodeError):
        pytest.skip("this file system refuses names that are not UTF-8")
    return path


def test_a_corpus_name_that_is_not_utf8_round_trips_through_cache_checkpoint_and_output(tmp_path, latin1_named):
    runner = CliRunner()
    cache = str(tmp_path / f"cache-{NOT_UTF8}")
    run_dir = str(tmp_path / f"run-{NOT_UTF8}")
    prepared = runner.invoke(cli, ["prepare", str(latin1_named), "--cache-dir", cache, "-q"])
    assert prepared.exit_code == 0, prepared.output
    (entry,) = [name for name in os.listdir(cache) if name.endswith(".npy")]
    assert prepared.stdout_bytes == os.fsencode(os.path.join(cache, entry)) + b"\n"  # byte for byte
    (meta,) = [name for name in os.listdir(cache) if name.endswith(".json")]
    assert json.loads(Path(cache, meta).read_bytes())["paths"] == [str(latin1_named)]
    described = runner.invoke(cli, ["prepare", str(latin1_named), "--cache-dir", cache, "--json", "-q"])
    assert described.exit_code == 0, described.output
    assert json.loads(described.stdout)["files"] == [str(latin1_named)]

    trained = runner.invoke(cli, ["train", str(latin1_named), *TINY, "--cache-dir", cache, "--checkpoint-dir", run_dir,
                                  "--json", "-q"])
    assert trained.exit_code == 0, trained.output
    latest = os.path.join(run_dir, "latest.npz")
    assert json.loads(trained.stdout)["checkpoint"] == latest
    assert checkpoint.load(latest).corpus.paths == (str(latin1_named),)
    # Resuming without naming the corpus finds the file again, and knows it for the same text.
    resumed = runner.invoke(cli, ["train", "--resume", latest, "--steps", "4", "--cache-dir", cache,
                                  "--checkpoint-dir", run_dir])
    assert resumed.exit_code == 0, resumed.output
    assert "differs" not in resumed.stderr and checkpoint.load(latest).progress.step == 4

    shown = runner.invoke(cli, ["info", latest])
    assert shown.exit_code == 0, shown.output
    assert b"corpus: " + os.fsencode(str(latin1_named)) + b", 3,000 tokens" in shown.stdout_bytes
    as_json = runner.invoke(cli, ["info", latest, "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["corpus"]["paths"] == [str(latin1_named)]


def test_a_corpus_name_that_is_not_utf8_through_the_installed_command(charrnn_executable, tmp_path, latin1_named):
    common = ["--cache-dir", str(tmp_path / "cache"), "--checkpoint-dir", str(tmp_path / "run"), *NUMPY_BACKEND]
    trained = subprocess.run([charrnn_executable, "train", str(latin1_named), *TINY, "-q", *common],
                             capture_output=True, timeout=120)
    assert (trained.returncode, trained.stderr) == (0, b"")
    latest = str(tmp_path / "run" / "latest.npz")
    shown = subprocess.run([charrnn_executable, "info", latest], capture_output=True, timeout=120)
    assert (shown.returncode, shown.stderr) == (0, b"")
    assert os.fsencode(str(latin1_named)) in shown.stdout


def test_an_endless_binary_device_is_refused_at_once_not_copied_forever(charrnn_executable, tmp_path):
    # Copied forever, it would run into the timeout (an error); refused at its first bytes, it ends.
    result = subprocess.run([charrnn_executable, "train", "/dev/zero", "--steps", "1", "--cache-dir", str(tmp_path)],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: /dev/zero looks like a binary file (it holds NUL bytes); if it is UTF-16 or UTF-32 without a "
        "byte-order mark, pass --encoding utf-16-le (or the codec it uses)"]
    assert [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


# --- issue 19, item 14: a codec that decodes to a lone surrogate ---


def test_text_that_decodes_to_a_lone_surrogate_is_refused_as_text_not_blamed_on_the_cache(tmp_path):
    corpus = tmp_path / "escaped.txt"
    corpus.write_bytes(b"abc\\ud800def\n" * 10)  # unicode_escape reads the six characters \ud800 as U+D800
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, ["train", str(corpus), *TINY, "--encoding", "unicode_escape", "--cache-dir",
                                      str(cache), "--checkpoint-dir", str(tmp_path / "run")])
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: {corpus} read as unicode_escape gives a lone surrogate (U+D800), which is not "
                             "a character; pass the --encoding the file is written in\n")
    assert not cache.exists() or sorted(os.listdir(cache)) == []  # no entry that every later run would trip on
    assert not (tmp_path / "run").exists()


def test_an_entry_that_cannot_be_read_back_is_not_left_in_the_cache(tmp_path, small_corpus, monkeypatch):
    monkeypatch.setattr(token_cache, "_load", lambda *args: None)
    with pytest.raises(Exception, match="cannot be read back; it was removed"):
        token_cache.prepare([str(small_corpus)], cache_dir=str(tmp_path / "cache"))
    assert os.listdir(tmp_path / "cache") == []


# --- issue 19, item 8: standard input named twice ---


@pytest.mark.parametrize("args", [
    ["train", "-", "-"], ["prepare", "-", "-"], ["train", "-", "/dev/stdin"], ["train", "-", "--val-file", "/dev/stdin"],
    ["train", "/proc/self/fd/0", "--val-file", "-"], ["prepare", "/dev/stdin", "/dev/fd/0"],
], ids=" ".join)
def test_standard_input_named_twice_is_refused_as_such_not_found_empty(tmp_path, small_corpus, args):
    """The second reading of standard input would find it empty: say that it can be read only once,
    whichever of its names (-, /dev/stdin, /dev/fd/0, /proc/self/fd/0) are given."""
    cache = tmp_path / "cache"
    result = CliRunner().invoke(cli, [*args, "--cache-dir", str(cache)], input=small_corpus.read_bytes())
    assert (result.exit_code, result.stdout) == (2, "")
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: standard input (-) can be read only once"), result.stderr
    assert "empty" not in result.stderr and not cache.exists() and not os.path.exists("checkpoints")


@pytest.mark.skipif(not LINUX, reason="standard input as a pipe")
def test_a_model_validated_on_standard_input_asks_for_it_again_when_resumed(charrnn_executable, tmp_path,
                                                                            small_corpus):
    text = small_corpus.read_text(encoding="utf-8")
    common = ["--cache-dir", str(tmp_path / "cache"), "--checkpoint-dir", str(tmp_path / "run")]
    first = subprocess.run([charrnn_executable, "train", str(small_corpus), "--val-file", "-", *TINY, "-q", *common],
                           input=text[:500].encode(), capture_output=True, timeout=120)
    assert first.returncode == 0, first.stderr
    latest = str(tmp_path / "run" / "latest.npz")
    assert checkpoint.load(latest).corpus.val_paths == ("-",)  # not a file named - in the folder it ran in
    resumed = subprocess.run([charrnn_executable, "train", "--resume", latest, "--steps", "4", "-q", *common],
                             stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
    assert (resumed.returncode, resumed.stderr.decode()) == (2, (
        f"Error: {latest} was validated on text from standard input, which cannot be read again; pass it again, "
        f"e.g. charrnn train --resume {latest} --val-file - < held_out.txt\n"))


# --- issue 19, item 7: standard input without an end ---


class Endless(io.RawIOBase):
    """Standard input that serves ``pattern`` over and over, up to ``limit`` bytes (as `yes` would, but
    ending, so that a regression fails instead of hanging), and counts the bytes it has served."""

    def __init__(self, pattern: str, limit: int) -> None:
        unit = pattern.encode("utf-8")
        self.block = unit * max(1, (1 << 20) // len(unit))
        self.limit, self.served = limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = min(len(buffer), len(self.block), self.limit - self.served)
        buffer[:count] = self.block[:count]  # every read starts at a whole unit: blocks are whole units
        self.served += count
        return count


def _trained(folder: Path, small_corpus: Path) -> Path:
    result = CliRunner().invoke(cli, ["train", str(small_corpus), *TINY, "-q", "--checkpoint-dir", str(folder)])
    assert result.exit_code == 0, result.stderr
    return folder / "latest.npz"


def test_eval_scores_standard_input_as_it_reads_it(tmp_path, small_corpus, monkeypatch):
    from charrnn.data.corpus import CHUNK_BYTES
    from charrnn.inference import scoring

    ckpt = _trained(tmp_path / "run", small_corpus)
    monkeypatch.setattr(scoring, "WINDOW_TOKENS", 256)
    # 月 and the line end are in the model's vocabulary, y is not (left out, counted): cheap to score.
    units = 6 * CHUNK_BYTES // 1002
    stdin = Endless("月" + "y" * 998 + "\n", units * 1002)  # 1,002 bytes a unit
    read_by_the_first_window = []
    score_window = scoring._score_window

    def recording(*args, **kwargs):
        read_by_the_first_window.append(stdin.served)
        return score_window(*args, **kwargs)

    monkeypatch.setattr(scoring, "_score_window", recording)
    result = CliRunner().invoke(cli, ["eval", str(ckpt), "-", "-q", "--json"], input=stdin)
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert (document["tokens_scored"], document["tokens_unknown"]) == (2 * units - 1, 998 * units)
    assert read_by_the_first_window[0] <= 2 * CHUNK_BYTES < stdin.served == stdin.limit


def test_a_seed_file_without_an_end_is_refused_once_it_passes_the_most_a_seed_may_hold(tmp_path, small_corpus):
    from charrnn.cli.sample_command import MAX_SEED_CHARS

    ckpt = _trained(tmp_path / "run", small_corpus)
    stdin = Endless("月光\n", 1 << 27)
    result = CliRunner().invoke(cli, ["sample", "-c", str(ckpt), "--seed-file", "-", "--length", "5"], input=stdin)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: --seed-file standard input is longer than {MAX_SEED_CHARS:,} characters, the "
                             "most it may hold; give a shorter text\n")
    assert stdin.served <= 3 * MAX_SEED_CHARS + (8 << 20)  # read no further than it had to


def test_validation_reads_only_the_tokens_it_scores_and_refuses_endless_text_when_asked_for_all(
        tmp_path, small_corpus, monkeypatch):
    from charrnn.training import corpus_data

    common = [str(small_corpus), *TINY, "-q", "--val-file", "-", "--cache-dir", str(tmp_path / "cache")]
    stdin = Endless("月光\n", 1 << 30)
    kept = CliRunner().invoke(cli, ["train", *common, "--eval-tokens", "1000", "--checkpoint-dir", str(tmp_path / "a")],
                              input=stdin)
    assert kept.exit_code == 0, kept.stderr
    assert stdin.served <= 8 << 20  # a chunk, not the gigabyte on offer
    monkeypatch.setattr(corpus_data, "MAX_VALIDATION_TOKENS", 300_000)
    for pattern, message in [
        ("月光\n", "Error: --val-file standard input holds more than 300,000 tokens, more than validation keeps in "
                   "memory; pass --eval-tokens N (at most 300,000) to validate on its first N tokens\n"),
        ("y", "tokens are outside the model's vocabulary; give text in the language and encoding of the corpus\n"),
    ]:
        stdin = Endless(pattern, 1 << 30)
        refused = CliRunner().invoke(cli, ["train", *common, "--eval-tokens", "0", "--checkpoint-dir",
                                           str(tmp_path / "b")], input=stdin)
        assert (refused.exit_code, refused.stdout) == (2, "") and refused.stderr.endswith(message), refused.stderr
        assert stdin.served <= 32 << 20 and not (tmp_path / "b").exists()


def test_standard_input_is_copied_into_the_cache_up_to_the_spool_limit(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    stdin = Endless("床前明月光\n", 1 << 30)
    result = CliRunner().invoke(cli, ["train", "-", *TINY, "--spool-limit-mb", "2", "--cache-dir", str(cache),
                                      "--checkpoint-dir", str(tmp_path / "run")], input=stdin)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr == (f"Error: standard input is longer than --spool-limit-mb 2 (MB), the most that is copied "
                             f"into the cache folder {cache} to be tokenized; raise --spool-limit-mb, or give the "
                             "text as a file\n")
    assert stdin.served <= 2_000_000 + 2 * token_cache._COPY_BLOCK_BYTES
    assert _temporaries(cache) == [] and not (tmp_path / "run").exists()
    # Before the disk would be all but full (here: 1.05 GB free), the copy stops: a failure, exit 1.
    usage = type(shutil.disk_usage(tmp_path))
    monkeypatch.setattr(token_cache.shutil, "disk_usage",
                        lambda path: usage(total=100 * 10**9, used=99 * 10**9, free=1_050_000_000))
    full = CliRunner().invoke(cli, ["prepare", "-", "--cache-dir", str(cache)], input=Endless("月\n", 1 << 30))
    assert (full.exit_code, full.stdout) == (1, "")
    assert full.stderr == (f"Error: copying standard input into the cache folder {cache} stopped at 1 MB: its disk "
                           "has 1,050 MB free, and the copy must leave 1,074 MB; free some space, or pass --cache-dir "
                           "on a larger disk\n")
    assert _temporaries(cache) == []
