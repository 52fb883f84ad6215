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


def test_ci_runs_the_readme_quick_start_commands_in_order():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    ci_lines = [line for line in ci if line and not line.startswith(("#", "set ", "cd "))]
    commands = quick_start_commands()
    assert len(commands) == 2, commands
    assert ci_lines == commands
    assert "charrnn train data/" in commands[0] and commands[1].endswith("-m pytest")
