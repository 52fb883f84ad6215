"""The vanilla RNN language model: parameters, training loss with gradients, and one-step prediction.

    h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)      x_t one-hot, so x_t W_xh is a row of W_xh
    y_t = h_t W_hy + b_y                            logits over the vocabulary
    loss = mean_t,b  −log softmax(y_t)[target]      nats per token

Parameters are a plain dict of arrays named as above; nothing here keeps state between calls.
"""

from __future__ import annotations

from typing import NamedTuple, Union

import numpy as np

from charrnn import ops
from charrnn.config import ModelConfig

Params = dict[str, np.ndarray]
Grads = dict[str, Union[np.ndarray, ops.SparseRows]]

PARAM_NAMES = ("W_xh", "W_hh", "b_h", "W_hy", "b_y")


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter for ``config``."""
    vocab, hidden = config.vocab_size, config.hidden_size
    return {
        "W_xh": (vocab, hidden),
        "W_hh": (hidden, hidden),
        "b_h": (hidden,),
        "W_hy": (hidden, vocab),
        "b_y": (vocab,),
    }


def init_params(config: ModelConfig, rng: np.random.Generator, init_scale: float = 0.01) -> Params:
    """Weights drawn from N(0, init_scale²), biases zero, in ``config.dtype``.

    Draws happen in the fixed order of PARAM_NAMES so a seed always gives the same model.
    """
    params = {}
    for name, shape in param_shapes(config).items():
        if name.startswith("b_"):
            params[name] = np.zeros(shape, dtype=config.dtype)
        else:
            params[name] = (rng.standard_normal(shape) * init_scale).astype(config.dtype)
    return params


def initial_state(config: ModelConfig, batch_size: int) -> np.ndarray:
    """The zero hidden state for ``batch_size`` streams: shape (B, H)."""
    return np.zeros((batch_size, config.hidden_size), dtype=config.dtype)


class LossResult(NamedTuple):
    """What one training step's forward and backward pass produce."""

    loss_nats: float  # mean cross-entropy per token
    grads: Grads  # same names as the parameters; W_xh's gradient is sparse (rows of seen tokens)
    h_last: np.ndarray  # (B, H) state after the last step, to carry into the next chunk


def loss_and_grads(params: Params, inputs: np.ndarray, targets: np.ndarray, h0: np.ndarray) -> LossResult:
    """Forward and backward pass over one (T, B) block of token ids.

    ``inputs`` and ``targets`` are (T, B) ids (targets are the inputs shifted by one token),
    ``h0`` (B, H) is the state carried in from the previous chunk. Gradients are of the mean loss.
    """
    steps, batch = inputs.shape
    hidden = h0.shape[1]
    x_proj = ops.embedding_forward(params["W_xh"], inputs)  # (T, B, H)
    hs = ops.rnn_forward(x_proj, h0, params["W_hh"], params["b_h"])  # (T, B, H)
    hs_flat = hs.reshape(steps * batch, hidden)  # (N, H)
    logits = ops.linear_forward(hs_flat, params["W_hy"], params["b_y"])  # (N, V)
    loss, d_logits = ops.softmax_cross_entropy(logits, targets.reshape(-1), out=logits)
    d_hs, d_w_hy, d_b_y = ops.linear_backward(d_logits, hs_flat, params["W_hy"])
    d_pre, d_w_hh, d_b_h, _ = ops.rnn_backward(d_hs.reshape(steps, batch, hidden), hs, h0, params["W_hh"])
    grads: Grads = {
        "W_xh": ops.embedding_backward(d_pre, inputs),
        "W_hh": d_w_hh,
        "b_h": d_b_h,
        "W_hy": d_w_hy,
        "b_y": d_b_y,
    }
    return LossResult(loss, grads, hs[-1].copy())


def step(params: Params, ids: np.ndarray, h: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Feed one token per stream: ``ids`` (B,), state ``h`` (B, H) -> (logits (B, V), new state (B, H))."""
    x_proj = ops.embedding_forward(params["W_xh"], ids)
    h_new = ops.rnn_step_forward(x_proj, h, params["W_hh"], params["b_h"])
    return ops.linear_forward(h_new, params["W_hy"], params["b_y"]), h_new


def count_parameters(params: Params) -> int:
    """Total number of scalar parameters."""
    return sum(int(p.size) for p in params.values())
