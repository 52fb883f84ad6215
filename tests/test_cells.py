"""Recurrent cells: the worked example from the literature, and BPTT against finite differences."""

from __future__ import annotations

import numpy as np
import pytest

from charrnn.model import cells, ops
from conftest import numeric_gradient, relative_error

# Worked example (row-vector convention, state · W): scalar inputs 1 then 2, two hidden units.
W_XH = np.array([[0.5, 0.6]])
W_HH = np.array([[0.1, 0.2], [0.3, 0.4]])
B_H = np.array([0.1, -0.1])
W_HY = np.array([[0.1], [2.0]])
B_Y = np.array([0.1])
INPUTS = np.array([[[1.0]], [[2.0]]])  # (T=2, B=1, D=1)


def _vanilla_pass(h0: np.ndarray) -> cells.CellOutput:
    x_proj = ops.linear_forward(INPUTS, W_XH, B_H)  # x_t W_xh + b_h, as the model projects its inputs
    return cells.rnn_forward(x_proj, {"h": h0}, {"W_hh": W_HH})


def test_worked_example_first_pass_from_a_zero_state():
    first = _vanilla_pass(np.zeros((1, 2)))
    np.testing.assert_allclose(first.hs[:, 0], [[0.53704957, 0.46211716], [0.85973818, 0.88366641]], atol=5e-9)
    np.testing.assert_allclose(ops.linear_forward(first.hs, W_HY, B_Y).ravel(), [1.07793927, 1.95330664], atol=5e-9)


def test_worked_example_second_pass_carries_the_state_over():
    # Truncated BPTT carries the final state of one chunk into the next; published copies of this
    # example print only this second pass.
    first = _vanilla_pass(np.zeros((1, 2)))
    second = _vanilla_pass(first.last["h"])
    np.testing.assert_allclose(second.hs[:, 0], [[0.74026877, 0.7720626], [0.88656589, 0.91491336]], atol=5e-9)
    np.testing.assert_allclose(ops.linear_forward(second.hs, W_HY, B_Y).ravel(), [1.71815207, 2.0184833], atol=5e-9)


def _cell_problem(cell: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    steps, batch, hidden = 4, 3, 5
    width = cells.GATES[cell] * hidden
    x_proj = rng.standard_normal((steps, batch, width))
    hidden0 = {key: rng.standard_normal((batch, hidden)) * 0.5 for key in cells.HIDDEN_KEYS[cell]}
    weights = {"W_hh": rng.standard_normal((hidden, width)) * 0.5}
    weights.update({name: rng.standard_normal(shape(hidden)) * 0.3 for name, shape in cells.EXTRA_WEIGHTS[cell].items()})
    upstream = rng.standard_normal((steps, batch, hidden))
    return x_proj, hidden0, weights, upstream


@pytest.mark.parametrize("cell, activation", [("rnn", "tanh"), ("rnn", "relu"), ("lstm", "tanh"), ("gru", "tanh")])
def test_cell_backward_matches_finite_differences(cell, activation):
    x_proj, hidden0, weights, upstream = _cell_problem(cell)
    forward, backward = cells.FORWARD[cell], cells.BACKWARD[cell]

    def loss() -> float:
        return float((forward(x_proj.copy(), hidden0, weights, activation).hs * upstream).sum())

    out = forward(x_proj.copy(), hidden0, weights, activation)
    d_x, d_weights, d_state0 = backward(upstream, out.cache, weights)
    checks = [(d_x, x_proj)] + [(d_weights[n], weights[n]) for n in weights] + [(d_state0[k], hidden0[k]) for k in hidden0]
    assert set(d_weights) == set(weights) and set(d_state0) == set(hidden0)
    for analytic, array in checks:
        assert relative_error(analytic, numeric_gradient(loss, array)) < 1e-8


def test_lstm_and_gru_match_their_textbook_step_equations():
    x_proj, hidden0, weights, _ = _cell_problem("lstm", seed=1)
    out = cells.lstm_forward(x_proj.copy(), hidden0, weights)
    h, c, hidden = hidden0["h"], hidden0["c"], 5
    sigmoid = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    for t in range(4):
        a = x_proj[t] + h @ weights["W_hh"]
        i, f, o, g = sigmoid(a[:, :5]), sigmoid(a[:, 5:10]), sigmoid(a[:, 10:15]), np.tanh(a[:, 15:])
        c = f * c + i * g
        h = o * np.tanh(c)
    np.testing.assert_allclose(out.last["h"], h, rtol=1e-12)
    np.testing.assert_allclose(out.last["c"], c, rtol=1e-12)

    x_proj, hidden0, weights, _ = _cell_problem("gru", seed=2)
    out = cells.gru_forward(x_proj.copy(), hidden0, weights)
    h = hidden0["h"]
    for t in range(4):
        rec = h @ weights["W_hh"]
        r = sigmoid(x_proj[t, :, :hidden] + rec[:, :hidden])
        z = sigmoid(x_proj[t, :, hidden : 2 * hidden] + rec[:, hidden : 2 * hidden])
        n = np.tanh(x_proj[t, :, 2 * hidden :] + r * (rec[:, 2 * hidden :] + weights["b_hn"]))
        h = (1 - z) * n + z * h
    np.testing.assert_allclose(out.last["h"], h, rtol=1e-12)
