"""Gradient clipping and the Adagrad update, over dicts of named arrays.

The functions update arrays in place (parameters, gradients, optimizer state) because copying the
output layer every step would cost as much as a matrix product; they return the state they updated so
a caller can write ``state = adagrad_update(...)`` and keep no hidden state anywhere.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from charrnn.ops import SparseRows

OptimizerState = dict[str, np.ndarray]

ADAGRAD_EPSILON = 1e-8


def clip_gradients(grads: Mapping[str, np.ndarray | SparseRows], clip: float) -> None:
    """Clamp every gradient element to [-clip, clip], in place."""
    for grad in grads.values():
        values = grad.values if isinstance(grad, SparseRows) else grad
        np.clip(values, -clip, clip, out=values)


def adagrad_init(params: Mapping[str, np.ndarray]) -> OptimizerState:
    """Zero accumulated squared gradients, one array per parameter."""
    return {name: np.zeros_like(p) for name, p in params.items()}


def _adagrad_dense(param: np.ndarray, grad: np.ndarray, cache: np.ndarray, lr: float, eps: float) -> None:
    scratch = np.multiply(grad, grad)
    cache += scratch
    np.sqrt(cache, out=scratch)
    scratch += eps
    np.divide(grad, scratch, out=scratch)
    scratch *= lr
    param -= scratch


def adagrad_update(
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray | SparseRows],
    state: OptimizerState,
    learning_rate: float,
    epsilon: float = ADAGRAD_EPSILON,
) -> OptimizerState:
    """One Adagrad step (Duchi et al. 2011), in place on ``params`` and ``state``.

        G += g²;   θ -= lr · g / (√G + ε)

    A SparseRows gradient updates only its rows. This is exact, not an approximation: an untouched
    row has g = 0, so both its G and its θ would be unchanged anyway.
    """
    for name, grad in grads.items():
        param, cache = params[name], state[name]
        if isinstance(grad, SparseRows):
            rows = grad.rows
            param_rows, cache_rows = param[rows], cache[rows]
            _adagrad_dense(param_rows, grad.values, cache_rows, learning_rate, epsilon)
            param[rows] = param_rows
            cache[rows] = cache_rows
        else:
            _adagrad_dense(param, grad, cache, learning_rate, epsilon)
    return state
