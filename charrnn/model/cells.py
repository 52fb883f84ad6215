"""Recurrent cells over a whole sequence, as pure numpy functions: forward beside backward.

Every cell takes its input already projected, ``x_proj`` (T, B, G·H) = x_t W_xh + b_h for all steps at
once (G gates: 1 for the vanilla cell, 4 for LSTM, 3 for GRU), so the only work left inside the loop
over T is one (B, H)·(H, G·H) product and elementwise math. ``forward`` overwrites ``x_proj`` (the
caller builds it fresh each step) and returns the states, the final state and a cache for
``backward``; ``backward`` takes the loss gradient reaching every state from above and returns the
gradient of ``x_proj``, of the cell's own weights and of the initial state. All weight gradients are
one GEMM over all T·B rows after the loop.

Row-vector convention throughout (h @ W). Shapes: T steps, B streams, H hidden units.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import numpy as np

GATES = {"rnn": 1, "lstm": 4, "gru": 3}
HIDDEN_KEYS = {"rnn": ("h",), "lstm": ("h", "c"), "gru": ("h",)}
# Weights each cell owns besides the input projection: name -> shape as a function of H.
EXTRA_WEIGHTS = {"rnn": {}, "lstm": {}, "gru": {"b_hn": lambda hidden: (hidden,)}}

Hidden = dict[str, np.ndarray]


class CellOutput(NamedTuple):
    """What a cell's forward pass returns."""

    hs: np.ndarray  # (T, B, H) hidden state after every step
    last: Hidden  # final state, e.g. {"h": (B, H), "c": (B, H)}
    cache: Any  # what backward needs


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    # σ(x) = (1 + tanh(x/2)) / 2: one transcendental call, no overflow for large |x|, in place.
    x *= 0.5
    np.tanh(x, out=x)
    x += 1.0
    x *= 0.5
    return x


def weight_gradient(
    h_prev_first: np.ndarray, hs: np.ndarray, d_pre: np.ndarray, matmul: Callable[..., np.ndarray] = np.matmul
) -> np.ndarray:
    """Σ_t h_{t-1}ᵀ d_pre_t: one GEMM over steps 1..T−1 (whose h_{t-1} are hs[:-1]) plus step 0's.

    ``matmul`` multiplies two matrices (a backend may pass its own, see backend.py).
    """
    hidden, width = hs.shape[2], d_pre.shape[2]
    grad = h_prev_first.T @ d_pre[0]
    if len(hs) > 1:
        grad += matmul(hs[:-1].reshape(-1, hidden).T, d_pre[1:].reshape(-1, width))
    return grad


# --- vanilla: h_t = act(x_proj_t + h_{t-1} W_hh), act = tanh or relu ----------------------------------


def rnn_forward(x_proj: np.ndarray, hidden0: Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> CellOutput:
    """Vanilla cell over T steps; ``x_proj`` (T, B, H) becomes the states."""
    hs, h_prev, w_hh = x_proj, hidden0["h"], weights["W_hh"]
    recurrent = np.empty_like(h_prev)
    for t in range(hs.shape[0]):
        np.matmul(h_prev, w_hh, out=recurrent)
        hs[t] += recurrent
        if activation == "tanh":
            np.tanh(hs[t], out=hs[t])
        else:
            np.maximum(hs[t], 0, out=hs[t])
        h_prev = hs[t]
    return CellOutput(hs, {"h": hs[-1].copy()}, (hs, hidden0["h"], activation))


def rnn_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, Hidden]:
    """BPTT for ``rnn_forward``: (d_x_proj (T, B, H), {"W_hh": (H, H)}, {"h": dh0 (B, H)})."""
    hs, h0, activation = cache
    # The activation's derivative for every step at once: tanh'(a) = 1 − h², relu'(a) = [h > 0]. It
    # becomes the gradient of the pre-activations, step by step, below.
    if activation == "tanh":
        d_pre = np.multiply(hs, hs)
        np.subtract(1.0, d_pre, out=d_pre)
    else:
        d_pre = (hs > 0).astype(hs.dtype)
    dh_next = np.zeros_like(h0)  # the gradient reaching h_t from step t + 1 (none after the last step)
    # A contiguous copy: BLAS multiplies by it a fifth faster than by the transposed view.
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)
    for t in range(hs.shape[0] - 1, -1, -1):
        dh = d_hs[t] + dh_next  # from the layer above, and from the next step through W_hh
        d_pre[t] *= dh  # through the activation: act'(a_t) ⊙ dh
        dh_next = d_pre[t] @ w_hh_t  # to h_{t-1}
    return d_pre, {"W_hh": weight_gradient(h0, hs, d_pre)}, {"h": dh_next}


# --- LSTM (Hochreiter & Schmidhuber 1997, with forget gate): gates i, f, o, g in that order -------------
#   c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)


def lstm_forward(x_proj: np.ndarray, hidden0: Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> CellOutput:
    """LSTM over T steps; ``x_proj`` (T, B, 4H) becomes the gate activations."""
    steps, batch, gates_width = x_proj.shape
    hidden = gates_width // 4
    gates, w_hh = x_proj, weights["W_hh"]
    hs = np.empty((steps, batch, hidden), dtype=x_proj.dtype)
    cs = np.empty_like(hs)
    tanh_cs = np.empty_like(hs)
    h, c = hidden0["h"], hidden0["c"]
    recurrent = np.empty((batch, gates_width), dtype=x_proj.dtype)
    for t in range(steps):
        a = gates[t]
        np.matmul(h, w_hh, out=recurrent)
        a += recurrent
        _sigmoid_(a[:, : 3 * hidden])
        np.tanh(a[:, 3 * hidden :], out=a[:, 3 * hidden :])
        i, f, o, g = a[:, :hidden], a[:, hidden : 2 * hidden], a[:, 2 * hidden : 3 * hidden], a[:, 3 * hidden :]
        np.multiply(f, c, out=cs[t])
        cs[t] += i * g
        np.tanh(cs[t], out=tanh_cs[t])
        np.multiply(o, tanh_cs[t], out=hs[t])
        h, c = hs[t], cs[t]
    cache = (gates, cs, tanh_cs, hs, hidden0["h"], hidden0["c"])
    return CellOutput(hs, {"h": hs[-1].copy(), "c": cs[-1].copy()}, cache)


def lstm_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, Hidden]:
    """BPTT for ``lstm_forward``: (d_x_proj (T, B, 4H), {"W_hh"}, {"h": dh0, "c": dc0})."""
    gates, cs, tanh_cs, hs, h0, c0 = cache
    hidden = hs.shape[2]
    d_gates = np.empty_like(gates)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(c0)
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)  # as in rnn_backward: BLAS is faster on it
    for t in range(hs.shape[0] - 1, -1, -1):
        a = gates[t]
        i, f, o, g = a[:, :hidden], a[:, hidden : 2 * hidden], a[:, 2 * hidden : 3 * hidden], a[:, 3 * hidden :]
        c_prev = cs[t - 1] if t > 0 else c0
        dh = d_hs[t] + dh_next
        tc = tanh_cs[t]
        dc = dc_next + dh * o * (1.0 - tc * tc)
        d = d_gates[t]
        np.multiply(dc * g, i * (1.0 - i), out=d[:, :hidden])
        np.multiply(dc * c_prev, f * (1.0 - f), out=d[:, hidden : 2 * hidden])
        np.multiply(dh * tc, o * (1.0 - o), out=d[:, 2 * hidden : 3 * hidden])
        np.multiply(dc * i, 1.0 - g * g, out=d[:, 3 * hidden :])
        dc_next = dc * f
        dh_next = d @ w_hh_t
    return d_gates, {"W_hh": weight_gradient(h0, hs, d_gates)}, {"h": dh_next, "c": dc_next}


# --- GRU (Cho et al. 2014, in the form cuDNN and PyTorch use): gates r, z, n in that order -------------
#   r = σ(x_r + h W_hr),  z = σ(x_z + h W_hz),  n = tanh(x_n + r ⊙ (h W_hn + b_hn)),  h' = n + z ⊙ (h − n)


def gru_forward(x_proj: np.ndarray, hidden0: Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> CellOutput:
    """GRU over T steps; ``x_proj`` (T, B, 3H) becomes [r, z, n] activations."""
    steps, batch, gates_width = x_proj.shape
    hidden = gates_width // 3
    gates, w_hh, b_hn = x_proj, weights["W_hh"], weights["b_hn"]
    hs = np.empty((steps, batch, hidden), dtype=x_proj.dtype)
    hns = np.empty_like(hs)  # h W_hn + b_hn, needed by backward
    h = hidden0["h"]
    recurrent = np.empty((batch, gates_width), dtype=x_proj.dtype)
    for t in range(steps):
        a = gates[t]
        np.matmul(h, w_hh, out=recurrent)
        a[:, : 2 * hidden] += recurrent[:, : 2 * hidden]
        _sigmoid_(a[:, : 2 * hidden])
        r, z, n = a[:, :hidden], a[:, hidden : 2 * hidden], a[:, 2 * hidden :]
        np.add(recurrent[:, 2 * hidden :], b_hn, out=hns[t])
        n += r * hns[t]
        np.tanh(n, out=n)
        np.subtract(h, n, out=hs[t])
        hs[t] *= z
        hs[t] += n
        h = hs[t]
    return CellOutput(hs, {"h": hs[-1].copy()}, (gates, hns, hs, hidden0["h"]))


def gru_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, Hidden]:
    """BPTT for ``gru_forward``: (d_x_proj (T, B, 3H), {"W_hh", "b_hn"}, {"h": dh0})."""
    gates, hns, hs, h0 = cache
    hidden = hs.shape[2]
    d_x = np.empty_like(gates)
    d_rec = np.empty_like(gates)  # gradient of h W_hh (+ b_hn for the n block)
    dh_next = np.zeros_like(h0)
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)  # as in rnn_backward: BLAS is faster on it
    for t in range(hs.shape[0] - 1, -1, -1):
        a = gates[t]
        r, z, n = a[:, :hidden], a[:, hidden : 2 * hidden], a[:, 2 * hidden :]
        h_prev = hs[t - 1] if t > 0 else h0
        dh = d_hs[t] + dh_next
        d_an = dh * (1.0 - z) * (1.0 - n * n)
        np.multiply(d_an * hns[t], r * (1.0 - r), out=d_x[t][:, :hidden])
        np.multiply(dh * (h_prev - n), z * (1.0 - z), out=d_x[t][:, hidden : 2 * hidden])
        d_x[t][:, 2 * hidden :] = d_an
        d_rec[t][:, : 2 * hidden] = d_x[t][:, : 2 * hidden]
        np.multiply(d_an, r, out=d_rec[t][:, 2 * hidden :])
        dh_next = dh * z + d_rec[t] @ w_hh_t
    grads = {
        "W_hh": weight_gradient(h0, hs, d_rec),
        "b_hn": d_rec[:, :, 2 * hidden :].sum(axis=(0, 1)),
    }
    return d_x, grads, {"h": dh_next}


FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"rnn": rnn_backward, "lstm": lstm_backward, "gru": gru_backward}
