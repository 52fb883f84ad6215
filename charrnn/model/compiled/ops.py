"""Compiled twins of model/ops.py's embedding gradient, softmax cross-entropy and per-token cross-entropy."""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from charrnn.model.compiled.arithmetic import FASTMATH, kernel, exp
from charrnn.model.ops import BlockRunner, EXP_RANGE, SparseRows, one_block

# --- embedding gradient ---------------------------------------------------------------------------------


@kernel
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


@kernel(fastmath=FASTMATH | {"nnan", "reassoc"})
def _row_max(z):
    # nnan lets this vectorise; a NaN it misses still makes the row's exp, and so its loss, NaN.
    largest = z[0]
    for v in range(1, z.shape[0]):
        largest = z[v] if z[v] > largest else largest
    return largest


@kernel(fastmath=FASTMATH | {"reassoc"})
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
            e = exp(floor if shifted < floor else shifted)
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
) -> tuple[float, np.ndarray]:
    """ops.softmax_cross_entropy in one compiled pass per row block (``logits`` becomes the gradient)."""
    count, vocab = logits.shape
    losses = np.empty(count, dtype=np.float64)
    inverse_count = logits.dtype.type(1.0 / count)
    bias_or_none = np.empty(0, dtype=logits.dtype) if bias is None else bias

    def block(start: int, stop: int) -> None:
        _softmax_cross_entropy_rows(logits, targets, bias_or_none, inverse_count, losses, start, stop)

    run_blocks(block, count, vocab)
    return float(losses.sum()) * (1.0 / count), logits


@kernel(fastmath=FASTMATH | {"reassoc"})
def _cross_entropy_rows(logits, targets, losses):
    floor = logits.dtype.type(-EXP_RANGE)
    for row in range(logits.shape[0]):
        z = logits[row]
        largest = _row_max(z)
        total = 0.0
        for v in range(z.shape[0]):
            shifted = z[v] - largest
            total += np.float64(exp(floor if shifted < floor else shifted))
        losses[row] = math.log(total) - (np.float64(z[targets[row]]) - np.float64(largest))


def cross_entropy_per_token(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """ops.cross_entropy_per_token in one compiled pass over each row; ``logits`` is left as it is."""
    losses = np.empty(len(targets), dtype=np.float64)
    _cross_entropy_rows(logits, targets, losses)
    return losses
