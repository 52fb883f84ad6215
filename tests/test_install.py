"""Install hints point at this project's own source, never at the unrelated 'charrnn' on the package index."""

from __future__ import annotations

import configparser
import re
import shlex
from pathlib import Path

from charrnn.install import extra_hint, source_folder

REPO = Path(__file__).resolve().parent.parent
# `pip install charrnn`, 'charrnn[plot]', "charrnn[fast]": anything that would fetch the name from PyPI.
BY_NAME = re.compile(r"pip install\s+['\"]?charrnn(\[|['\"\s]|$)", re.M)


def test_a_hint_names_the_source_folder_when_there_is_one(tmp_path):
    assert source_folder(REPO) == REPO
    assert extra_hint("plot", REPO) == f"pip install {shlex.quote(f'{REPO}[plot]')}"
    spaced = tmp_path / "my src"
    spaced.mkdir()
    (spaced / "setup.cfg").write_text("[metadata]\nname = charrnn\n", encoding="utf-8")
    assert extra_hint("fast", spaced) == f"pip install '{spaced}[fast]'"


def test_elsewhere_a_hint_says_to_install_from_the_source_folder(tmp_path):
    (tmp_path / "setup.cfg").write_text("[metadata]\nname = charrnn-other\n", encoding="utf-8")
    site = tmp_path / "site-packages"
    site.mkdir()
    for folder in (tmp_path, site):
        assert source_folder(folder) is None
        assert extra_hint("plot", folder) == (
            "pip install '.[plot]' in charrnn's source folder "
            "(not 'charrnn[plot]': that name on PyPI is another project)"
        )


def test_no_file_of_the_project_installs_charrnn_by_name():
    texts = [REPO / "README.md", REPO / "setup.cfg", *REPO.glob("docs/*.md"), *REPO.glob("charrnn/**/*.py"),
             *REPO.glob("bench/*.py"), *REPO.glob("scripts/*")]
    offenders = [str(path.relative_to(REPO)) for path in texts if BY_NAME.search(path.read_text(encoding="utf-8"))]
    assert offenders == []
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "unrelated project" in readme  # and says why


def test_the_test_extra_is_the_numpy_test_tools_and_numba():
    """'.[test]' is the full test setup; '.[test-numpy]' the same tools without numba, for the suite as an
    install without '.[fast]' meets it (CI runs both)."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    extras = {name: set(value.split()) for name, value in setup["options.extras_require"].items()}
    assert extras["test"] == extras["test-numpy"] | extras["fast"]
    assert not any(requirement.startswith("numba") for requirement in extras["test-numpy"])


def test_the_mpi_extra_brings_mpi4py_and_an_mpiexec_and_nothing_else_needs_them():
    """'.[mpi]' is mpi4py with the MPICH wheel (its mpiexec); no other extra pulls them in, so that an install
    without it never loads MPI (CI installs '.[test,mpi]' in an environment of its own)."""
    setup = configparser.ConfigParser()
    setup.read(REPO / "setup.cfg", encoding="utf-8")
    extras = {name: set(value.split()) for name, value in setup["options.extras_require"].items()}
    assert {requirement.split(">")[0] for requirement in extras["mpi"]} == {"mpi4py", "mpich"}
    others = set().union(*(value for name, value in extras.items() if name != "mpi"))
    assert not any(requirement.startswith(("mpi4py", "mpich")) for requirement in others)
    assert "mpi4py" not in setup["options"]["install_requires"]
