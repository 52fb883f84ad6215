"""Which code runs the hot loops: numpy (the readable reference) or numba's compiled twins of it.

A ``Kernels`` table is chosen once, by ``select``, and handed to the functions that do the math
(model.loss_and_grads, model.token_losses, model.step, the training step's optimizer update), which
call through it instead of reaching for an implementation themselves. Every entry has the signature
and the meaning of the numpy function it is named after, so the two tables are interchangeable:

    cell_forward[cell], cell_backward[cell]   cells.FORWARD / cells.BACKWARD
    matmul                                    np.matmul (the model's large products)
    embedding_backward                        ops.embedding_backward
    softmax_cross_entropy                     ops.softmax_cross_entropy
    cross_entropy_per_token                   ops.cross_entropy_per_token
    optimizer_update                          optim.update

The numba table's kernels live in the compiled/ package, imported only when it is chosen, so numpy-only installs
and commands that do not train never load numba.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping

import numpy as np

from charrnn.model import cells, ops, optim
from charrnn.config import BACKENDS
from charrnn.errors import CharRNNNote, ConfigError
from charrnn.install import extra_hint

@dataclass(frozen=True)
class Kernels:
    """The functions a training step, an evaluation and sampling run their hot loops with."""

    name: str  # "numpy" or "numba": which implementation this is
    cell_forward: Mapping[str, Callable]
    cell_backward: Mapping[str, Callable]
    matmul: Callable
    embedding_backward: Callable
    softmax_cross_entropy: Callable
    cross_entropy_per_token: Callable
    optimizer_update: Callable


NUMPY = Kernels(
    name="numpy",
    cell_forward=cells.FORWARD,
    cell_backward=cells.BACKWARD,
    matmul=np.matmul,
    embedding_backward=ops.embedding_backward,
    softmax_cross_entropy=ops.softmax_cross_entropy,
    cross_entropy_per_token=ops.cross_entropy_per_token,
    optimizer_update=optim.update,
)


def select(name: str = "auto", sampling: bool = False) -> Kernels:
    """The kernels of backend ``name``: "numpy", "numba", or "auto" (numba when it imports, else numpy).

    For ``sampling``, "auto" means numpy: one token at a time is dominated by the output layer's
    product, which both backends leave to BLAS (measured: the compiled cells gain nothing there), and
    importing numba would add a fifth of a second to every ``charrnn sample``.
    Raises ConfigError for an unknown name, or for "numba" when numba cannot be imported or cannot
    start (a NUMBA_ variable it refuses, such as NUMBA_NUM_THREADS=0); "auto" then falls back to
    numpy, with a CharRNNNote saying why when numba is installed.
    """
    if name not in BACKENDS:
        raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}; got {name!r}")
    if name == "numpy" or (name == "auto" and sampling):
        return NUMPY
    try:
        return _compiled()
    except ImportError as exc:
        if name == "numba":
            raise ConfigError(
                f"the numba backend needs numba, which could not be imported ({exc}); "
                f"install it with {extra_hint('fast')}, or choose --backend numpy"
            ) from None
        return NUMPY
    except Exception as exc:  # noqa: BLE001 - numba is there but refuses to start; say why in one line
        said = str(exc).strip().splitlines()
        settings = ", ".join(f"{key}={value}" for key, value in sorted(os.environ.items()) if key.startswith("NUMBA_"))
        reason = f"numba cannot start ({type(exc).__name__}{': ' + said[0] if said else ''}"
        reason += f"; the environment sets {settings})" if settings else ")"
        if name == "numba":
            raise ConfigError(f"{reason}; correct or unset the variable, or choose --backend numpy") from None
        warnings.warn(CharRNNNote(f"{reason}; using the numpy backend"), stacklevel=2)
        return NUMPY


# numba's own warning when it cannot parse one of its environment variables (it then ignores it), which
# carries a whole traceback in its text.
_UNPARSED = re.compile(r"Environment variable '(\w+)' is defined but its associated value '(.*?)' could not be parsed")


def _compiled() -> Kernels:
    """The numba table; raises what importing numba raises. numba's warnings about its environment
    variables become one-line notes; other warnings pass on as they were."""
    with warnings.catch_warnings(record=True) as caught:
        from charrnn.model.compiled import cells as compiled_cells
        from charrnn.model.compiled import ops as compiled_ops
        from charrnn.model.compiled import optim as compiled_optim
        from charrnn.model.compiled import parallel
    for warning in caught:
        unparsed = _UNPARSED.search(str(warning.message))
        if unparsed:
            variable, value = unparsed.groups()
            warnings.warn(CharRNNNote(f"numba ignores {variable}={value}, a value it cannot read, and runs as if it "
                                      "were unset"), stacklevel=3)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return Kernels(
        name="numba",
        cell_forward=compiled_cells.FORWARD,
        cell_backward=compiled_cells.BACKWARD,
        matmul=parallel.matmul,
        embedding_backward=compiled_ops.embedding_backward,
        softmax_cross_entropy=compiled_ops.softmax_cross_entropy,
        cross_entropy_per_token=compiled_ops.cross_entropy_per_token,
        optimizer_update=compiled_optim.update,
    )
