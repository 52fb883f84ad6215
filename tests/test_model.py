"""The model: every parameter's gradient against finite differences, and consistency of its paths."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import model, ops
from charrnn.config import ModelConfig
from conftest import numeric_gradient, relative_error

VOCAB, HIDDEN, STEPS, BATCH = 5, 6, 4, 3


def _tiny_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    config = ModelConfig(vocab_size=VOCAB, hidden_size=HIDDEN, dtype="float64")
    params = model.init_params(config, rng, init_scale=0.5)
    params["b_h"] += rng.standard_normal(HIDDEN) * 0.1  # non-zero biases exercise their gradients fully
    params["b_y"] += rng.standard_normal(VOCAB) * 0.1
    inputs = rng.integers(VOCAB, size=(STEPS, BATCH))
    targets = rng.integers(VOCAB, size=(STEPS, BATCH))
    h0 = rng.standard_normal((BATCH, HIDDEN)) * 0.5  # a carried, non-zero state
    return params, inputs, targets, h0


@pytest.mark.parametrize("name", model.PARAM_NAMES)
def test_gradient_matches_centered_finite_differences(name):
    params, inputs, targets, h0 = _tiny_problem()
    result = model.loss_and_grads(params, inputs, targets, h0)
    analytic = result.grads[name]
    if isinstance(analytic, ops.SparseRows):
        analytic = analytic.to_dense(VOCAB)
    numeric = numeric_gradient(lambda: model.loss_and_grads(params, inputs, targets, h0).loss_nats, params[name])
    assert relative_error(analytic, numeric) < 1e-6


def test_loss_at_initialisation_is_near_uniform_baseline():
    config = ModelConfig(vocab_size=50, hidden_size=16, dtype="float64")
    params = model.init_params(config, np.random.default_rng(0))
    inputs = np.zeros((5, 2), dtype=np.int64)
    result = model.loss_and_grads(params, inputs, inputs, model.initial_state(config, 2))
    assert result.loss_nats == pytest.approx(np.log(50), abs=1e-3)


def test_single_steps_reproduce_the_sequence_forward():
    params, inputs, targets, h0 = _tiny_problem(1)
    hidden = h0
    for t in range(STEPS):
        logits, hidden = model.step(params, inputs[t], hidden)
    result = model.loss_and_grads(params, inputs, targets, h0)
    np.testing.assert_allclose(hidden, result.h_last, rtol=1e-12)
    np.testing.assert_allclose(
        logits, ops.linear_forward(result.h_last, params["W_hy"], params["b_y"]), rtol=1e-12
    )


def test_init_params_shapes_dtype_and_determinism():
    config = ModelConfig(vocab_size=7, hidden_size=3)
    first = model.init_params(config, np.random.default_rng(5))
    second = model.init_params(config, np.random.default_rng(5))
    assert {n: p.shape for n, p in first.items()} == {
        "W_xh": (7, 3), "W_hh": (3, 3), "b_h": (3,), "W_hy": (3, 7), "b_y": (7,)
    }
    assert all(p.dtype == np.float32 for p in first.values())
    assert all(np.array_equal(first[n], second[n]) for n in first)
    assert model.count_parameters(first) == 7 * 3 + 3 * 3 + 3 + 3 * 7 + 7
    assert not first["b_h"].any() and 0.005 < float(np.std(first["W_xh"])) < 0.02
