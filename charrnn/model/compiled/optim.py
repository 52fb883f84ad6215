"""Compiled twins of model/optim.py: clipping and each optimizer's update in one pass per block."""

from __future__ import annotations

import math
from typing import Mapping, Optional

import numpy as np

from charrnn.model import optim
from charrnn.model.compiled.arithmetic import kernel
from charrnn.model.ops import BlockRunner, SparseRows, one_block

# --- clipping and the optimizers (the equations are in optim.py) ---------------------------------------


@kernel
def _clipped(g, clip):
    """g clamped to ±clip; NaN stays NaN."""
    g = clip if g > clip else g
    return -clip if g < -clip else g


@kernel
def _square(g, root_tiny):
    """g², or 0 where it would be subnormal (what a flushing processor makes of it), never computing one."""
    zero = root_tiny - root_tiny  # 0 in the kernel's precision (a literal 0 would make this float64)
    return g * g if abs(g) >= root_tiny else zero


# Each block kernel updates elements start..stop−1 of flat arrays. They index views of the block from
# zero: an index the compiler cannot prove non-negative gets a wrap-around check that stops vectorising.


@kernel
def _adagrad_elements(param, grad, sum_sq, lr, clip, root_tiny):
    eps = param.dtype.type(optim.EPSILON)
    for k in range(param.shape[0]):
        g = _clipped(grad[k], clip)
        grad[k] = g  # clipped in place, as np.clip(out=grad) does
        s = sum_sq[k] + _square(g, root_tiny)
        sum_sq[k] = s
        param[k] -= g / (np.sqrt(s) + eps) * lr


@kernel
def _adagrad_block(param, grad, sum_sq, lr, clip, root_tiny, start, stop):
    _adagrad_elements(param[start:stop], grad[start:stop], sum_sq[start:stop], lr, clip, root_tiny)


@kernel
def _adagrad_rows(param, sum_sq, rows, values, lr, clip, root_tiny):
    for index in range(rows.shape[0]):
        row = rows[index]
        _adagrad_elements(param[row], values[index], sum_sq[row], lr, clip, root_tiny)


@kernel
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


@kernel
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
