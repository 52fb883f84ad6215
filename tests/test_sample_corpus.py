"""The sample corpus travels with the package: `charrnn train --sample-corpus` works wherever charrnn is
installed, and the quick start that `charrnn --help` shows works in any folder."""

from __future__ import annotations

import configparser
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from charrnn.data.corpus import sample_corpus_path
from conftest import REPO, TANG300
from test_cli import FAST, assert_clean_error, invoke, invoke_ok


def test_the_installed_sample_is_the_bundled_corpus_and_is_package_data():
    assert Path(sample_corpus_path()).read_bytes() == TANG300.read_bytes()
    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg", encoding="utf-8")
    patterns = [p.strip() for p in config["options.package_data"]["charrnn"].split(",")]
    relative = Path(sample_corpus_path()).relative_to(REPO / "charrnn").as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns)


def test_train_on_the_sample_corpus_from_any_folder(workdir):
    result = invoke("train", "--sample-corpus", "--steps", "2", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["checkpoint_dir"] == os.path.join("checkpoints", "tang300")
    info = json.loads(invoke_ok("info", "--json", "-q").stdout)
    assert info["model"]["vocab_size"] == 2580
    assert info["corpus"]["paths"] == [sample_corpus_path()]
    # Resumed without a corpus, it reads the installed file again.
    resumed = invoke("train", "--resume", "checkpoints/tang300", "--steps", "3", "-q")
    assert resumed.exit_code == 0, resumed.stderr
    assert_clean_error(invoke("train", "poems.txt", "--sample-corpus"), 2, "give CORPUS files or --sample-corpus, not both")


def test_the_quick_start_in_the_help_runs_in_an_empty_folder(workdir):
    help_text = invoke_ok("--help").stdout
    block = help_text.split("Quick start", 1)[1].split("\n\n", 1)[0]
    commands = [shlex.split(line.strip()) for line in block.splitlines()[1:] if line.strip()]
    assert [command[:2] for command in commands] == [["charrnn", "train"], ["charrnn", "sample"]]
    for command in commands:
        args = command[1:]
        if args[0] == "train":  # a shorter run than the help's, with the same corpus
            args = [a for a in args if a not in ("--steps", "1000")] + ["--steps", "3", *FAST]
        result = invoke(*args)
        assert result.exit_code == 0, (args, result.stderr)
    assert result.stdout.startswith("月")


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_trains_on_its_sample_corpus(tmp_path):
    # Installed as a user installs it (a built wheel, not the checkout in editable mode), then run from
    # a folder that has no data/ beside it.
    source, target = tmp_path / "source", tmp_path / "site"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):  # a copy, so the build writes nothing in the checkout
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "charrnn", source / "charrnn", ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(target),
                            str(source)], capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    assert (target / "charrnn" / "corpora" / "tang300.txt").read_bytes() == TANG300.read_bytes()
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run([sys.executable, "-c", "import charrnn; print(charrnn.__file__)"], cwd=work, env=env,
                           capture_output=True, text=True, timeout=120)
    assert where.returncode == 0 and Path(where.stdout.strip()).is_relative_to(target)
    trained = subprocess.run([sys.executable, "-m", "charrnn", "train", "--sample-corpus", "--steps", "2", *FAST,
                              "--json", "-q"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["checkpoint_dir"] == os.path.join("checkpoints", "tang300")
    helped = subprocess.run([sys.executable, "-m", "charrnn", "--help"], cwd=work, env=env, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and re.search(r"charrnn train --sample-corpus", helped.stdout)
