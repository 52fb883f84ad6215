"""Pure numpy building blocks of the RNN language model, each backward beside its forward.

Conventions: row vectors (a state times a weight matrix, ``h @ W``), time-major arrays, and these
letters in shapes: T steps, B parallel streams, H hidden units, V vocabulary entries, N = T·B tokens.
No function keeps state or does I/O; the only mutation is into an ``out`` array the caller passes.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np


class SparseRows(NamedTuple):
    """A gradient that is zero except in some rows: ``dense[rows] == values``, ``rows`` unique, sorted.

    The embedding's gradient touches only the rows of tokens that occurred in the batch, so carrying
    just those rows keeps the update proportional to the batch, not to the vocabulary.
    """

    rows: np.ndarray  # (U,) int
    values: np.ndarray  # (U, H)

    def to_dense(self, num_rows: int) -> np.ndarray:
        """The full (num_rows, H) gradient."""
        dense = np.zeros((num_rows, self.values.shape[1]), dtype=self.values.dtype)
        dense[self.rows] = self.values
        return dense


# --- embedding: x_t W_xh for a one-hot x_t is row ids[t] of W_xh -------------------------------------


def embedding_forward(weights: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Rows of ``weights`` (V, H) picked by ``ids`` (any shape S): shape S + (H,)."""
    return weights[ids]


def embedding_backward(d_out: np.ndarray, ids: np.ndarray) -> SparseRows:
    """Gradient of ``embedding_forward`` w.r.t. the weights, summed per distinct id.

    ``d_out`` has shape S + (H,) for ``ids`` of shape S. Equal ids are gathered together by a stable
    sort and summed with one ``add.reduceat``, so no Python loop runs per token.
    """
    flat_ids = ids.reshape(-1)
    flat_grad = d_out.reshape(len(flat_ids), -1)
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    values = np.add.reduceat(flat_grad[order], starts, axis=0)
    return SparseRows(sorted_ids[starts], values)


# --- affine layer: y = x W + b ------------------------------------------------------------------------


def linear_forward(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x`` (..., D) times ``weights`` (D, O) plus ``bias`` (O,): shape (..., O)."""
    out = x @ weights
    out += bias
    return out


def linear_backward(
    d_out: np.ndarray, x: np.ndarray, weights: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``linear_forward`` for ``x`` (N, D), ``d_out`` (N, O): (dx, dW, db).

    One GEMM each for the input and the weight gradients, over all N rows at once.
    """
    return d_out @ weights.T, x.T @ d_out, d_out.sum(axis=0)


# --- vanilla RNN: h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h) ---------------------------------------------


def rnn_step_forward(
    x_proj: np.ndarray, h_prev: np.ndarray, w_hh: np.ndarray, b_h: np.ndarray
) -> np.ndarray:
    """One step: ``x_proj`` (B, H) is the input already projected (x_t W_xh); returns h_t (B, H)."""
    return np.tanh(x_proj + h_prev @ w_hh + b_h)


def rnn_forward(x_proj: np.ndarray, h0: np.ndarray, w_hh: np.ndarray, b_h: np.ndarray) -> np.ndarray:
    """All hidden states (T, B, H) for projected inputs ``x_proj`` (T, B, H) from state ``h0`` (B, H).

    The bias is added to every step's input at once, so the loop over T does one small GEMM, one add
    and one tanh per step, all into the output buffer.
    """
    hs = x_proj + b_h
    h_prev = h0
    recurrent = np.empty_like(h0)
    for t in range(hs.shape[0]):
        np.matmul(h_prev, w_hh, out=recurrent)
        hs[t] += recurrent
        np.tanh(hs[t], out=hs[t])
        h_prev = hs[t]
    return hs


def rnn_backward(
    d_hs: np.ndarray, hs: np.ndarray, h0: np.ndarray, w_hh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Backpropagation through time for ``rnn_forward``.

    ``d_hs`` (T, B, H) is the loss gradient reaching each state from above (the output layer).
    Returns ``(d_x_proj (T, B, H), dW_hh (H, H), db_h (H,), dh0 (B, H))``; ``d_x_proj`` is also the
    gradient of the pre-activations, since x_proj enters them with unit weight.
    """
    d_pre = np.empty_like(hs)
    dh_next = np.zeros_like(h0)
    w_hh_t = w_hh.T
    for t in range(hs.shape[0] - 1, -1, -1):
        d_pre_t = d_pre[t]
        np.add(d_hs[t], dh_next, out=d_pre_t)
        # tanh'(a) = 1 - tanh(a)^2, written as d * (1 - h^2) = d - d * h * h to avoid temporaries.
        d_pre_t -= d_pre_t * hs[t] * hs[t]
        dh_next = d_pre_t @ w_hh_t
    hidden = hs.shape[2]
    h_prev = np.concatenate([h0[None], hs[:-1]]).reshape(-1, hidden)
    d_pre_flat = d_pre.reshape(-1, hidden)
    return d_pre, h_prev.T @ d_pre_flat, d_pre_flat.sum(axis=0), dh_next


# --- softmax with cross-entropy, fused ----------------------------------------------------------------


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of ``logits`` (N, V), shifted by the row maximum for stability."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=-1, keepdims=True)
    return shifted


def softmax_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, out: Optional[np.ndarray] = None
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy (nats) of ``logits`` (N, V) against ``targets`` (N,), and its gradient.

    loss = mean_i [log Σ_v exp(z_iv) − z_i,y_i];  d loss / d z = (softmax(z) − onehot(y)) / N.
    The gradient is written into ``out`` (pass ``logits`` itself to reuse its memory).
    """
    count = logits.shape[0]
    rows = np.arange(count)
    row_max = logits.max(axis=1, keepdims=True)
    probs = np.subtract(logits, row_max, out=out)
    target_shifted = probs[rows, targets].astype(np.float64)
    np.exp(probs, out=probs)
    totals = probs.sum(axis=1, keepdims=True)
    loss = float(np.log(totals.astype(np.float64)).sum() - target_shifted.sum()) / count
    probs *= 1.0 / (totals * count)
    probs[rows, targets] -= 1.0 / count
    return loss, probs
