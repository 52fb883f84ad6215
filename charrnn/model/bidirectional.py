"""The tutorial's bidirectional RNN as a blank filler: token t predicted from the text on both sides of it.

Two stacks of recurrent layers (network.forward_layers, with any cell, depth, embedding and dropout)
read the same text: the forward one left to right, as the one-directional model does, the backward one
right to left with weights of its own (W_xh.back, W_hh.back, ...: the tutorial's U′ and W′). Token t is
predicted from the forward state after x_{t−1} and the backward state after x_{t+1}, never from x_t:

    h_t  = cell(x_t, h_{t−1})                      forward stack, left to right
    h′_t = cell′(x_t, h′_{t+1})                    backward stack, right to left (the time-reversed text)
    p(x_t | x_<t, x_>t) = softmax(h_{t−1} W_hy + h′_{t+1} W_hy.back + b_y)

The token embedding W_xe (with an embedding size) and the output bias b_y are shared; everything else is
doubled (network.backward_twins). A cell kernel runs a sequence in time order, so the backward stack is
the forward code run on the reversed tokens, on either backend.

Training windows (docs/fill.md): a step trains on T targets of every stream. The forward state is
carried from window to window as in the one-directional model (targets x_1 … x_T read from x_0 … x_{T−1}).
The backward state cannot be carried: it would come from the future. It starts from zero at the end of
the window, after reading up to ``look_ahead`` tokens past it (``ahead``); with none, the window's last
target has no right context at all, as a blank at the end of a text has none.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from charrnn.config import ModelConfig
from charrnn.model import network, ops
from charrnn.model.backend import NUMPY, Kernels
from charrnn.model.network import BACKWARD, Grads, Hidden, LossResult, Params
from charrnn.model.workspace import Workspace


def backward_view(params: Params, config: ModelConfig) -> Params:
    """The backward stack's parameters under the forward model's names, for network.forward_layers.

    Its output weights are W_hy.back; the shared embedding and output bias are the forward model's. (A
    W_xe.back, if the parameters hold one, is an embedding of its own: bench/bidirectional_variants.py
    measures that variant against the shared one.)
    """
    view = {name: params[name + BACKWARD] for name in network.backward_twins(config)}
    for shared in ("W_xe", "b_y"):
        if shared + BACKWARD in params:
            view[shared] = params[shared + BACKWARD]
        elif shared in params:
            view[shared] = params[shared]
    return view


class _Prefixed:
    """A workspace whose buffers are another's under prefixed names, so the backward stack's arrays
    (which its caches keep) never share memory with the forward stack's."""

    def __init__(self, workspace: Workspace, prefix: str) -> None:
        self.workspace, self.prefix = workspace, prefix

    def buffer(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        return self.workspace.buffer(self.prefix + name, shape, dtype)


def right_context(targets: np.ndarray, ahead: Optional[np.ndarray]) -> np.ndarray:
    """The tokens the backward stack reads for a window, in its reading order (last token first).

    ``targets`` (T, B) are x_1 … x_T, ``ahead`` (M, B) the tokens after them; target x_t needs the
    state after x_{t+1}, so the stack reads x_{T+M} down to x_2: T + M − 1 tokens.
    """
    right = targets[1:] if ahead is None or not len(ahead) else np.concatenate([targets[1:], ahead])
    return np.ascontiguousarray(right[::-1])


def _states_after(back_top: np.ndarray, steps: int) -> np.ndarray:
    """(T, B, H): for target k, the backward state after reading the token right of it.

    ``back_top`` (S, B, H) holds the backward stack's top states in its reading order, S = T + M − 1,
    so the state after x_{k+2} (the token right of target k, which is x_{k+1}) is back_top[S − 1 − k].
    With no look-ahead (S = T − 1) the last target gets the zero state: nothing right of it was read.
    """
    count, batch, hidden = back_top.shape
    selected = np.zeros((steps, batch, hidden), dtype=back_top.dtype)
    shown = min(steps, count)
    selected[:shown] = back_top[::-1][:shown]
    return selected


def _stacks(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    hidden0: Hidden,
    ahead: Optional[np.ndarray],
    rng: Optional[np.random.Generator],
    workspace: Optional[Workspace],
    kernels: Kernels,
    dropout_rows: Optional[tuple[int, slice]] = None,
):
    """Both stacks over a window: (forward top (T, B, H), its last state, its caches, the backward
    tokens read, the backward caches, the backward states for each target (T, B, H))."""
    steps, batch = inputs.shape
    top, last, caches = network.forward_layers(params, config, inputs, hidden0, rng, workspace, kernels, dropout_rows)
    right = right_context(targets, ahead)
    back_caches = None
    if len(right):
        back_workspace = None if workspace is None else _Prefixed(workspace, "back.")
        zero = network.initial_hidden(config, batch)
        back_top, _, back_caches = network.forward_layers(
            backward_view(params, config), config, right, zero, rng, back_workspace, kernels,  # type: ignore[arg-type]
            dropout_rows,
        )
        after = _states_after(back_top, steps)
    else:
        after = np.zeros((steps, batch, config.hidden_size), dtype=top.dtype)
    return top, last, caches, right, back_caches, after


def _add_sparse(a: ops.SparseRows, b: ops.SparseRows) -> ops.SparseRows:
    """The sum of two sparse-row gradients (the shared embedding's, from both stacks)."""
    rows = np.union1d(a.rows, b.rows)
    values = np.zeros((len(rows), a.values.shape[1]), dtype=a.values.dtype)
    values[np.searchsorted(rows, a.rows)] += a.values
    values[np.searchsorted(rows, b.rows)] += b.values
    return ops.SparseRows(rows, values)


def loss_and_grads(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    hidden0: Hidden,
    rng: Optional[np.random.Generator] = None,
    workspace: Optional[Workspace] = None,
    kernels: Kernels = NUMPY,
    ahead: Optional[np.ndarray] = None,
    dropout_rows: Optional[tuple[int, slice]] = None,
) -> LossResult:
    """Forward and backward pass of the bidirectional model over one window, as network.loss_and_grads.

    ``inputs`` (T, B) are x_0 … x_{T−1}, ``targets`` (T, B) x_1 … x_T, ``ahead`` (M, B) the look-ahead
    tokens after them (none: the backward stack starts at the window's end). ``hidden0`` is the
    forward state carried in; the returned ``hidden_last`` is the forward state to carry on. The loss
    is the mean of −log p(x_t | x_<t, x_>t) over the T·B targets. ``dropout_rows`` as for
    network.loss_and_grads: the streams are rows of a batch split among processes.
    """
    steps, batch = inputs.shape
    count, hidden, vocab = steps * batch, config.hidden_size, config.vocab_size
    dtype = params["W_hy"].dtype
    top, last, caches, right, back_caches, after = _stacks(
        params, config, inputs, targets, hidden0, ahead, rng, workspace, kernels, dropout_rows)
    top_flat, after_flat = top.reshape(count, hidden), after.reshape(count, hidden)
    buffer = network._new_array if workspace is None else workspace.buffer
    logits = kernels.matmul(top_flat, params["W_hy"], out=buffer("logits", (count, vocab), dtype))  # (N, V)
    logits += kernels.matmul(after_flat, params["W_hy" + BACKWARD], out=buffer("logits.back", (count, vocab), dtype))
    loss, d_logits = kernels.softmax_cross_entropy(
        logits, targets.reshape(-1), params["b_y"],
        run_blocks=ops.one_block if workspace is None else workspace.run_blocks,
    )
    d_top, d_w_hy, d_b_y = ops.linear_backward(
        d_logits, top_flat, params["W_hy"],
        buffer("d_top", (count, hidden), dtype), buffer("d_W_hy", (hidden, vocab), dtype), kernels.matmul,
    )
    d_after = kernels.matmul(d_logits, params["W_hy" + BACKWARD].T, out=buffer("d_after", (count, hidden), dtype))
    d_w_hy_back = kernels.matmul(after_flat.T, d_logits, out=buffer("d_W_hy.back", (hidden, vocab), dtype))
    grads: Grads = {"W_hy": d_w_hy, "b_y": d_b_y, "W_hy" + BACKWARD: d_w_hy_back}
    grads.update(network.backward_layers(params, config, inputs, caches, d_top.reshape(steps, batch, hidden), kernels))
    if back_caches is not None:
        # Back to the states in the stack's reading order (the zero state of a window's end is no state).
        d_back_top = np.zeros((len(right), batch, hidden), dtype=dtype)
        shown = min(steps, len(right))
        d_back_top[::-1][:shown] = d_after.reshape(steps, batch, hidden)[:shown]
        view = backward_view(params, config)
        back_grads = network.backward_layers(view, config, right, back_caches, d_back_top, kernels)
        for name, grad in back_grads.items():
            if name == "W_xe" and "W_xe" + BACKWARD not in params:
                grads["W_xe"] = _add_sparse(grads["W_xe"], grad)  # type: ignore[arg-type]
            else:
                grads[name + BACKWARD] = grad
    else:  # a window of one target and no look-ahead: the backward stack read nothing
        for name in network.backward_twins(config):
            if name != "W_hy":
                grads[name + BACKWARD] = np.zeros_like(params[name + BACKWARD])
    return LossResult(loss, grads, last)


def token_losses(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    hidden0: Hidden,
    kernels: Kernels = NUMPY,
    ahead: Optional[np.ndarray] = None,
) -> tuple[np.ndarray, Hidden]:
    """Forward only, no dropout: −log p(x_t | x_<t, x_>t) in nats for every (T, B) target (float64), and
    the forward stack's final state; windows as in ``loss_and_grads``."""
    steps, batch = inputs.shape
    top, last, _, _, _, after = _stacks(params, config, inputs, targets, hidden0, ahead, None, None, kernels)
    logits = ops.linear_forward(top.reshape(steps * batch, -1), params["W_hy"], params["b_y"])
    logits += after.reshape(steps * batch, -1) @ params["W_hy" + BACKWARD]
    return kernels.cross_entropy_per_token(logits, targets.reshape(-1)).reshape(steps, batch), last


def blank_logits(
    params: Params, config: ModelConfig, left: np.ndarray, right: np.ndarray, kernels: Kernels = NUMPY
) -> np.ndarray:
    """Logits (B, V) of the token between ``left`` (L, B) and ``right`` (R, B), each stream from zero states.

    The forward stack reads ``left`` in order, the backward stack ``right`` from its last token to its
    first; an empty side leaves that stack's zero state (the start or the end of a text).
    """
    batch = left.shape[1] if left.ndim == 2 else right.shape[1]
    logits = np.broadcast_to(params["b_y"], (batch, config.vocab_size)).astype(params["b_y"].dtype)
    if len(left):
        top, _, _ = network.forward_layers(params, config, left, network.initial_hidden(config, batch), None,
                                           kernels=kernels)
        logits = logits + top[-1] @ params["W_hy"]
    if len(right):
        reversed_right = np.ascontiguousarray(right[::-1])
        back_top, _, _ = network.forward_layers(backward_view(params, config), config, reversed_right,
                                                network.initial_hidden(config, batch), None, kernels=kernels)
        logits = logits + back_top[-1] @ params["W_hy" + BACKWARD]
    return logits
