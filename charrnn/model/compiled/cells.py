"""Compiled twins of model/cells.py: one compiled pass per time step around numpy's product."""

from __future__ import annotations

from typing import Any

import numpy as np

from charrnn.model import cells
from charrnn.model.compiled.arithmetic import kernel, sigmoid, tanh
from charrnn.model.compiled.parallel import HALVES, matmul, rows_apart_from_4k

# --- cells: one compiled pass per time step around numpy's GEMM (the equations are in cells.py) ---------
# The gated kernels loop over views of one gate's H columns at a time: indexing a single array at
# offsets k·H apart, the compiler cannot tell that the columns a step writes are not the ones it reads,
# and gives up vectorising (a GRU step took seven times as long).


@kernel
def _rnn_step_forward(h, recurrent, relu):
    """h ← act(h + recurrent), in place; h holds x_proj_t."""
    zero = h.dtype.type(0.0)
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            a = h[b, j] + recurrent[b, j]
            if relu:
                h[b, j] = zero if a < zero else a  # NaN stays NaN
            else:
                h[b, j] = tanh(a)


@kernel
def _rnn_step_backward(d_pre, h, d_h, dh_next, relu):
    """d_pre ← act'(·) ⊙ (d_h + dh_next), the activation's derivative read off the output h."""
    one, zero = h.dtype.type(1.0), h.dtype.type(0.0)
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            if relu:
                derivative = one if h[b, j] > zero else zero
            else:
                derivative = one - h[b, j] * h[b, j]
            d_pre[b, j] = derivative * (d_h[b, j] + dh_next[b, j])


def rnn_forward(x_proj: np.ndarray, hidden0: cells.Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> cells.CellOutput:
    """cells.rnn_forward, one compiled pass per step."""
    hs, relu = x_proj, activation == "relu"
    w_hh = rows_apart_from_4k(weights["W_hh"], hs.shape[0])

    def loop(first: int, stop: int) -> None:
        h_prev, recurrent = hidden0["h"][first:stop], np.empty((stop - first, hs.shape[2]), dtype=hs.dtype)
        for t in range(hs.shape[0]):
            np.matmul(h_prev, w_hh, out=recurrent)
            _rnn_step_forward(hs[t, first:stop], recurrent, relu)
            h_prev = hs[t, first:stop]

    HALVES.run(loop, hs.shape[1])
    return cells.CellOutput(hs, {"h": hs[-1].copy()}, (hs, hidden0["h"], activation))


def rnn_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, cells.Hidden]:
    """cells.rnn_backward, one compiled pass per step."""
    hs, h0, activation = cache
    relu = activation == "relu"
    d_pre = np.empty_like(hs)
    dh_next = np.zeros_like(h0)
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)

    def loop(first: int, stop: int) -> None:
        dh = dh_next[first:stop]
        for t in range(hs.shape[0] - 1, -1, -1):
            _rnn_step_backward(d_pre[t, first:stop], hs[t, first:stop], d_hs[t, first:stop], dh, relu)
            np.matmul(d_pre[t, first:stop], w_hh_t, out=dh)

    HALVES.run(loop, hs.shape[1])
    return d_pre, {"W_hh": cells.weight_gradient(h0, hs, d_pre, matmul)}, {"h": dh_next}


@kernel
def _lstm_step_forward(a, recurrent, c_prev, c, tanh_c, h):
    """Gates a ← [σ(i), σ(f), σ(o), tanh(g)] of a + recurrent; c, tanh(c) and h of the step."""
    hidden = h.shape[1]
    for b in range(h.shape[0]):
        a_i, a_f, a_o, a_g = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden : 3 * hidden], a[b, 3 * hidden :]
        r_i, r_f = recurrent[b, :hidden], recurrent[b, hidden : 2 * hidden]
        r_o, r_g = recurrent[b, 2 * hidden : 3 * hidden], recurrent[b, 3 * hidden :]
        c_prev_b, c_b, tanh_c_b, h_b = c_prev[b], c[b], tanh_c[b], h[b]
        for j in range(hidden):
            i = sigmoid(a_i[j] + r_i[j])
            f = sigmoid(a_f[j] + r_f[j])
            o = sigmoid(a_o[j] + r_o[j])
            g = tanh(a_g[j] + r_g[j])
            a_i[j], a_f[j], a_o[j], a_g[j] = i, f, o, g
            c_new = f * c_prev_b[j] + i * g
            tc = tanh(c_new)
            c_b[j], tanh_c_b[j], h_b[j] = c_new, tc, o * tc


@kernel
def _lstm_step_backward(a, c_prev, tanh_c, d_h, dh_recurrent, dc_next, d_a):
    """d_a ← the gates' pre-activation gradients; dc_next ← dc ⊙ f, in place."""
    hidden = d_h.shape[1]
    one = d_h.dtype.type(1.0)
    for b in range(d_h.shape[0]):
        a_i, a_f, a_o, a_g = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden : 3 * hidden], a[b, 3 * hidden :]
        d_i, d_f = d_a[b, :hidden], d_a[b, hidden : 2 * hidden]
        d_o, d_g = d_a[b, 2 * hidden : 3 * hidden], d_a[b, 3 * hidden :]
        c_prev_b, tanh_c_b, d_h_b, dh_rec_b, dc_b = c_prev[b], tanh_c[b], d_h[b], dh_recurrent[b], dc_next[b]
        for j in range(hidden):
            i, f, o, g = a_i[j], a_f[j], a_o[j], a_g[j]
            dh = d_h_b[j] + dh_rec_b[j]
            tc = tanh_c_b[j]
            dc = dc_b[j] + dh * o * (one - tc * tc)
            d_i[j] = (dc * g) * (i * (one - i))
            d_f[j] = (dc * c_prev_b[j]) * (f * (one - f))
            d_o[j] = (dh * tc) * (o * (one - o))
            d_g[j] = (dc * i) * (one - g * g)
            dc_b[j] = dc * f


def lstm_forward(x_proj: np.ndarray, hidden0: cells.Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> cells.CellOutput:
    """cells.lstm_forward, one compiled pass per step."""
    steps, batch, gates_width = x_proj.shape
    gates, w_hh = x_proj, rows_apart_from_4k(weights["W_hh"], steps)
    hs = np.empty((steps, batch, gates_width // 4), dtype=x_proj.dtype)
    cs, tanh_cs = np.empty_like(hs), np.empty_like(hs)

    def loop(first: int, stop: int) -> None:
        h, c = hidden0["h"][first:stop], hidden0["c"][first:stop]
        recurrent = np.empty((stop - first, gates_width), dtype=x_proj.dtype)
        for t in range(steps):
            np.matmul(h, w_hh, out=recurrent)
            rows = slice(first, stop)
            _lstm_step_forward(gates[t, rows], recurrent, c, cs[t, rows], tanh_cs[t, rows], hs[t, rows])
            h, c = hs[t, rows], cs[t, rows]

    HALVES.run(loop, batch)
    cache = (gates, cs, tanh_cs, hs, hidden0["h"], hidden0["c"])
    return cells.CellOutput(hs, {"h": hs[-1].copy(), "c": cs[-1].copy()}, cache)


def lstm_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, cells.Hidden]:
    """cells.lstm_backward, one compiled pass per step."""
    gates, cs, tanh_cs, hs, h0, c0 = cache
    d_gates = np.empty_like(gates)
    dh_next, dc_next = np.zeros_like(h0), np.zeros_like(c0)
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)

    def loop(first: int, stop: int) -> None:
        rows = slice(first, stop)
        dh, dc = dh_next[rows], dc_next[rows]
        for t in range(hs.shape[0] - 1, -1, -1):
            c_prev = cs[t - 1, rows] if t > 0 else c0[rows]
            _lstm_step_backward(gates[t, rows], c_prev, tanh_cs[t, rows], d_hs[t, rows], dh, dc, d_gates[t, rows])
            np.matmul(d_gates[t, rows], w_hh_t, out=dh)

    HALVES.run(loop, hs.shape[1])
    return d_gates, {"W_hh": cells.weight_gradient(h0, hs, d_gates, matmul)}, {"h": dh_next, "c": dc_next}


@kernel
def _gru_step_forward(a, recurrent, b_hn, h_prev, hn, h):
    """Gates a ← [r, z, n]; hn ← recurrent_n + b_hn; h ← n + z ⊙ (h_prev − n)."""
    hidden = h.shape[1]
    for b in range(h.shape[0]):
        a_r, a_z, a_n = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden :]
        r_r, r_z, r_n = recurrent[b, :hidden], recurrent[b, hidden : 2 * hidden], recurrent[b, 2 * hidden :]
        h_prev_b, hn_b, h_b = h_prev[b], hn[b], h[b]
        for j in range(hidden):
            r = sigmoid(a_r[j] + r_r[j])
            z = sigmoid(a_z[j] + r_z[j])
            hn_value = r_n[j] + b_hn[j]
            n = tanh(a_n[j] + r * hn_value)
            a_r[j], a_z[j], a_n[j] = r, z, n
            hn_b[j] = hn_value
            h_b[j] = (h_prev_b[j] - n) * z + n


@kernel
def _gru_step_backward(a, hn, h_prev, d_h, dh_gated, dh_recurrent, d_x, d_rec):
    """d_x and d_rec of the step from dh = d_h + dh_gated + dh_recurrent; then dh_gated ← dh ⊙ z."""
    hidden = d_h.shape[1]
    one = d_h.dtype.type(1.0)
    for b in range(d_h.shape[0]):
        a_r, a_z, a_n = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden :]
        dx_r, dx_z, dx_n = d_x[b, :hidden], d_x[b, hidden : 2 * hidden], d_x[b, 2 * hidden :]
        drec_r, drec_z, drec_n = d_rec[b, :hidden], d_rec[b, hidden : 2 * hidden], d_rec[b, 2 * hidden :]
        hn_b, h_prev_b, d_h_b, gated_b, rec_b = hn[b], h_prev[b], d_h[b], dh_gated[b], dh_recurrent[b]
        for j in range(hidden):
            r, z, n = a_r[j], a_z[j], a_n[j]
            dh = d_h_b[j] + gated_b[j] + rec_b[j]
            d_an = dh * (one - z) * (one - n * n)
            d_r = (d_an * hn_b[j]) * (r * (one - r))
            d_z = (dh * (h_prev_b[j] - n)) * (z * (one - z))
            dx_r[j], dx_z[j], dx_n[j] = d_r, d_z, d_an
            drec_r[j], drec_z[j], drec_n[j] = d_r, d_z, d_an * r
            gated_b[j] = dh * z


def gru_forward(x_proj: np.ndarray, hidden0: cells.Hidden, weights: dict[str, np.ndarray], activation: str = "tanh") -> cells.CellOutput:
    """cells.gru_forward, one compiled pass per step."""
    steps, batch, gates_width = x_proj.shape
    gates, w_hh, b_hn = x_proj, rows_apart_from_4k(weights["W_hh"], steps), weights["b_hn"]
    hs = np.empty((steps, batch, gates_width // 3), dtype=x_proj.dtype)
    hns = np.empty_like(hs)

    def loop(first: int, stop: int) -> None:
        rows = slice(first, stop)
        h, recurrent = hidden0["h"][rows], np.empty((stop - first, gates_width), dtype=x_proj.dtype)
        for t in range(steps):
            np.matmul(h, w_hh, out=recurrent)
            _gru_step_forward(gates[t, rows], recurrent, b_hn, h, hns[t, rows], hs[t, rows])
            h = hs[t, rows]

    HALVES.run(loop, batch)
    return cells.CellOutput(hs, {"h": hs[-1].copy()}, (gates, hns, hs, hidden0["h"]))


def gru_backward(d_hs: np.ndarray, cache: Any, weights: dict[str, np.ndarray]) -> tuple[np.ndarray, dict, cells.Hidden]:
    """cells.gru_backward, one compiled pass per step."""
    gates, hns, hs, h0 = cache
    hidden = hs.shape[2]
    d_x, d_rec = np.empty_like(gates), np.empty_like(gates)
    # dh_{t-1} = dh_t ⊙ z_t + d_rec_t W_hhᵀ, kept as its two terms so the GEMM needs no extra pass.
    dh_gated, dh_recurrent = np.zeros_like(h0), np.zeros_like(h0)
    w_hh_t = np.ascontiguousarray(weights["W_hh"].T)

    def loop(first: int, stop: int) -> None:
        rows = slice(first, stop)
        gated, recurrent = dh_gated[rows], dh_recurrent[rows]
        for t in range(hs.shape[0] - 1, -1, -1):
            h_prev = hs[t - 1, rows] if t > 0 else h0[rows]
            _gru_step_backward(gates[t, rows], hns[t, rows], h_prev, d_hs[t, rows], gated, recurrent,
                               d_x[t, rows], d_rec[t, rows])
            np.matmul(d_rec[t, rows], w_hh_t, out=recurrent)

    HALVES.run(loop, hs.shape[1])
    grads = {
        "W_hh": cells.weight_gradient(h0, hs, d_rec, matmul),
        "b_hn": d_rec[:, :, 2 * hidden :].sum(axis=(0, 1)),
    }
    return d_x, grads, {"h": dh_gated + dh_recurrent}


FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"rnn": rnn_backward, "lstm": lstm_backward, "gru": gru_backward}
