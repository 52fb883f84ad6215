"""The corpus under faults: names that are not UTF-8, pipes and FIFOs.

Real subprocesses of the installed ``charrnn`` where the operating system is the point (pipes,
FIFOs), each with a timeout, so that a regression fails rather than hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn import checkpoint, files
from charrnn.cli import cli

LINUX = sys.platform.startswith("linux")
TINY = ["--steps", "2", "--hidden-size", "8", "--batch-size", "4", "--seq-length", "8", "--rng-seed", "1"]
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # 'caf\udce9': how Python sees a Latin-1 name on a UTF-8 system


def _temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp")) if folder.exists() else []


# --- item 13: standard input, pipes and FIFOs ---


@pytest.mark.skipif(not LINUX, reason="/dev/stdin and FIFOs")
@pytest.mark.parametrize("name, stdin", [("-", "pipe"), ("/dev/stdin", "pipe"), ("/dev/stdin", "file"), ("-", "file")])
def test_train_reads_its_corpus_from_standard_input(charrnn_executable, tmp_path, small_corpus, name, stdin):
    cache = tmp_path / "cache"
    command = [charrnn_executable, "train", name, *TINY, "-q", "--cache-dir", str(cache),
               "--checkpoint-dir", str(tmp_path / "run")]
    if stdin == "pipe":
        run = subprocess.run(command, input=small_corpus.read_bytes(), capture_output=True, timeout=60)
    else:
        with open(small_corpus, "rb") as f:
            run = subprocess.run(command, stdin=f, capture_output=True, timeout=60)
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
                              "--checkpoint-dir", str(tmp_path / "run")], capture_output=True, timeout=30)
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
    common = ["--cache-dir", str(cache), "--checkpoint-dir", str(run_dir)]
    first = subprocess.run([charrnn_executable, "train", "-", *TINY, "-q", *common],
                           input=small_corpus.read_bytes(), capture_output=True, timeout=60)
    assert first.returncode == 0, first.stderr
    latest = str(run_dir / "latest.npz")
    # Standard input left open and empty, as a terminal would be: reading it would wait for ever.
    resumed = subprocess.Popen([charrnn_executable, "train", "--resume", latest, "--steps", "4", "-q", *common],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        code = resumed.wait(timeout=30)
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
                           input=small_corpus.read_bytes(), capture_output=True, timeout=60)
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
    assert json.loads(as_json.stdout)["corpus"]["paths"] == [str(latin1_named)]


def test_a_corpus_name_that_is_not_utf8_through_the_installed_command(charrnn_executable, tmp_path, latin1_named):
    common = ["--cache-dir", str(tmp_path / "cache"), "--checkpoint-dir", str(tmp_path / "run")]
    trained = subprocess.run([charrnn_executable, "train", str(latin1_named), *TINY, "-q", *common],
                             capture_output=True, timeout=60)
    assert (trained.returncode, trained.stderr) == (0, b"")
    latest = str(tmp_path / "run" / "latest.npz")
    shown = subprocess.run([charrnn_executable, "info", latest], capture_output=True, timeout=60)
    assert (shown.returncode, shown.stderr) == (0, b"")
    assert os.fsencode(str(latin1_named)) in shown.stdout
