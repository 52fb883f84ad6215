"""The suite never sees the user's working state: run right after the quick start, it still passes."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import REPO


def test_each_test_runs_in_an_empty_folder_of_its_own_without_charrnn_variables():
    cwd = Path.cwd().resolve()
    assert cwd != REPO and REPO not in cwd.parents
    assert list(cwd.iterdir()) == []
    assert not [name for name in os.environ if name.upper().startswith(("CHARRNN_", "_CHARRNN_"))]
