"""Compiled twins of charrnn's hot loops, for the optional ``fast`` extra (numba).

Each function here has the signature and the meaning of a numpy function it stands in for, which
stays the readable reference and the twin a test holds it equal to:

    rnn/lstm/gru_forward, _backward   cells.py's cells: the GEMM of each step stays on BLAS (numpy's
                                      matmul), and everything elementwise around it is one compiled
                                      pass per step instead of a dozen numpy calls
    matmul                            np.matmul for the model's large products, in two halves at once
    embedding_backward                ops.embedding_backward: the rows of each distinct id summed in
                                      one pass
    softmax_cross_entropy             ops.softmax_cross_entropy: bias, softmax, loss and gradient in
                                      one pass per row block
    cross_entropy_per_token           ops.cross_entropy_per_token (evaluation)
    update                            optim.update: clip and Adagrad (dense or sparse rows), RMSProp
                                      or Adam in one pass per block

backend.py imports this module only when the numba backend is asked for (or "auto" finds numba).

The loop over time steps stays in Python: per step it costs a matmul call and one compiled call
(about 2 µs together, against 150 µs for a GRU step's GEMM and 16 µs for its fused pass at B 32, H 256),
so compiling the loop itself, with BLAS called from numba (which needs scipy), would gain a few per
cent at most. The recurrences run over two halves of the batch at once (``_BatchHalves``).

Transcendentals: numba calls the C library's scalar tanhf and expf, which no compiler vectorises, so
for float32 this module carries its own (a rational tanh as Eigen uses, within 5 ulp, and Cephes' expf,
within 1 ulp), written as plain arithmetic that the compiler turns into SIMD code. float64 uses the
exact scalar functions.

Subnormals: the kernels never produce a subnormal float where training would otherwise make them,
so they run at full speed even on a thread that does not flush them (see fpu.py): the softmax floors
logits EXP_RANGE below their row's maximum (as the numpy code does on such a thread), and the
optimizers flush a square, or an average decaying towards zero, that falls below the smallest normal
float, which is what a flushing processor does to it.

Compiled code is cached on disk by numba beside this file (``__pycache__``), or, where that folder is
read-only, in the user's cache folder (``~/.cache/numba``), or in ``NUMBA_CACHE_DIR`` if that is set;
with none of them writable the kernels are compiled afresh in every process.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import math
import os
from typing import Any, Callable, Mapping, Optional

import numba
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from charrnn.model import cells, optim
from charrnn.model.ops import BlockRunner, EXP_RANGE, SparseRows, one_block

# No "nnan"/"ninf": a diverging model must still produce NaN and infinity, which training reports.
_FASTMATH = {"contract", "arcp", "nsz"}


def _compiled(function: Optional[Callable] = None, **options: Any) -> Any:
    """numba.njit with charrnn's options, cached on disk where any cache folder is writable."""
    if function is None:
        return lambda f: _compiled(f, **options)
    settings = {"nogil": True, "error_model": "numpy", "fastmath": _FASTMATH, **options}
    try:
        return numba.njit(cache=True, **settings)(function)
    except RuntimeError:  # numba found no writable cache folder: compile in every process instead
        return numba.njit(cache=False, **settings)(function)


# --- float32 tanh and exp as vectorisable arithmetic -------------------------------------------------


@intrinsic
def _float32_from_bits(typingctx, bits):
    """Reinterpret an int32 as the float32 with the same bits (to build 2ⁿ from its exponent field)."""
    signature = types.float32(types.int32)

    def codegen(context, builder, sig, args):
        return builder.bitcast(args[0], ir.FloatType())

    return signature, codegen


# tanh(x) ≈ x·P(x²)/Q(x²) on |x| ≤ 7.9988, where it rounds to ±1 in float32 (Eigen's fast tanh).
_TANH_CLAMP = np.float32(7.99881172180175781)
_TANH_LINEAR = np.float32(0.0004)
_P0, _P1, _P2, _P3, _P4, _P5, _P6 = (np.float32(c) for c in (
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
))
_Q0, _Q1, _Q2, _Q3 = (np.float32(c) for c in (
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03,
))

# exp(x) = 2ⁿ·e^r with n = round(x / ln 2), r = x − n·ln 2 (ln 2 in two parts), e^r by Cephes' expf
# polynomial; valid for −87 ≤ x ≤ 88, so that 2ⁿ is a normal float32.
_LOG2_E = np.float32(1.44269504088896341)
_LN2_HIGH, _LN2_LOW = np.float32(0.693359375), np.float32(-2.12194440e-4)
_E0, _E1, _E2, _E3, _E4, _E5 = (np.float32(c) for c in (
    1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1,
))
_F32_HALF, _F32_ONE = np.float32(0.5), np.float32(1.0)


@_compiled
def _tanh_float32(x):
    # Clamped so that NaN passes through (a comparison with NaN is false).
    x = _TANH_CLAMP if x > _TANH_CLAMP else x
    x = -_TANH_CLAMP if x < -_TANH_CLAMP else x
    x2 = x * x
    p = ((((((_P0 * x2 + _P1) * x2 + _P2) * x2 + _P3) * x2 + _P4) * x2 + _P5) * x2 + _P6) * x
    q = ((_Q0 * x2 + _Q1) * x2 + _Q2) * x2 + _Q3
    return x if abs(x) < _TANH_LINEAR else p / q  # tanh x = x in float32 below 0.0004


@_compiled
def _exp_float32(x):
    n = np.floor(x * _LOG2_E + _F32_HALF)
    r = (x - n * _LN2_HIGH) - n * _LN2_LOW
    p = (((((_E0 * r + _E1) * r + _E2) * r + _E3) * r + _E4) * r + _E5) * r * r + r + _F32_ONE
    return p * _float32_from_bits((np.int32(n) + np.int32(127)) << 23)


def _tanh(x):
    """tanh in the precision of ``x`` (compiled code only)."""
    return math.tanh(x)


def _exp(x):
    """exp in the precision of ``x``, for −87 ≤ x ≤ 88 (compiled code only)."""
    return math.exp(x)


@overload(_tanh)
def _tanh_typed(x):
    if x == types.float32:
        return lambda x: _tanh_float32(x)
    return lambda x: math.tanh(x)


@overload(_exp)
def _exp_typed(x):
    if x == types.float32:
        return lambda x: _exp_float32(x)
    return lambda x: math.exp(x)


def _sigmoid(x):
    """σ(x) = (1 + tanh(x/2)) / 2 in the precision of ``x``, as cells._sigmoid_ computes it (compiled code only)."""
    return (math.tanh(x * 0.5) + 1.0) * 0.5


@overload(_sigmoid)
def _sigmoid_typed(x):
    if x == types.float32:
        return lambda x: (_tanh_float32(x * _F32_HALF) + _F32_ONE) * _F32_HALF
    return lambda x: (math.tanh(x * 0.5) + 1.0) * 0.5


# --- running a recurrence over two halves of the batch at once -------------------------------------------


def _openblas_threads() -> Optional[tuple[Callable[[], int], Callable[[int], None]]]:
    """(get, set) of the thread count of the OpenBLAS numpy calls, or None where it cannot be found."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        # numpy's wheels bundle scipy-openblas with 64-bit-integer symbols; other builds use plain names.
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                get = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                set_ = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if get is not None and set_ is not None:
                    set_.argtypes = [ctypes.c_int]
                    return get, set_
    return None


class _BatchHalves:
    """Runs a recurrence over the two halves of its batch at once, each on a thread of its own.

    The steps of a recurrence run one after another, but its B streams are independent. Splitting each
    step's small GEMM over two BLAS threads meets at a barrier twice per step, and on a busy machine
    waits there for a thread that is not running: a training step became ten to a hundred times
    slower. Two threads that each take half the streams never wait for each other until the end, and
    the elementwise passes are split too. BLAS runs single-threaded meanwhile (each half has a core).
    Without two cores, or where numpy's OpenBLAS cannot be told its thread count, the loop runs whole.
    """

    MIN_BATCH = 8  # smaller batches are not worth a thread

    def __init__(self) -> None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self._blas = _openblas_threads() if cores > 1 else None
        self._pool: Optional[concurrent.futures.ThreadPoolExecutor] = None

    def run(self, loop: Callable[[int, int], None], batch: int) -> None:
        """``loop(first, stop)`` over streams 0..B−1: in two halves at once, or whole."""
        if self._blas is None or batch < self.MIN_BATCH:
            loop(0, batch)
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="charrnn-recurrence")
        get_threads, set_threads = self._blas
        threads = get_threads()
        set_threads(1)
        try:
            half = batch // 2
            other = self._pool.submit(loop, half, batch)
            loop(0, half)
            other.result()  # re-raises an error from the other half
        finally:
            set_threads(threads)


_HALVES = _BatchHalves()


# Products smaller than this (multiply-adds) run whole: a thread's hand-over costs more than it saves.
_SPLIT_MIN_MULTIPLY_ADDS = 1 << 22


def matmul(a: np.ndarray, b: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """np.matmul of two matrices; a large one computed as two halves of ``a``'s rows at once.

    As with the recurrences (``_BatchHalves``): two single-threaded BLAS calls that meet once, rather
    than one two-threaded call whose threads meet at every block of the product.
    """
    if out is None:
        out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    if a.shape[0] * a.shape[1] * b.shape[1] < _SPLIT_MIN_MULTIPLY_ADDS:
        return np.matmul(a, b, out=out)
    _HALVES.run(lambda first, stop: np.matmul(a[first:stop], b, out=out[first:stop]), a.shape[0])
    return out


def _rows_apart_from_4k(matrix: np.ndarray, steps: int) -> np.ndarray:
    """``matrix``, or, where its rows lie a multiple of 4 KiB apart and it is used for several steps, a copy
    with 16 spare columns per row.

    Rows at such distances compete for the same cache sets (4K aliasing): OpenBLAS multiplied (32, 256)
    by an LSTM's (256, 1024) W_hh at 64 GFLOP/s, and by the padded copy at 84.
    """
    if steps < 2 or matrix.strides[0] % 4096:
        return matrix
    padded = np.empty((matrix.shape[0], matrix.shape[1] + 16), dtype=matrix.dtype)[:, : matrix.shape[1]]
    padded[...] = matrix
    return padded


# --- cells: one compiled pass per time step around numpy's GEMM (the equations are in cells.py) ---------
# The gated kernels loop over views of one gate's H columns at a time: indexing a single array at
# offsets k·H apart, the compiler cannot tell that the columns a step writes are not the ones it reads,
# and gives up vectorising (a GRU step took seven times as long).


@_compiled
def _rnn_step_forward(h, recurrent, relu):
    """h ← act(h + recurrent), in place; h holds x_proj_t."""
    zero = h.dtype.type(0.0)
    for b in range(h.shape[0]):
        for j in range(h.shape[1]):
            a = h[b, j] + recurrent[b, j]
            if relu:
                h[b, j] = zero if a < zero else a  # NaN stays NaN
            else:
                h[b, j] = _tanh(a)


@_compiled
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
    w_hh = _rows_apart_from_4k(weights["W_hh"], hs.shape[0])

    def loop(first: int, stop: int) -> None:
        h_prev, recurrent = hidden0["h"][first:stop], np.empty((stop - first, hs.shape[2]), dtype=hs.dtype)
        for t in range(hs.shape[0]):
            np.matmul(h_prev, w_hh, out=recurrent)
            _rnn_step_forward(hs[t, first:stop], recurrent, relu)
            h_prev = hs[t, first:stop]

    _HALVES.run(loop, hs.shape[1])
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

    _HALVES.run(loop, hs.shape[1])
    return d_pre, {"W_hh": cells.weight_gradient(h0, hs, d_pre, matmul)}, {"h": dh_next}


@_compiled
def _lstm_step_forward(a, recurrent, c_prev, c, tanh_c, h):
    """Gates a ← [σ(i), σ(f), σ(o), tanh(g)] of a + recurrent; c, tanh(c) and h of the step."""
    hidden = h.shape[1]
    for b in range(h.shape[0]):
        a_i, a_f, a_o, a_g = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden : 3 * hidden], a[b, 3 * hidden :]
        r_i, r_f = recurrent[b, :hidden], recurrent[b, hidden : 2 * hidden]
        r_o, r_g = recurrent[b, 2 * hidden : 3 * hidden], recurrent[b, 3 * hidden :]
        c_prev_b, c_b, tanh_c_b, h_b = c_prev[b], c[b], tanh_c[b], h[b]
        for j in range(hidden):
            i = _sigmoid(a_i[j] + r_i[j])
            f = _sigmoid(a_f[j] + r_f[j])
            o = _sigmoid(a_o[j] + r_o[j])
            g = _tanh(a_g[j] + r_g[j])
            a_i[j], a_f[j], a_o[j], a_g[j] = i, f, o, g
            c_new = f * c_prev_b[j] + i * g
            tc = _tanh(c_new)
            c_b[j], tanh_c_b[j], h_b[j] = c_new, tc, o * tc


@_compiled
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
    gates, w_hh = x_proj, _rows_apart_from_4k(weights["W_hh"], steps)
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

    _HALVES.run(loop, batch)
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

    _HALVES.run(loop, hs.shape[1])
    return d_gates, {"W_hh": cells.weight_gradient(h0, hs, d_gates, matmul)}, {"h": dh_next, "c": dc_next}


@_compiled
def _gru_step_forward(a, recurrent, b_hn, h_prev, hn, h):
    """Gates a ← [r, z, n]; hn ← recurrent_n + b_hn; h ← n + z ⊙ (h_prev − n)."""
    hidden = h.shape[1]
    for b in range(h.shape[0]):
        a_r, a_z, a_n = a[b, :hidden], a[b, hidden : 2 * hidden], a[b, 2 * hidden :]
        r_r, r_z, r_n = recurrent[b, :hidden], recurrent[b, hidden : 2 * hidden], recurrent[b, 2 * hidden :]
        h_prev_b, hn_b, h_b = h_prev[b], hn[b], h[b]
        for j in range(hidden):
            r = _sigmoid(a_r[j] + r_r[j])
            z = _sigmoid(a_z[j] + r_z[j])
            hn_value = r_n[j] + b_hn[j]
            n = _tanh(a_n[j] + r * hn_value)
            a_r[j], a_z[j], a_n[j] = r, z, n
            hn_b[j] = hn_value
            h_b[j] = (h_prev_b[j] - n) * z + n


@_compiled
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
    gates, w_hh, b_hn = x_proj, _rows_apart_from_4k(weights["W_hh"], steps), weights["b_hn"]
    hs = np.empty((steps, batch, gates_width // 3), dtype=x_proj.dtype)
    hns = np.empty_like(hs)

    def loop(first: int, stop: int) -> None:
        rows = slice(first, stop)
        h, recurrent = hidden0["h"][rows], np.empty((stop - first, gates_width), dtype=x_proj.dtype)
        for t in range(steps):
            np.matmul(h, w_hh, out=recurrent)
            _gru_step_forward(gates[t, rows], recurrent, b_hn, h, hns[t, rows], hs[t, rows])
            h = hs[t, rows]

    _HALVES.run(loop, batch)
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

    _HALVES.run(loop, hs.shape[1])
    grads = {
        "W_hh": cells.weight_gradient(h0, hs, d_rec, matmul),
        "b_hn": d_rec[:, :, 2 * hidden :].sum(axis=(0, 1)),
    }
    return d_x, grads, {"h": dh_gated + dh_recurrent}


FORWARD = {"rnn": rnn_forward, "lstm": lstm_forward, "gru": gru_forward}
BACKWARD = {"rnn": rnn_backward, "lstm": lstm_backward, "gru": gru_backward}


# --- embedding gradient ---------------------------------------------------------------------------------


@_compiled
def _add_rows_into(values, slots, rows):
    """values[slots[i]] += rows[i] for every i, in order."""
    for i in range(rows.shape[0]):
        target, source = values[slots[i]], rows[i]
        for j in range(source.shape[0]):
            target[j] += source[j]


def embedding_backward(d_out: np.ndarray, ids: np.ndarray) -> SparseRows:
    """ops.embedding_backward: each distinct id's rows of ``d_out`` summed in one compiled pass."""
    flat_ids = ids.reshape(-1)
    flat_grad = d_out.reshape(len(flat_ids), -1)
    rows = np.unique(flat_ids)
    values = np.zeros((len(rows), flat_grad.shape[1]), dtype=d_out.dtype)
    _add_rows_into(values, np.searchsorted(rows, flat_ids), flat_grad)
    return SparseRows(rows, values)


# --- softmax with cross-entropy -----------------------------------------------------------------------


@_compiled(fastmath=_FASTMATH | {"nnan", "reassoc"})
def _row_max(z):
    # nnan lets this vectorise; a NaN it misses still makes the row's exp, and so its loss, NaN.
    largest = z[0]
    for v in range(1, z.shape[0]):
        largest = z[v] if z[v] > largest else largest
    return largest


@_compiled(fastmath=_FASTMATH | {"reassoc"})
def _softmax_cross_entropy_rows(logits, targets, bias, inverse_count, losses, start, stop):
    """Rows start..stop−1 of ops.softmax_cross_entropy: logits ← (softmax(z + bias) − onehot) / N."""
    floor = logits.dtype.type(-EXP_RANGE)
    one = logits.dtype.type(1.0)
    for row in range(start, stop):
        z = logits[row]
        if bias.shape[0]:
            for v in range(z.shape[0]):
                z[v] += bias[v]
        largest = _row_max(z)
        target = targets[row]
        target_z = z[target]
        # Shifted by the row maximum and floored EXP_RANGE below it: exp never overflows, and
        # no probability comes out subnormal.
        total = z.dtype.type(0.0)
        for v in range(z.shape[0]):
            shifted = z[v] - largest
            e = _exp(floor if shifted < floor else shifted)
            z[v] = e
            total += e
        losses[row] = math.log(np.float64(total)) - (np.float64(target_z) - np.float64(largest))
        scale = (one / total) * inverse_count
        for v in range(z.shape[0]):
            z[v] *= scale
        z[target] -= inverse_count


def softmax_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    bias: Optional[np.ndarray] = None,
    run_blocks: BlockRunner = one_block,
    floor_subnormals: bool = True,
) -> tuple[float, np.ndarray]:
    """ops.softmax_cross_entropy in one compiled pass per row block (``logits`` becomes the gradient).

    It floors small probabilities always (``floor_subnormals`` is accepted for the same signature): a
    compiled loop costs nothing extra for it.
    """
    count, vocab = logits.shape
    losses = np.empty(count, dtype=np.float64)
    inverse_count = logits.dtype.type(1.0 / count)
    bias_or_none = np.empty(0, dtype=logits.dtype) if bias is None else bias

    def block(start: int, stop: int) -> None:
        _softmax_cross_entropy_rows(logits, targets, bias_or_none, inverse_count, losses, start, stop)

    run_blocks(block, count, vocab)
    return float(losses.sum()) * (1.0 / count), logits


@_compiled(fastmath=_FASTMATH | {"reassoc"})
def _cross_entropy_rows(logits, targets, losses):
    floor = logits.dtype.type(-EXP_RANGE)
    for row in range(logits.shape[0]):
        z = logits[row]
        largest = _row_max(z)
        total = 0.0
        for v in range(z.shape[0]):
            shifted = z[v] - largest
            total += np.float64(_exp(floor if shifted < floor else shifted))
        losses[row] = math.log(total) - (np.float64(z[targets[row]]) - np.float64(largest))


def cross_entropy_per_token(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ops.cross_entropy_per_token in one compiled pass over each row; ``logits`` is left as it is."""
    losses = np.empty(len(targets), dtype=np.float64)
    _cross_entropy_rows(logits, targets, losses)
    return losses


# --- clipping and the optimizers (the equations are in optim.py) ---------------------------------------


@_compiled
def _clipped(g, clip):
    """g clamped to ±clip; NaN stays NaN."""
    g = clip if g > clip else g
    return -clip if g < -clip else g


@_compiled
def _square(g, root_tiny):
    """g², or 0 where it would be subnormal (what a flushing processor makes of it), never computing one."""
    zero = root_tiny - root_tiny  # 0 in the kernel's precision (a literal 0 would make this float64)
    return g * g if abs(g) >= root_tiny else zero


# Each block kernel updates elements start..stop−1 of flat arrays. They index views of the block from
# zero: an index the compiler cannot prove non-negative gets a wrap-around check that stops vectorising.


@_compiled
def _adagrad_elements(param, grad, sum_sq, lr, clip, root_tiny):
    eps = param.dtype.type(optim.EPSILON)
    for k in range(param.shape[0]):
        g = _clipped(grad[k], clip)
        grad[k] = g  # clipped in place, as np.clip(out=grad) does
        s = sum_sq[k] + _square(g, root_tiny)
        sum_sq[k] = s
        param[k] -= g / (np.sqrt(s) + eps) * lr


@_compiled
def _adagrad_block(param, grad, sum_sq, lr, clip, root_tiny, start, stop):
    _adagrad_elements(param[start:stop], grad[start:stop], sum_sq[start:stop], lr, clip, root_tiny)


@_compiled
def _adagrad_rows(param, sum_sq, rows, values, lr, clip, root_tiny):
    for index in range(rows.shape[0]):
        row = rows[index]
        _adagrad_elements(param[row], values[index], sum_sq[row], lr, clip, root_tiny)


@_compiled
def _rmsprop_block(param, grad, mean_sq, lr, clip, root_tiny, start, stop):
    param, grad, mean_sq = param[start:stop], grad[start:stop], mean_sq[start:stop]
    eps = param.dtype.type(optim.EPSILON)
    decay, zero = param.dtype.type(optim.RMSPROP_DECAY), param.dtype.type(0.0)
    rest = param.dtype.type(1.0 - optim.RMSPROP_DECAY)
    tiny = root_tiny * root_tiny
    for k in range(param.shape[0]):
        g = _clipped(grad[k], clip)
        grad[k] = g
        average = mean_sq[k] * decay + rest * _square(g, root_tiny)
        average = average if average >= tiny else zero  # it would decay into the subnormals
        mean_sq[k] = average
        param[k] -= lr * g / (np.sqrt(average) + eps)


@_compiled
def _adam_block(param, grad, m, v, lr_corrected, v_correction, clip, root_tiny, start, stop):
    param, grad, m, v = param[start:stop], grad[start:stop], m[start:stop], v[start:stop]
    eps = param.dtype.type(optim.EPSILON)
    beta1, beta2 = param.dtype.type(optim.ADAM_BETAS[0]), param.dtype.type(optim.ADAM_BETAS[1])
    # 1 − β in float64 first, as numpy's update computes it: in float32, 1 − 0.999f is 5e-5 off.
    rest1, rest2 = param.dtype.type(1.0 - optim.ADAM_BETAS[0]), param.dtype.type(1.0 - optim.ADAM_BETAS[1])
    zero = param.dtype.type(0.0)
    tiny = root_tiny * root_tiny
    for k in range(param.shape[0]):
        g = _clipped(grad[k], clip)
        grad[k] = g
        first = m[k] * beta1 + rest1 * g
        second = v[k] * beta2 + rest2 * _square(g, root_tiny)
        # Both averages decay towards zero where the gradient stays zero, and would become subnormal.
        first = first if abs(first) >= tiny else zero
        second = second if second >= tiny else zero
        m[k], v[k] = first, second
        param[k] -= lr_corrected * first / (np.sqrt(second) * v_correction + eps)


def update(
    optimizer: str,
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, optim.Gradient],
    state: optim.OptimizerState,
    *,
    learning_rate: float,
    clip: Optional[float] = None,
    run_blocks: BlockRunner = one_block,
) -> optim.OptimizerState:
    """optim.update with each block's clip and update in one compiled pass."""
    if optimizer == "adam":
        state["step"] += 1
    step = int(state["step"]) if optimizer == "adam" else 0
    beta1, beta2 = optim.ADAM_BETAS
    for name, grad in grads.items():
        param = params[name]
        scalar = param.dtype.type
        lr, limit = scalar(learning_rate), scalar(math.inf if clip is None else clip)
        root_tiny = scalar(math.sqrt(np.finfo(param.dtype).tiny))
        if isinstance(grad, SparseRows):
            if optimizer == "adagrad":
                _adagrad_rows(param, state[f"sum_sq.{name}"], grad.rows, grad.values, lr, limit, root_tiny)
                continue
            grad = grad.to_dense(param.shape[0])
        flat = [param.reshape(-1), grad.reshape(-1)] + [state[f"{slot}.{name}"].reshape(-1) for slot in optim.SLOTS[optimizer]]
        if optimizer == "adagrad":
            kernel, settings = _adagrad_block, (lr, limit, root_tiny)
        elif optimizer == "rmsprop":
            kernel, settings = _rmsprop_block, (lr, limit, root_tiny)
        else:
            lr_corrected = scalar(learning_rate / (1.0 - beta1**step))
            v_correction = scalar(1.0 / math.sqrt(1.0 - beta2**step))
            kernel, settings = _adam_block, (lr_corrected, v_correction, limit, root_tiny)
        # run_blocks returns only when every block is done, so the closure's variables stay valid.
        run_blocks(lambda start, stop: kernel(*flat, *settings, start, stop), param.size)
    return state
