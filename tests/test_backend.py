"""--backend (and CHARRNN_BACKEND): which kernels run, said by the training header, --json and info."""

from __future__ import annotations

import json
import sys

import pytest
from click.testing import CliRunner

from charrnn.cli import ENVVAR_PREFIX, cli
from charrnn.model import backend
from test_cli import FAST, assert_clean_error, invoke

HAS_NUMBA = backend.select("auto").name == "numba"


def _train(corpus, folder, *args):
    result = invoke("train", corpus, *FAST, "--steps", "3", "--checkpoint-dir", folder, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_the_numpy_backend_is_named_in_the_header_json_and_info(workdir, small_corpus):
    result = _train(small_corpus, "run", "--backend", "numpy")
    assert ", numpy backend" in result.stderr.splitlines()[0]
    assert json.loads(result.stdout)["backend"] == "numpy"
    assert json.loads(invoke("info", "run/latest.npz", "--json").stdout)["backend"] == "numpy"
    assert "backend: numpy (the kernels of the run that wrote it)" in invoke("info", "run/latest.npz").stdout
    evaluated = invoke("eval", "run/latest.npz", small_corpus, "--json", "--backend", "numpy")
    assert json.loads(evaluated.stdout)["backend"] == "numpy"


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install '.[fast]')")
def test_auto_trains_and_scores_with_numba_where_it_is_installed_but_samples_with_numpy(workdir, small_corpus):
    result = _train(small_corpus, "run")
    assert json.loads(result.stdout)["backend"] == "numba"
    assert json.loads(invoke("info", "run/latest.npz", "--json").stdout)["backend"] == "numba"
    assert json.loads(invoke("eval", "run/latest.npz", small_corpus, "--json").stdout)["backend"] == "numba"
    sampled = invoke("sample", "-c", "run/latest.npz", "--length", "5", "--json", "-q")
    assert json.loads(sampled.stdout)["backend"] == "numpy"
    forced = invoke("sample", "-c", "run/latest.npz", "--length", "5", "--json", "-q", "--backend", "numba")
    assert json.loads(forced.stdout)["backend"] == "numba"


def test_charrnn_backend_in_the_environment_chooses_for_every_command(workdir, small_corpus, monkeypatch):
    monkeypatch.setenv("CHARRNN_BACKEND", "numpy")
    result = CliRunner().invoke(cli, ["train", str(small_corpus), *FAST, "--steps", "2", "--json", "-q"],
                                auto_envvar_prefix=ENVVAR_PREFIX)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["backend"] == "numpy"
    monkeypatch.setenv("CHARRNN_BACKEND", "fortran")
    refused = CliRunner().invoke(cli, ["eval", "checkpoints/poems/latest.npz", str(small_corpus)],
                                 auto_envvar_prefix=ENVVAR_PREFIX)
    assert refused.exit_code == 2 and "'fortran' is not one of 'auto', 'numpy', 'numba'" in refused.stderr


def test_asking_for_numba_without_it_says_how_to_install_it(workdir, small_corpus, monkeypatch):
    monkeypatch.setitem(sys.modules, "charrnn.model.compiled.cells", None)  # as if numba would not import
    monkeypatch.delattr("charrnn.model.compiled.cells", raising=False)
    assert_clean_error(invoke("train", small_corpus, *FAST, "--steps", "2", "--backend", "numba"), 2,
                       "the numba backend needs numba, which could not be imported")
    result = _train(small_corpus, "run")  # auto falls back to numpy
    assert json.loads(result.stdout)["backend"] == "numpy"
