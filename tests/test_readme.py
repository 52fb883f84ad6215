"""The README's quick start stays what CI runs."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def quick_start_commands() -> list[str]:
    """The shell commands of the README's quick-start section, in order."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [line for block in re.findall(r"```sh\n(.*?)```", section, re.S) for line in block.splitlines() if line]


def ci_commands() -> list[str]:
    """The commands of .ci/run, without its comments and set-up lines."""
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [line for line in ci if line and not line.startswith(("#", "set ", "cd "))]


def test_ci_runs_the_readme_quick_start_commands_first_and_in_order():
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert ci_commands()[:2] == commands
    assert "charrnn train data/" in commands[0] and commands[1].endswith("-m pytest")


def test_ci_then_runs_the_suite_again_without_numba():
    venv = ".ci/venv-numpy"
    after = ci_commands()[2:]
    assert after[0] == f"python3 -m venv {venv} && {venv}/bin/pip install '.[test-numpy]'"
    assert any(line.startswith(f"{venv}/bin/python -c ") and "numba" in line for line in after)  # it is not there
    assert [line for line in after if line.startswith(f"{venv}/bin/python -m pytest")] == [f"{venv}/bin/python -m pytest -rs"]


def test_ci_last_runs_the_mpi_tests_where_mpi_is_installed():
    venv = ".ci/venv-mpi"
    commands = ci_commands()
    assert commands[-2] == f"python3 -m venv {venv} && {venv}/bin/pip install '.[test,mpi]'"
    assert commands[-1].startswith(f"{venv}/bin/python -m pytest tests/test_distributed.py tests/test_mpi_environment.py")
    assert commands[-1].endswith(" -m 'slow or not slow' -rs")  # every MPI test; a skipped one says why in CI's log
    ignored = (REPO / ".gitignore").read_text(encoding="utf-8").splitlines()
    assert f"{venv}/" in ignored and ".ci/venv-numpy/" in ignored
