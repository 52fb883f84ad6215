"""Clipping and Adagrad: exact values, and the sparse update equal to the dense one."""

from __future__ import annotations

import numpy as np

from charrnn import optim
from charrnn.ops import SparseRows


def test_clip_gradients_clamps_dense_and_sparse_in_place():
    dense = np.array([-7.0, 0.5, 9.0])
    sparse = SparseRows(np.array([1]), np.array([[6.0, -6.0]]))
    optim.clip_gradients({"a": dense, "b": sparse}, 5.0)
    assert dense.tolist() == [-5.0, 0.5, 5.0]
    assert sparse.values.tolist() == [[5.0, -5.0]]


def test_adagrad_two_steps_exact_values():
    params = {"w": np.array([1.0, -2.0])}
    state = optim.adagrad_init(params)
    optim.adagrad_update(params, {"w": np.array([0.5, -1.0])}, state, 0.1)
    eps = optim.ADAGRAD_EPSILON
    # G = g², so the first step moves each weight by lr·sign(g) (up to ε).
    first = [1.0 - 0.1 * 0.5 / (0.5 + eps), -2.0 + 0.1 * 1.0 / (1.0 + eps)]
    np.testing.assert_allclose(params["w"], first, rtol=1e-14)
    assert abs(first[0] - 0.9) < 1e-8
    optim.adagrad_update(params, {"w": np.array([0.5, 1.0])}, state, 0.1)
    assert state["w"].tolist() == [0.5, 2.0]
    second = [first[0] - 0.1 * 0.5 / (np.sqrt(0.5) + eps), first[1] - 0.1 * 1.0 / (np.sqrt(2.0) + eps)]
    np.testing.assert_allclose(params["w"], second, rtol=1e-14)


def test_sparse_adagrad_equals_dense_adagrad_exactly():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((6, 3)).astype(np.float32)
    grad_rows = SparseRows(np.array([0, 2, 5]), rng.standard_normal((3, 3)).astype(np.float32))
    dense_params, sparse_params = {"W": weights.copy()}, {"W": weights.copy()}
    dense_state, sparse_state = optim.adagrad_init(dense_params), optim.adagrad_init(sparse_params)
    for _ in range(3):
        optim.adagrad_update(dense_params, {"W": grad_rows.to_dense(6)}, dense_state, 0.1)
        optim.adagrad_update(sparse_params, {"W": grad_rows}, sparse_state, 0.1)
    assert np.array_equal(dense_params["W"], sparse_params["W"])
    assert np.array_equal(dense_state["W"], sparse_state["W"])
    assert np.array_equal(sparse_params["W"][[1, 3, 4]], weights[[1, 3, 4]])
