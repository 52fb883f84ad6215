"""Clipping, the learning-rate schedule and the optimizers: exact values, sparse equal to dense."""

from __future__ import annotations

import math

import numpy as np
import pytest

from charrnn.config import TrainConfig
from charrnn.model import optim
from charrnn.model.ops import SparseRows
from charrnn.model.workspace import Workspace

EPS = optim.EPSILON


def test_update_clips_dense_and_sparse_gradients_first():
    params = {"a": np.zeros(3), "b": np.zeros((2, 2))}
    dense = np.array([-7.0, 0.5, 9.0])
    sparse = SparseRows(np.array([1]), np.array([[6.0, -6.0]]))
    state = optim.init_state("adagrad", params)
    optim.update("adagrad", params, {"a": dense, "b": sparse}, state, learning_rate=0.1, clip=5.0)
    assert dense.tolist() == [-5.0, 0.5, 5.0]
    assert sparse.values.tolist() == [[5.0, -5.0]]
    assert state["sum_sq.a"].tolist() == [25.0, 0.25, 25.0]
    assert state["sum_sq.b"].tolist() == [[0.0, 0.0], [25.0, 25.0]]


@pytest.mark.parametrize("name", optim.SLOTS)
def test_threaded_blocks_give_bit_identical_updates(name):
    rng = np.random.default_rng(4)
    weights = rng.standard_normal((700, 1000)).astype(np.float32)
    grad = (rng.standard_normal((700, 1000)) * 4).astype(np.float32)
    results = []
    for workspace in (Workspace(threads=1), Workspace(threads=3)):
        params = {"W": weights.copy()}
        state = optim.init_state(name, params)
        for _ in range(2):
            optim.update(name, params, {"W": grad.copy()}, state, learning_rate=0.01, clip=5.0, run_blocks=workspace.run_blocks)
        results.append((params["W"], state))
    assert np.array_equal(results[0][0], results[1][0])
    assert all(np.array_equal(results[0][1][k], results[1][1][k]) for k in results[0][1])


def test_adagrad_two_steps_exact_values():
    params = {"w": np.array([1.0, -2.0])}
    state = optim.init_state("adagrad", params)
    optim.update("adagrad", params, {"w": np.array([0.5, -1.0])}, state, learning_rate=0.1)
    # G = g², so the first step moves each weight by lr·sign(g) (up to ε).
    first = [1.0 - 0.1 * 0.5 / (0.5 + EPS), -2.0 + 0.1 * 1.0 / (1.0 + EPS)]
    np.testing.assert_allclose(params["w"], first, rtol=1e-14)
    optim.update("adagrad", params, {"w": np.array([0.5, 1.0])}, state, learning_rate=0.1)
    assert state["sum_sq.w"].tolist() == [0.5, 2.0]
    second = [first[0] - 0.1 * 0.5 / (np.sqrt(0.5) + EPS), first[1] - 0.1 * 1.0 / (np.sqrt(2.0) + EPS)]
    np.testing.assert_allclose(params["w"], second, rtol=1e-14)


def test_adagrad_initial_accumulator_makes_small_gradients_take_small_first_steps():
    params = {"w": np.array([1.0, -2.0]), "rows": np.zeros((3, 2))}
    state = optim.init_state("adagrad", params, initial_accumulator=0.1)
    assert state["sum_sq.w"].tolist() == [0.1, 0.1] and (state["sum_sq.rows"] == 0.1).all()
    grads = {"w": np.array([0.001, -3.0]), "rows": SparseRows(np.array([2]), np.array([[0.001, 0.0]]))}
    optim.update("adagrad", params, grads, state, learning_rate=0.1)
    # lr·g/√(G₀ + g²): a gradient of 0.001 moves its weight by 0.0003, not by the full 0.1.
    np.testing.assert_allclose(params["w"], [1.0 - 0.1 * 0.001 / (np.sqrt(0.1 + 1e-6) + EPS),
                                             -2.0 + 0.1 * 3.0 / (np.sqrt(9.1) + EPS)], rtol=1e-14)
    np.testing.assert_allclose(params["rows"][2], [-0.1 * 0.001 / (np.sqrt(0.1 + 1e-6) + EPS), 0.0], rtol=1e-14)
    assert (params["rows"][:2] == 0).all() and state["sum_sq.rows"][2].tolist() == [0.1 + 1e-6, 0.1]
    for other in ("rmsprop", "adam"):  # their slots are averages, which start at zero
        assert not any(value.any() for value in optim.init_state(other, params, initial_accumulator=0.1).values())


def test_rmsprop_exact_values():
    params = {"w": np.array([1.0])}
    state = optim.init_state("rmsprop", params)
    optim.update("rmsprop", params, {"w": np.array([2.0])}, state, learning_rate=0.01)
    mean_sq = 0.05 * 4.0
    assert state["mean_sq.w"][0] == pytest.approx(mean_sq, rel=1e-15)
    assert params["w"][0] == pytest.approx(1.0 - 0.01 * 2.0 / (math.sqrt(mean_sq) + EPS), rel=1e-15)


def test_adam_first_steps_move_by_the_learning_rate():
    params = {"w": np.array([1.0, 1.0])}
    state = optim.init_state("adam", params)
    optim.update("adam", params, {"w": np.array([3.0, -0.001])}, state, learning_rate=0.01)
    # After bias correction the first step is lr · g / (|g| + ε): the learning rate, whatever |g|.
    np.testing.assert_allclose(params["w"], [1.0 - 0.01, 1.0 + 0.01], rtol=1e-6)
    assert int(state["step"]) == 1
    optim.update("adam", params, {"w": np.array([0.0, 0.0])}, state, learning_rate=0.01)
    m = 0.9 * 0.1 * np.array([3.0, -0.001])
    v = 0.999 * 0.001 * np.array([9.0, 1e-6])
    expected_move = 0.01 * (m / (1 - 0.9**2)) / (np.sqrt(v / (1 - 0.999**2)) + EPS)
    np.testing.assert_allclose(params["w"], np.array([0.99, 1.01]) - expected_move, rtol=1e-6)


def test_sparse_adagrad_equals_dense_adagrad_exactly():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((6, 3)).astype(np.float32)
    grad_rows = SparseRows(np.array([0, 2, 5]), rng.standard_normal((3, 3)).astype(np.float32))
    dense_params, sparse_params = {"W": weights.copy()}, {"W": weights.copy()}
    dense_state, sparse_state = optim.init_state("adagrad", dense_params), optim.init_state("adagrad", sparse_params)
    for _ in range(3):
        optim.update("adagrad", dense_params, {"W": grad_rows.to_dense(6)}, dense_state, learning_rate=0.1)
        optim.update("adagrad", sparse_params, {"W": grad_rows}, sparse_state, learning_rate=0.1)
    assert np.array_equal(dense_params["W"], sparse_params["W"])
    assert np.array_equal(dense_state["sum_sq.W"], sparse_state["sum_sq.W"])
    assert np.array_equal(sparse_params["W"][[1, 3, 4]], weights[[1, 3, 4]])


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_sparse_gradients_are_made_dense_for_moment_optimizers(name):
    weights = np.ones((4, 2))
    grad = SparseRows(np.array([1]), np.array([[1.0, -1.0]]))
    sparse_params, dense_params = {"W": weights.copy()}, {"W": weights.copy()}
    sparse_state, dense_state = optim.init_state(name, sparse_params), optim.init_state(name, dense_params)
    for _ in range(2):
        optim.update(name, sparse_params, {"W": grad}, sparse_state, learning_rate=0.01)
        optim.update(name, dense_params, {"W": grad.to_dense(4)}, dense_state, learning_rate=0.01)
    assert np.array_equal(sparse_params["W"], dense_params["W"])


def test_learning_rate_schedule():
    config = TrainConfig(learning_rate=0.1, lr_decay=0.5, lr_decay_after=2, max_steps=1)
    assert optim.learning_rate_at(config, 0) == 0.1
    assert optim.learning_rate_at(config, 2) == 0.1
    assert optim.learning_rate_at(config, 3) == 0.05
    assert optim.learning_rate_at(config, 5) == 0.0125
    assert optim.state_layout("adam", {"w": (2, 3)}) == {"m.w": (2, 3), "v.w": (2, 3), "step": ()}


@pytest.mark.parametrize("name", ["adagrad", "rmsprop", "adam"])
@pytest.mark.parametrize("sparse", [False, True])
def test_the_blockwise_update_equals_its_plain_twin(name, sparse):
    rng = np.random.default_rng(6)
    shapes = {"W": (7, 5), "b": (5,)}
    params = {n: rng.standard_normal(s) for n, s in shapes.items()}
    plain_params = {n: p.copy() for n, p in params.items()}
    state, plain_state = optim.init_state(name, params), optim.init_state(name, params)
    for _ in range(3):
        grads = {n: rng.standard_normal(s) * 4 for n, s in shapes.items()}  # some beyond the clip
        if sparse:
            grads["W"] = SparseRows(np.array([1, 4, 6]), rng.standard_normal((3, 5)) * 4)
        plain_grads = {n: (g.to_dense(7) if isinstance(g, SparseRows) else g.copy()) for n, g in grads.items()}
        optim.update(name, params, grads, state, learning_rate=0.03, clip=2.0,
                     run_blocks=Workspace(threads=2).run_blocks)
        optim.update_plain(name, plain_params, plain_grads, plain_state, learning_rate=0.03, clip=2.0)
    for n in params:
        np.testing.assert_allclose(params[n], plain_params[n], rtol=1e-12)
    for key in state:
        np.testing.assert_allclose(state[key], plain_state[key], rtol=1e-12)
