"""bench/ is a package: its scripts import one another without editing the module path, and each runs
as ``python -m bench.<name>`` from the checkout's root (the benchmarks themselves never run here)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

from conftest import REPO

SCRIPTS = sorted(path.stem for path in (REPO / "bench").glob("*.py")
                 if path.stem != "__init__" and "__main__" in path.read_text(encoding="utf-8"))
NEEDS_TORCH = {"torch_reference"}


def test_no_benchmark_edits_the_module_path():
    assert (REPO / "bench" / "__init__.py").is_file()
    assert [path.name for path in (REPO / "bench").glob("*.py") if "sys.path" in path.read_text(encoding="utf-8")] == []


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_benchmark_runs_as_a_module_of_the_bench_package(name):
    if name in NEEDS_TORCH and importlib.util.find_spec("torch") is None:
        pytest.skip("needs torch (bench/requirements.txt)")
    run = subprocess.run([sys.executable, "-m", f"bench.{name}", "--help"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("usage: ")
    # The commands a script shows are the ones that work.
    assert f"python bench/{name}.py" not in (REPO / "bench" / f"{name}.py").read_text(encoding="utf-8")
