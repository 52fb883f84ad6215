"""The corpus under faults: names that are not UTF-8.

Real subprocesses of the installed ``charrnn`` where the operating system is the point, each with a
timeout, so that a regression fails rather than hangs.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from charrnn import checkpoint, files
from charrnn.cli import cli

TINY = ["--steps", "2", "--hidden-size", "8", "--batch-size", "4", "--seq-length", "8", "--rng-seed", "1"]
NOT_UTF8 = os.fsdecode(b"caf\xe9")  # 'caf\udce9': how Python sees a Latin-1 name on a UTF-8 system


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
