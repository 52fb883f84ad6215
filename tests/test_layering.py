"""The package's shape: imports flow one way, heavy modules load only when used, no pickle anywhere."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "charrnn"

# The packages in layers, top first: a module may import modules of lower layers, and of its own package
# only as ALLOWED says (so the order inside a package is written down too). Plain modules at the top of
# charrnn (config, settings, errors, files, install, memory, mpi_environment, plot, progress) form the bottom layer. The cli/ package counts
# as one module.
LAYERS = [["__main__"], ["cli"], ["training"], ["inference", "checkpoints"], ["data", "model"], [""]]
ALLOWED = {
    "__init__": set(),
    "__main__": {"cli"},
    "cli": {
        "__init__", "cli", "config", "model.backend", "errors", "files", "install", "memory", "plot", "settings",
        "checkpoints.checkpoint", "checkpoints.folder_files", "checkpoints.info", "checkpoints.listing",
        "data.corpus", "data.token_cache", "inference.fill", "inference.sampling", "inference.scoring", "model.network",
        "training.distributed", "training.loop", "training.runner", "training.session", "mpi_environment",
    },
    "training.session": {
        "model.backend",
        "checkpoints.checkpoint", "checkpoints.folder_files", "checkpoints.metadata", "config", "data.corpus",
        "data.streams", "data.token_cache", "data.tokenizer", "errors", "memory", "model.network", "model.optim", "training.corpus_data",
        "training.distributed", "training.folder",
        "training.loop", "training.resume", "mpi_environment",
    },
    "training.corpus_data": {
        "checkpoints.checkpoint", "config", "data.corpus", "data.streams", "data.token_cache", "data.tokenizer", "errors",
    },
    "training.resume": {"config", "errors", "settings"},
    "training.runner": {
        "checkpoints.checkpoint", "checkpoints.folder_files", "config", "errors", "inference.sampling", "inference.scoring",
        "model.network", "model.optim", "training.distributed", "training.loop", "training.session",
    },
    "training.distributed": {"errors", "install", "model.network", "model.ops", "mpi_environment"},
    "training.loop": {
        "config", "errors", "model.backend", "model.bidirectional", "model.network", "model.optim",
        "model.workspace", "progress",
    },
    "training.folder": {"checkpoints.checkpoint", "checkpoints.folder_files", "data.corpus", "errors", "files"},
    "inference.sampling": {"config", "model.backend", "model.network"},
    "inference.fill": {
        "config", "data.tokenizer", "errors", "model.backend", "model.bidirectional", "model.network",
    },
    "inference.scoring": {
        "config", "data.tokenizer", "errors", "model.backend", "model.bidirectional", "model.network",
    },
    "checkpoints.checkpoint": {
        "__init__", "checkpoints.archive", "checkpoints.metadata", "config", "data.tokenizer", "errors", "files",
        "model.network", "model.optim", "progress",
    },
    "checkpoints.listing": {"checkpoints.checkpoint", "checkpoints.folder_files", "checkpoints.metadata", "errors"},
    "checkpoints.folder_files": {"checkpoints.checkpoint", "errors"},
    "checkpoints.info": {"checkpoints.checkpoint", "config", "errors", "files", "model.network", "model.optim"},
    "checkpoints.metadata": {"__init__", "config", "data.tokenizer", "errors", "progress", "settings"},
    "checkpoints.archive": {"errors"},
    "data.token_cache": {"config", "data.corpus", "data.parallel_tokenize", "data.tokenizer", "errors", "files"},
    "data.parallel_tokenize": {"data.tokenizer", "errors"},
    "data.tokenizer": {"config", "errors"},
    "data.corpus": {"errors"},
    "data.streams": {"errors"},
    "model.network": {"config", "model.backend", "model.cells", "model.ops", "model.workspace"},
    "model.bidirectional": {"config", "model.backend", "model.network", "model.ops", "model.workspace"},
    "model.backend": {
        "config", "errors", "install", "model.cells", "model.ops", "model.optim", "model.compiled.cells",
        "model.compiled.ops", "model.compiled.optim", "model.compiled.parallel",
    },
    "model.compiled.cells": {"model.cells", "model.compiled.arithmetic", "model.compiled.parallel"},
    "model.compiled.ops": {"model.ops", "model.compiled.arithmetic"},
    "model.compiled.optim": {"model.optim", "model.ops", "model.compiled.arithmetic"},
    "model.compiled.parallel": {"mpi_environment"},
    "model.compiled.arithmetic": {"errors"},
    "model.optim": {"config", "model.ops"},
    "model.ops": set(),
    "model.workspace": {"mpi_environment"},
    "model.cells": set(),
    "model.reference": set(),
    "plot": {"errors", "files", "install"},
    "install": set(),
    "mpi_environment": set(),
    "memory": {"errors"},
    "progress": set(),
    "files": {"errors"},
    "config": {"errors", "settings"},
    "settings": {"errors"},
    "errors": set(),
}
# Third-party modules and the only modules allowed to import them.
CONFINED = {
    "click": {"cli"}, "tqdm": {"cli"}, "jieba": {"data.tokenizer", "data.token_cache"}, "matplotlib": {"plot"},
    "pickle": set(), "numba": {"model.compiled.arithmetic"}, "llvmlite": {"model.compiled.arithmetic"},
    "threadpoolctl": {"model.compiled.parallel"}, "mpi4py": {"training.distributed"},
}


def _module_name(path: Path) -> str:
    """``data.corpus`` for charrnn/data/corpus.py; the whole cli/ package is ``cli``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return "cli" if parts[0] == "cli" else ".".join(parts)


def _imports(paths: list[Path]) -> tuple[set[str], set[str]]:
    """(charrnn modules, top-level third-party names) imported anywhere in the files."""
    internal, external = set(), set()
    nodes = [n for path in paths for n in ast.walk(ast.parse(path.read_text(encoding="utf-8")))]
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "charrnn":
            module = node.module.partition(".")[2]
            if module.startswith("cli"):
                internal.add("cli")
            elif (PACKAGE / module.replace(".", "/") / "__init__.py").exists() or not module:
                # from charrnn import config / from charrnn.data import corpus: the names are modules
                internal.update("__init__" if a.name == "__version__" else ".".join(filter(None, [module, a.name]))
                                for a in node.names)
            else:
                internal.add(module)
        elif isinstance(node, ast.ImportFrom) and node.module:
            external.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            external.update(a.name.split(".")[0] for a in node.names)
    return internal, external


def _package(module: str) -> str:
    """The subpackage a module is in ("" for the plain modules of charrnn and for cli, __main__)."""
    return module.split(".")[0] if "." in module else ""


def _layer(module: str) -> int:
    return next(i for i, group in enumerate(LAYERS) if module in group or (_package(module) or module) in group
                or (not _package(module) and "" in group))


def test_every_module_is_known_and_imports_flow_one_way():
    modules: dict[str, list[Path]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "__init__.py" and path.parent != PACKAGE and path.parent.name != "cli":
            assert _imports([path]) == (set(), set()), f"{path} should only describe its package"
            continue
        modules.setdefault(_module_name(path), []).append(path)
    assert set(modules) == set(ALLOWED), "add the new module to ALLOWED with the imports it may make"
    for name, files in modules.items():
        internal, external = _imports(files)
        assert internal <= ALLOWED[name], f"{name} imports {internal - ALLOWED[name]}"
        for imported in internal - {"__init__", name}:
            same_package = _package(imported) == _package(name)  # ordered by ALLOWED alone
            assert same_package or _layer(imported) > _layer(name), f"{name} imports {imported} from above"
        for library, owners in CONFINED.items():
            assert library not in external or name in owners, f"{name} imports {library}"


def test_the_allowed_imports_have_no_cycle():
    remaining = {name: set(deps) - {"__init__", name} for name, deps in ALLOWED.items()}
    while remaining:
        leaves = [name for name, deps in remaining.items() if not deps & set(remaining)]
        assert leaves, f"a cycle among {sorted(remaining)}"
        for name in leaves:
            del remaining[name]


def test_help_imports_neither_numpy_nor_tqdm_nor_jieba_nor_numba():
    script = (
        "import sys; from charrnn.cli import main\n"
        "try: main(['--help'])\n"
        "except SystemExit: pass\n"
        "print(sorted(m for m in ('numpy', 'tqdm', 'jieba', 'numba') if m in sys.modules))"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert run.stdout.strip().endswith("[]")


def test_character_training_never_imports_jieba_and_sampling_imports_neither_jieba_nor_numba(tmp_path, small_corpus):
    def imported(*commands: list[str]) -> list[str]:
        script = (
            "import sys; from charrnn.cli import main\n"
            + "".join(f"main({command!r}, standalone_mode=False)\n" for command in commands)
            + "print(sorted(m for m in ('jieba', 'numba') if m in sys.modules))"
        )
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, check=True)
        return eval(run.stdout.strip().splitlines()[-1])  # the printed list of names

    # Training may use numba (the auto backend picks it when installed); a sample, which it does not
    # speed up, must start without it (a fifth of a second) unless asked for.
    assert "jieba" not in imported([
        "train", str(small_corpus), "--steps", "2", "--hidden-size", "8", "-q", "--batch-size", "2"])
    assert imported(["sample", "--seed", "春", "--length", "5"]) == []
    assert imported(["sample", "--seed", "春", "--length", "5", "--backend", "numpy"]) == []
