"""The numpy building blocks: the worked example from the literature and finite-difference checks."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn import ops
from conftest import numeric_gradient, relative_error

# Worked example (row-vector convention, state · W): scalar inputs 1 then 2, two hidden units.
W_XH = np.array([[0.5, 0.6]])
W_HH = np.array([[0.1, 0.2], [0.3, 0.4]])
B_H = np.array([0.1, -0.1])
W_HY = np.array([[0.1], [2.0]])
B_Y = np.array([0.1])
INPUTS = np.array([[[1.0]], [[2.0]]])  # (T=2, B=1, D=1)


def test_worked_example_step_by_step_matches_published_values():
    h = np.zeros((1, 2))
    states, outputs = [], []
    for _ in range(2):  # the second pass carries the state over, as truncated BPTT does
        for x in INPUTS:
            h = ops.rnn_step_forward(x @ W_XH, h, W_HH, B_H)
            states.append(h[0].copy())
            outputs.append(ops.linear_forward(h, W_HY, B_Y)[0, 0])
    np.testing.assert_allclose(
        states,
        [[0.53704957, 0.46211716], [0.85973818, 0.88366641], [0.74026877, 0.7720626], [0.88656589, 0.91491336]],
        atol=5e-9,
    )
    np.testing.assert_allclose(outputs, [1.07793927, 1.95330664, 1.71815207, 2.0184833], atol=5e-9)


def test_worked_example_through_the_sequence_forward():
    first = ops.rnn_forward(INPUTS @ W_XH, np.zeros((1, 2)), W_HH, B_H)
    second = ops.rnn_forward(INPUTS @ W_XH, first[-1], W_HH, B_H)
    np.testing.assert_allclose(ops.linear_forward(first, W_HY, B_Y).ravel(), [1.07793927, 1.95330664], atol=5e-9)
    np.testing.assert_allclose(second[-1, 0], [0.88656589, 0.91491336], atol=5e-9)
    np.testing.assert_allclose(ops.linear_forward(second, W_HY, B_Y).ravel(), [1.71815207, 2.0184833], atol=5e-9)


def test_rnn_backward_matches_finite_differences_including_initial_state():
    rng = np.random.default_rng(0)
    steps, batch, hidden = 4, 3, 6
    x_proj = rng.standard_normal((steps, batch, hidden))
    h0 = rng.standard_normal((batch, hidden)) * 0.5
    w_hh = rng.standard_normal((hidden, hidden)) * 0.5
    b_h = rng.standard_normal(hidden) * 0.1
    upstream = rng.standard_normal((steps, batch, hidden))

    def loss() -> float:
        return float((ops.rnn_forward(x_proj, h0, w_hh, b_h) * upstream).sum())

    hs = ops.rnn_forward(x_proj, h0, w_hh, b_h)
    d_x, d_w, d_b, d_h0 = ops.rnn_backward(upstream, hs, h0, w_hh)
    for analytic, array in [(d_x, x_proj), (d_w, w_hh), (d_b, b_h), (d_h0, h0)]:
        assert relative_error(analytic, numeric_gradient(loss, array)) < 1e-8


def test_softmax_cross_entropy_value_and_gradient():
    logits = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    targets = np.array([2, 0])
    loss, grad = ops.softmax_cross_entropy(logits.copy(), targets)
    expected = (-np.log(np.exp(3) / np.exp([1, 2, 3]).sum()) + np.log(3)) / 2
    assert loss == pytest.approx(expected, abs=1e-12)
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 7))
    targets = rng.integers(7, size=5)
    _, grad = ops.softmax_cross_entropy(logits.copy(), targets)
    numeric = numeric_gradient(lambda: ops.softmax_cross_entropy(logits.copy(), targets)[0], logits)
    assert relative_error(grad, numeric) < 1e-8


def test_softmax_cross_entropy_in_place_and_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [0.0, -1000.0]], dtype=np.float32)
    loss, grad = ops.softmax_cross_entropy(logits, np.array([0, 0]), out=logits)
    assert grad is logits
    assert loss == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(grad, [[0, 0], [0, 0]], atol=1e-6)


def test_linear_backward_matches_finite_differences():
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 5)), rng.standard_normal(5)
    upstream = rng.standard_normal((4, 5))

    def loss() -> float:
        return float((ops.linear_forward(x, w, b) * upstream).sum())

    d_x, d_w, d_b = ops.linear_backward(upstream, x, w)
    for analytic, array in [(d_x, x), (d_w, w), (d_b, b)]:
        assert relative_error(analytic, numeric_gradient(loss, array)) < 1e-8


def test_embedding_backward_sums_repeated_ids_into_sorted_rows():
    ids = np.array([[3, 1], [3, 0]])
    d_out = np.arange(8, dtype=np.float64).reshape(2, 2, 2)
    grad = ops.embedding_backward(d_out, ids)
    assert grad.rows.tolist() == [0, 1, 3]
    assert grad.values.tolist() == [[6.0, 7.0], [2.0, 3.0], [0.0 + 4.0, 1.0 + 5.0]]
    dense = grad.to_dense(5)
    assert dense.shape == (5, 2) and dense[2].tolist() == [0.0, 0.0] and dense[4].tolist() == [0.0, 0.0]
