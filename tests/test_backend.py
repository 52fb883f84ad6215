"""--backend (and CHARRNN_BACKEND): which kernels run, said by the training header, --json and info."""

from __future__ import annotations

import json
import os
import sys

import pytest
from click.testing import CliRunner

from charrnn.cli import ENVVAR_PREFIX, cli
from charrnn.model import backend
from test_cli import FAST, assert_clean_error, invoke, invoke_ok

HAS_NUMBA = backend.select("auto").name == "numba"


def _train(corpus, folder, *args):
    result = invoke("train", corpus, *FAST, "--steps", "3", "--checkpoint-dir", folder, "--json", *args)
    assert result.exit_code == 0, result.stderr
    return result


def test_the_numpy_backend_is_named_in_the_header_json_and_info(workdir, small_corpus):
    result = _train(small_corpus, "run", "--backend", "numpy")
    assert ", numpy backend" in result.stderr.splitlines()[0]
    assert json.loads(result.stdout)["backend"] == "numpy"
    assert json.loads(invoke_ok("info", "run/latest.npz", "--json").stdout)["backend"] == "numpy"
    assert "backend: numpy (the kernels of the run that wrote it)" in invoke_ok("info", "run/latest.npz").stdout
    evaluated = invoke_ok("eval", "run/latest.npz", small_corpus, "--json", "--backend", "numpy")
    assert json.loads(evaluated.stdout)["backend"] == "numpy"


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install '.[fast]')")
def test_auto_trains_and_scores_with_numba_where_it_is_installed_but_samples_with_numpy(workdir, small_corpus):
    result = _train(small_corpus, "run")
    assert json.loads(result.stdout)["backend"] == "numba"
    assert json.loads(invoke_ok("info", "run/latest.npz", "--json").stdout)["backend"] == "numba"
    assert json.loads(invoke_ok("eval", "run/latest.npz", small_corpus, "--json").stdout)["backend"] == "numba"
    sampled = invoke_ok("sample", "-c", "run/latest.npz", "--length", "5", "--json", "-q")
    assert json.loads(sampled.stdout)["backend"] == "numpy"
    forced = invoke_ok("sample", "-c", "run/latest.npz", "--length", "5", "--json", "-q", "--backend", "numba")
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


# --- issue 19, item 9: numba's environment and its cache ---


def _eval_with(charrnn_executable, tmp_path, small_corpus, environment, *args):
    import subprocess

    ckpt = tmp_path / "run" / "latest.npz"
    if not ckpt.exists():
        trained = invoke("train", small_corpus, *FAST, "--steps", "2", "-q", "--backend", "numpy",
                         "--checkpoint-dir", tmp_path / "run")
        assert trained.exit_code == 0, trained.stderr
    return subprocess.run([charrnn_executable, "eval", str(ckpt), str(small_corpus), *args], cwd=tmp_path,
                          env={**os.environ, **environment}, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install '.[fast]')")
@pytest.mark.parametrize("threads", ["0", "-1"])
def test_a_numba_setting_that_stops_numba_falls_back_to_numpy_or_names_the_variable(
        charrnn_executable, tmp_path, small_corpus, threads):
    auto = _eval_with(charrnn_executable, tmp_path, small_corpus, {"NUMBA_NUM_THREADS": threads}, "--json")
    assert auto.returncode == 0 and json.loads(auto.stdout)["backend"] == "numpy"
    assert auto.stderr.splitlines()[0] == (
        "note: numba cannot start (ValueError: Number of threads specified must be > 0.; the environment sets "
        f"NUMBA_NUM_THREADS={threads}); using the numpy backend")
    asked = _eval_with(charrnn_executable, tmp_path, small_corpus, {"NUMBA_NUM_THREADS": threads}, "--backend",
                       "numba", "-q")
    assert (asked.returncode, asked.stdout) == (2, "")
    assert asked.stderr == (f"Error: numba cannot start (ValueError: Number of threads specified must be > 0.; the "
                            f"environment sets NUMBA_NUM_THREADS={threads}); correct or unset the variable, or "
                            "choose --backend numpy\n")


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install '.[fast]')")
def test_a_numba_setting_numba_ignores_is_one_note_not_its_traceback(charrnn_executable, tmp_path, small_corpus):
    for variable, value in [("NUMBA_OPT", "9"), ("NUMBA_NUM_THREADS", "abc")]:
        run = _eval_with(charrnn_executable, tmp_path, small_corpus, {variable: value}, "--backend", "numba")
        assert run.returncode == 0 and run.stdout.startswith("2,999 tokens scored"), run.stderr
        assert run.stderr.splitlines() == [
            f"note: numba ignores {variable}={value}, a value it cannot read, and runs as if it were unset"]


@pytest.mark.skipif(not HAS_NUMBA, reason="numba is not installed (pip install '.[fast]')")
def test_a_damaged_file_in_numbas_cache_counts_as_missing_and_is_written_anew(tmp_path):
    """numba keeps each kernel's cache as a pickled index and pickled data files; a damaged one (random
    bytes, empty, a pickle of something else) must neither end the command (UnpicklingError, EOFError,
    which click shows as "Aborted!") nor stay damaged."""
    import warnings

    from charrnn.errors import CharRNNNote
    from charrnn.model.compiled import arithmetic

    cache = arithmetic._CheckedIndex(cache_path=str(tmp_path), filename_base="kernel-1.py3", source_stamp=(1.0, 2))
    key = ("signature", "target", ("code", ""))
    cache.save(key, ("compiled", b"\x00" * 16))
    index, data = tmp_path / "kernel-1.py3.nbi", tmp_path / "kernel-1.py3.1.nbc"
    import pickle  # noqa: F401 - only to write a pickle of the wrong thing, as numba's files are

    for damage in (lambda: index.write_bytes(b"\x8f" * 20), lambda: index.write_bytes(b""),
                   lambda: data.write_bytes(os.urandom(64)), lambda: data.write_bytes(pickle.dumps(42)[:-1])):
        damage()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert cache.load(key) is None
        assert [w.category for w in caught] == [CharRNNNote]
        assert f"numba's cache of compiled kernels in {tmp_path} holds damaged files" in str(caught[0].message)
        with warnings.catch_warnings(record=True):  # saving reads the damaged index again, and says so again
            cache.save(key, ("compiled", b"\x00" * 16))  # what numba does once it has compiled the kernel
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing damaged any more
            assert cache.load(key) == ("compiled", b"\x00" * 16)
