"""Gradient clipping, the learning-rate schedule, and Adagrad, RMSProp and Adam over dicts of arrays.

The update functions change arrays in place (parameters, gradients, optimizer state) because copying
the output layer every step would cost as much as a matrix product; they return the state they updated
so a caller writes ``state = update(...)`` and no hidden state lives anywhere.

Optimizer state is a flat dict of arrays named ``<slot>.<parameter>`` (``sum_sq.W_hy``, ``m.W_hy``), plus
``step`` for Adam, so a checkpoint stores it as it stores the parameters.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Union

import numpy as np

from charrnn.config import TrainConfig
from charrnn.model.ops import BlockRunner, SparseRows, one_block

OptimizerState = dict[str, np.ndarray]
Gradient = Union[np.ndarray, SparseRows]

EPSILON = 1e-8
RMSPROP_DECAY = 0.95  # char-rnn's default decay rate
ADAM_BETAS = (0.9, 0.999)  # Kingma & Ba 2015
SLOTS = {"adagrad": ("sum_sq",), "rmsprop": ("mean_sq",), "adam": ("m", "v")}


# The time-budget anneal keeps the full rate for the first half of the budget, then lowers it along half
# a cosine to a tenth of it at the end (anneal_factor).
ANNEAL_START = 0.5
ANNEAL_FLOOR = 0.1


def anneal_factor(fraction: float) -> float:
    """What the time-budget anneal multiplies the rate by when ``fraction`` (0 to 1) of the budget is used.

    1 up to ANNEAL_START, then 1 → ANNEAL_FLOOR along half a cosine: the rate falls slowly at first,
    fastest in the middle, and levels off at the floor (not zero, so a resumed run still learns).
    """
    if fraction <= ANNEAL_START:
        return 1.0
    progress = min(1.0, (fraction - ANNEAL_START) / (1.0 - ANNEAL_START))
    return ANNEAL_FLOOR + (1.0 - ANNEAL_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))


def learning_rate_at(
    config: TrainConfig, epochs_completed: int, reductions: int = 0, anneal_fraction: float = 0.0
) -> float:
    """The rate of the next step: ``config.learning_rate`` times ``config.lr_decay`` once per completed
    epoch beyond ``config.lr_decay_after``, times ``config.lr_reduction_factor`` once per plateau
    ``reductions``, times the time-budget ``anneal_factor(anneal_fraction)``. ``config`` must be settled
    (TrainConfig.settled) to have a rate."""
    if config.learning_rate is None:
        raise ValueError("the TrainConfig has no learning rate yet: use TrainConfig.settled(model_config)")
    decayed = config.learning_rate * config.lr_decay ** max(0, epochs_completed - math.floor(config.lr_decay_after))
    return decayed * config.lr_reduction_factor**reductions * anneal_factor(anneal_fraction)

def state_layout(optimizer: str, param_shapes: Mapping[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every state array ``optimizer`` keeps for parameters of ``param_shapes``.

    The parameters' dtype applies to all of them except Adam's integer ``step``.
    """
    layout = {f"{slot}.{name}": shape for slot in SLOTS[optimizer] for name, shape in param_shapes.items()}
    if optimizer == "adam":
        layout["step"] = ()
    return layout


def init_state(optimizer: str, params: Mapping[str, np.ndarray], initial_accumulator: float = 0.0) -> OptimizerState:
    """Fresh state for ``optimizer``: one array per slot and parameter (and Adam's step counter).

    Every slot starts at zero, except Adagrad's sums of squares, which start at ``initial_accumulator``
    (G₀; TensorFlow and Keras use 0.1). With G₀ = 0 the first step moves every weight by the full
    learning rate whatever its gradient, lr·g/|g|; with G₀ > 0 a small gradient makes a small step,
    lr·g/√(G₀ + g²), until the sums have grown past G₀.
    """
    state = {f"{slot}.{name}": np.zeros_like(p) for slot in SLOTS[optimizer] for name, p in params.items()}
    if optimizer == "adagrad" and initial_accumulator:
        for value in state.values():
            value.fill(initial_accumulator)
    if optimizer == "adam":
        state["step"] = np.zeros((), dtype=np.int64)
    return state


# Subnormal floats (below the smallest normal, 1.2e-38 in float32) are computed in microcode by x86
# processors, on some models a hundred times slower. Late in training they would appear here: the
# square of an output column's gradient for a very improbable token (|g| < 1.1e-19), and the averages
# of RMSProp and Adam decaying towards zero wherever a gradient stays zero. The update below treats
# such values as zero, as a processor that flushes subnormals would: a square that would be subnormal
# is never computed, and an average that falls below the smallest normal becomes 0 (the one product
# that takes it there is computed once in its life, not at every step). Only steps smaller than
# lr·1e-10 change. ``update_plain`` keeps the textbook arithmetic, which agrees with it elsewhere.


def _kept_for_square(grad: np.ndarray) -> np.ndarray:
    """``grad``, with 0 where its square would be below the smallest normal float (a new array)."""
    kept = np.abs(grad)
    np.greater_equal(kept, np.sqrt(np.finfo(grad.dtype).tiny), out=kept)  # 1 or 0, as floats: no cast later
    kept *= grad
    return kept


def _flush_below_tiny(values: np.ndarray) -> None:
    """Set to 0, in place, the elements of ``values`` below the smallest normal float in magnitude."""
    normal = np.abs(values)
    np.greater_equal(normal, np.finfo(values.dtype).tiny, out=normal)
    values *= normal


def _adagrad(param: np.ndarray, grad: np.ndarray, sum_sq: np.ndarray, lr: float) -> None:
    # G += g²;  θ −= lr · g / (√G + ε)
    scratch = _kept_for_square(grad)
    scratch *= scratch
    sum_sq += scratch
    np.sqrt(sum_sq, out=scratch)
    scratch += EPSILON
    np.divide(grad, scratch, out=scratch)
    scratch *= lr
    param -= scratch


def _rmsprop(param: np.ndarray, grad: np.ndarray, mean_sq: np.ndarray, lr: float) -> None:
    # E[g²] ← ρ E[g²] + (1 − ρ) g²;  θ −= lr · g / (√E[g²] + ε)   (Tieleman & Hinton 2012)
    kept = _kept_for_square(grad)
    mean_sq *= RMSPROP_DECAY
    mean_sq += (1.0 - RMSPROP_DECAY) * kept * kept
    _flush_below_tiny(mean_sq)
    param -= lr * grad / (np.sqrt(mean_sq) + EPSILON)


def _adam(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, lr: float, step: int) -> None:
    # m ← β1 m + (1 − β1) g;  v ← β2 v + (1 − β2) g²;  θ −= lr · m̂ / (√v̂ + ε), with bias-corrected m̂, v̂
    beta1, beta2 = ADAM_BETAS
    kept = _kept_for_square(grad)
    m *= beta1
    m += (1.0 - beta1) * grad
    _flush_below_tiny(m)
    v *= beta2
    v += (1.0 - beta2) * kept * kept
    _flush_below_tiny(v)
    # Algorithm 1 of the paper: ε is added to √v̂, after the bias correction.
    denominator = np.sqrt(v)
    denominator *= 1.0 / math.sqrt(1.0 - beta2**step)
    denominator += EPSILON
    param -= (lr / (1.0 - beta1**step)) * m / denominator


def update(
    optimizer: str,
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, Gradient],
    state: OptimizerState,
    *,
    learning_rate: float,
    clip: Optional[float] = None,
    run_blocks: BlockRunner = one_block,
) -> OptimizerState:
    """One step of ``optimizer``, in place on ``params`` and ``state`` (and ``grads``); returns ``state``.

    With ``clip``, every gradient element is first clamped to [-clip, clip]. Clipping and the update
    run together block by block, so each block is read from memory once; ``run_blocks`` may spread the
    blocks over threads. Values that would be subnormal count as zero (see above). ``update_plain`` is
    the same step written plainly; a test holds them equal.

    For Adagrad a SparseRows gradient updates only its rows, which is exact: an untouched row has
    g = 0, so its G and θ would not change anyway. RMSProp and Adam decay their averages (and Adam
    keeps moving by momentum) even where g = 0, so for them a sparse gradient is made dense first.
    """
    if optimizer == "adam":
        state["step"] += 1
    step = int(state["step"]) if optimizer == "adam" else 0
    for name, grad in grads.items():
        param = params[name]
        if isinstance(grad, SparseRows):
            if optimizer == "adagrad":
                rows, values = grad.rows, grad.values
                if clip is not None:
                    np.clip(values, -clip, clip, out=values)
                param_rows, sum_sq_rows = param[rows], state[f"sum_sq.{name}"][rows]
                _adagrad(param_rows, values, sum_sq_rows, learning_rate)
                param[rows], state[f"sum_sq.{name}"][rows] = param_rows, sum_sq_rows
                continue
            grad = grad.to_dense(param.shape[0])
        flat = [param.reshape(-1), grad.reshape(-1)] + [state[f"{slot}.{name}"].reshape(-1) for slot in SLOTS[optimizer]]

        def block(start: int, stop: int, flat: list[np.ndarray] = flat) -> None:
            param_block, grad_block, *slots = (array[start:stop] for array in flat)
            if clip is not None:
                np.clip(grad_block, -clip, clip, out=grad_block)
            if optimizer == "adagrad":
                _adagrad(param_block, grad_block, slots[0], learning_rate)
            elif optimizer == "rmsprop":
                _rmsprop(param_block, grad_block, slots[0], learning_rate)
            else:
                _adam(param_block, grad_block, slots[0], slots[1], learning_rate, step)

        run_blocks(block, param.size)
    return state


def update_plain(
    optimizer: str,
    params: Mapping[str, np.ndarray],
    grads: Mapping[str, Gradient],
    state: OptimizerState,
    *,
    learning_rate: float,
    clip: Optional[float] = None,
) -> OptimizerState:
    """The textbook twin of ``update``: each gradient made dense, clipped, and applied as a whole array."""
    lr = learning_rate
    if optimizer == "adam":
        state["step"] += 1
    for name, grad in grads.items():
        param = params[name]
        g = grad.to_dense(param.shape[0]) if isinstance(grad, SparseRows) else grad.copy()
        if clip is not None:
            g = np.clip(g, -clip, clip)
        if optimizer == "adagrad":
            sum_sq = state[f"sum_sq.{name}"]
            sum_sq += g * g
            param -= lr * g / (np.sqrt(sum_sq) + EPSILON)
        elif optimizer == "rmsprop":
            mean_sq = state[f"mean_sq.{name}"]
            mean_sq *= RMSPROP_DECAY
            mean_sq += (1.0 - RMSPROP_DECAY) * g * g
            param -= lr * g / (np.sqrt(mean_sq) + EPSILON)
        else:
            (beta1, beta2), step = ADAM_BETAS, int(state["step"])
            m, v = state[f"m.{name}"], state[f"v.{name}"]
            m *= beta1
            m += (1.0 - beta1) * g
            v *= beta2
            v += (1.0 - beta2) * g * g
            m_hat, v_hat = m / (1.0 - beta1**step), v / (1.0 - beta2**step)
            param -= lr * m_hat / (np.sqrt(v_hat) + EPSILON)
    return state
