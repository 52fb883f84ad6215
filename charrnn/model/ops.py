"""Pure numpy building blocks of the language model around its recurrent cells (see cells.py).

Conventions: row vectors (a state times a weight matrix, ``h @ W``), time-major arrays, and these
letters in shapes: T steps, B parallel streams, H hidden units, V vocabulary entries, N = T·B tokens.
No function keeps state or does I/O; the only mutation is into an ``out`` array the caller passes.
"""

from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import numpy as np

BlockRunner = Callable[[Callable[[int, int], None], int, int], None]  # (block(start, stop), rows, row width)


def one_block(function: Callable[[int, int], None], rows: int, row_width: int = 1) -> None:
    """Run a row-block kernel over all ``rows`` at once: what a block runner does without a workspace."""
    function(0, rows)


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


def embedding_forward(weights: np.ndarray, ids: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Rows of ``weights`` (V, H) picked by ``ids`` (any shape S): shape S + (H,), into ``out`` if given."""
    return np.take(weights, ids, axis=0, out=out)


def embedding_backward_plain(d_out: np.ndarray, ids: np.ndarray, num_rows: int) -> np.ndarray:
    """The textbook twin of ``embedding_backward``: add each position's gradient to its token's row."""
    dense = np.zeros((num_rows, d_out.shape[-1]), dtype=d_out.dtype)
    np.add.at(dense, ids.reshape(-1), d_out.reshape(len(ids.reshape(-1)), -1))
    return dense


# Rows per distinct id from which embedding_backward sums them by a one-hot product, and the largest
# one-hot matrix it builds for that (16 MB of float32).
ONE_HOT_REPEATS = 4
ONE_HOT_MAX_ELEMENTS = 1 << 22


def embedding_backward(d_out: np.ndarray, ids: np.ndarray) -> SparseRows:
    """Gradient of ``embedding_forward`` w.r.t. the weights, summed per distinct id.

    ``d_out`` has shape S + (H,) for ``ids`` of shape S. Equal ids are gathered together by a stable
    sort; each distinct id's first row is copied, and only ids that occur more than once get a
    segment sum of their other rows (``add.reduceat`` costs about a microsecond per segment, and
    with a large vocabulary most ids of a batch occur once). ``embedding_backward_plain`` is the same
    gradient written plainly; a test holds them equal.

    When the ids repeat a lot (a small vocabulary: on average at least ``ONE_HOT_REPEATS`` rows per
    distinct id, and the U × N one-hot matrix is small), the sums are one product instead,
    (U × N one-hot) · (N × H): measured four times faster for 85 characters in 800 rows of width 1,024,
    where sorting and gathering the rows dominate.
    """
    flat_ids = ids.reshape(-1)
    flat_grad = d_out.reshape(len(flat_ids), -1)
    distinct = np.unique(flat_ids)
    if len(flat_ids) >= ONE_HOT_REPEATS * len(distinct) and len(flat_ids) * len(distinct) <= ONE_HOT_MAX_ELEMENTS:
        one_hot = np.equal.outer(distinct, flat_ids).astype(flat_grad.dtype)  # (U, N)
        return SparseRows(distinct, one_hot @ flat_grad)
    order = np.argsort(flat_ids, kind="stable")
    sorted_ids = flat_ids[order]
    is_first = np.empty(len(sorted_ids), dtype=bool)
    is_first[0] = True
    np.not_equal(sorted_ids[1:], sorted_ids[:-1], out=is_first[1:])
    firsts = np.flatnonzero(is_first)
    values = flat_grad[order[firsts]]
    repeats = np.flatnonzero(~is_first)
    if len(repeats):
        group = np.cumsum(is_first)[repeats] - 1  # the distinct id each repeated row belongs to
        boundaries = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        values[group[boundaries]] += np.add.reduceat(flat_grad[order[repeats]], boundaries, axis=0)
    return SparseRows(sorted_ids[firsts], values)


# --- affine layer: y = x W + b ------------------------------------------------------------------------


def linear_forward(x: np.ndarray, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x`` (..., D) times ``weights`` (D, O) plus ``bias`` (O,): shape (..., O)."""
    out = x @ weights
    out += bias
    return out


def linear_backward(
    d_out: np.ndarray,
    x: np.ndarray,
    weights: np.ndarray,
    out_dx: Optional[np.ndarray] = None,
    out_dw: Optional[np.ndarray] = None,
    matmul: Callable[..., np.ndarray] = np.matmul,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of ``linear_forward`` for ``x`` (N, D), ``d_out`` (N, O): (dx, dW, db).

    One GEMM each for the input and the weight gradients over all N rows at once, written into
    ``out_dx`` and ``out_dw`` if given (by ``matmul``: numpy's, or a backend's, see backend.py). The
    bias gradient Σ_i d_out_i is a product with a vector of ones too, so the threaded BLAS sums the
    (N, O) matrix instead of one core.
    """
    dx = matmul(d_out, weights.T, out=out_dx)
    dw = matmul(x.T, d_out, out=out_dw)
    return dx, dw, np.ones(len(d_out), dtype=d_out.dtype) @ d_out


# --- inverted dropout ----------------------------------------------------------------------------------


def dropout_mask(shape: tuple[int, ...], rate: float, rng: np.random.Generator, dtype: np.dtype) -> np.ndarray:
    """A mask that zeroes each unit with probability ``rate`` and scales the rest by 1 / (1 − rate).

    Scaling at training time ("inverted" dropout) keeps expected activations unchanged, so sampling and
    evaluation simply skip the mask. Forward is ``x * mask``, and backward is ``d * mask``.
    """
    keep = rng.random(shape, dtype=np.float32) >= rate
    return keep.astype(dtype) * np.asarray(1.0 / (1.0 - rate), dtype=dtype)


# --- softmax with cross-entropy, fused ----------------------------------------------------------------


def cross_entropy_per_token(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """−log softmax(z_i)[y_i] for every row of ``logits`` (N, V): shape (N,), float64. No gradient.

    Used for evaluation, where only the losses are needed; log-sum-exp is shifted by the row maximum,
    and logits more than EXP_RANGE below it are raised to that floor, as in ``softmax_cross_entropy``
    (their exp would be subnormal; the sum changes by less than V·e^-60 relative).
    """
    row_max = logits.max(axis=1, keepdims=True)
    shifted = logits - row_max
    target_shifted = shifted[np.arange(len(targets)), targets].astype(np.float64)
    np.maximum(shifted, -EXP_RANGE, out=shifted)
    np.exp(shifted, out=shifted)
    return np.log(shifted.sum(axis=1, dtype=np.float64)) - target_shifted


# Logits within this of zero need no shifting (float32 exp overflows at 88.7); probabilities within
# e^-this of the largest stay normal floats even after dividing by V·N.
EXP_RANGE = 60.0
# float32 exp(x) is a normal float for x above this (it turns subnormal below −87.34).
EXP_NORMAL_FROM = -87.0


def softmax_cross_entropy_plain(
    logits: np.ndarray, targets: np.ndarray, bias: Optional[np.ndarray] = None
) -> tuple[float, np.ndarray]:
    """The textbook twin of ``softmax_cross_entropy``: the same loss and gradient, new arrays, no tricks."""
    z = logits if bias is None else logits + bias
    z = z - z.max(axis=1, keepdims=True)  # against overflow; softmax is unchanged by a shift per row
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))  # log softmax(z), (N, V)
    rows = np.arange(len(targets))
    loss = -log_p[rows, targets].astype(np.float64).mean()
    grad = np.exp(log_p)
    grad[rows, targets] -= 1.0
    return float(loss), grad / len(targets)


def softmax_cross_entropy(
    logits: np.ndarray,
    targets: np.ndarray,
    bias: Optional[np.ndarray] = None,
    run_blocks: BlockRunner = one_block,
) -> tuple[float, np.ndarray]:
    """Mean cross-entropy (nats) of ``logits`` + ``bias`` (N, V) against ``targets`` (N,), and its gradient.

    loss = mean_i [log Σ_v exp(z_iv) − z_i,y_i];  d loss / d z = (softmax(z) − onehot(y)) / N.
    ``logits`` is overwritten with the gradient, which is returned: the (N, V) matrix is the largest
    array of a step, and doing every pass over it in place, block by block while a block is still in
    cache, is much of what makes training fast. ``run_blocks`` may spread the blocks over threads.
    ``softmax_cross_entropy_plain`` is the same computation written plainly; a test holds them equal.
    """
    count, vocab = logits.shape
    losses = np.empty(count, dtype=np.float64)
    inverse_count = 1.0 / count

    def block(start: int, stop: int) -> None:
        z = logits[start:stop]
        rows = np.arange(stop - start)
        block_targets = targets[start:stop]
        if bias is not None:
            z += bias
        target_z = z[rows, block_targets].astype(np.float64)
        row_max = z.max(axis=1, keepdims=True)
        # Any shift per row gives the same softmax; the row maximum is the usual one, against overflow.
        # Logits are almost always small, and then shifting costs a pass over the largest matrix of
        # the step for nothing (exp overflows only past 88). Logits more than EXP_RANGE below their
        # row's maximum are raised to that floor: their probabilities (< e^-60) would otherwise come
        # out as subnormal floats, which x86 processors compute in microcode (up to a hundred times
        # slower) in this pass and in the two gradient GEMMs that read them, and raising them changes
        # the loss by less than V·e^-60 relative. Unshifted rows need a maximum high enough that the
        # floor's own exp is a normal float.
        shifted = row_max.max() > EXP_RANGE or row_max.min() - EXP_RANGE < EXP_NORMAL_FROM
        if shifted:
            z -= row_max
            target_z -= row_max[:, 0]
        np.maximum(z, -EXP_RANGE if shifted else row_max - EXP_RANGE, out=z)
        np.exp(z, out=z)
        totals = z.sum(axis=1, keepdims=True)
        losses[start:stop] = np.log(totals[:, 0].astype(np.float64)) - target_z
        np.reciprocal(totals, out=totals)
        totals *= inverse_count
        z *= totals
        z[rows, block_targets] -= inverse_count

    run_blocks(block, count, vocab)
    return float(losses.sum()) * inverse_count, logits
