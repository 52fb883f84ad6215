"""The package's shape: imports flow one way, heavy modules load only when used, no pickle anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"

# Each module may import only these charrnn modules: CLI → session → training/sampling → model → ops.
# The cli/ package counts as one module.
ALLOWED = {
    "__init__": set(),
    "__main__": {"cli"},
    "cli": {
        "__init__", "cli", "runner", "session", "checkpoint", "config", "errors", "evaluate", "sample",
        "tokenizer", "corpus", "train", "prepare", "summary", "plot", "files", "memory", "model",
    },
    "runner": {"checkpoint", "evaluate", "model", "sample", "session", "train", "config"},
    "session": {
        "checkpoint", "checkpoint_meta", "memory", "model", "optim", "prepare", "run_folder", "train", "config",
        "corpus", "errors", "tokenizer",
    },
    "run_folder": {"errors"},
    "memory": {"errors"},
    "summary": {"checkpoint", "model", "train", "config", "errors"},
    "plot": {"errors", "files"},
    "prepare": {"config", "corpus", "errors", "files", "tokenizer"},
    "checkpoint": {
        "__init__", "checkpoint_meta", "npz_archive", "files", "model", "optim", "config", "errors", "run_folder",
        "tokenizer", "train",
    },
    "checkpoint_meta": {"__init__", "config", "errors", "tokenizer", "train"},
    "npz_archive": {"errors"},
    "files": set(),
    "evaluate": {"backend", "fpu", "model", "config", "errors", "tokenizer"},
    "train": {"backend", "fpu", "model", "optim", "config", "errors", "workspace"},
    "sample": {"backend", "model", "config"},
    "model": {"backend", "cells", "ops", "config", "workspace"},
    "backend": {"cells", "numba_kernels", "ops", "optim", "errors"},
    "numba_kernels": {"cells", "ops", "optim", "workspace"},
    "cells": set(),
    "optim": {"ops", "workspace"},
    "ops": {"workspace", "fpu"},
    "workspace": {"fpu"},
    "fpu": set(),
    "tokenizer": {"config", "errors"},
    "corpus": {"errors"},
    "config": {"errors"},
    "errors": set(),
}
# Third-party modules and the only modules allowed to import them.
CONFINED = {
    "click": {"cli"}, "tqdm": {"cli"}, "jieba": {"tokenizer", "prepare"}, "matplotlib": {"plot"}, "pickle": set(),
    "numba": {"numba_kernels"}, "llvmlite": {"numba_kernels"},
}


def _imports(paths: list[Path]) -> tuple[set[str], set[str]]:
    """(charrnn modules, top-level third-party names) imported anywhere in the files."""
    internal, external = set(), set()
    nodes = [n for path in paths for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "charrnn":
                internal.update("__init__" if a.name == "__version__" else a.name for a in node.names)
            elif node.module.startswith("charrnn."):
                internal.add(node.module.split(".")[1])
            else:
                external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(a.name.split(".")[0] for a in node.names)
    return internal, external


def test_every_module_is_known_and_imports_flow_one_way():
    modules = {p.stem: [p] for p in PACKAGE.glob("*.py")}
    modules["cli"] = sorted((PACKAGE / "cli").glob("*.py"))
    assert set(modules) == set(ALLOWED), "add the new module to ALLOWED with the imports it may make"
    for name, files in modules.items():
        internal, external = _imports(files)
        assert internal <= ALLOWED[name], f"{name} imports {internal - ALLOWED[name]}"
        for library, owners in CONFINED.items():
            assert library not in external or name in owners, f"{name} imports {library}"


def test_help_imports_neither_numpy_nor_tqdm_nor_jieba_nor_numba():
    script = (
        "import sys; from charrnn.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('numpy', 'tqdm', 'jieba', 'numba') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip().endswith("[]")


def test_character_training_and_sampling_never_import_jieba_or_numba(tmp_path, small_corpus):
    script = (
        "import sys; from charrnn.cli import main\n"
        f"main(['train', {str(small_corpus)!r}, '--steps', '2', '--hidden-size', '8', '-q', '--batch-size', '2'],"
        " standalone_mode=False)\n"
        "main(['sample', '--seed', '春', '--length', '5'], standalone_mode=False)\n"
        "print(sorted(m for m in ('jieba', 'numba') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
    assert run.stdout.strip().endswith("[]")
