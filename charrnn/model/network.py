"""The language model: embedding, stacked recurrent layers, affine output, softmax cross-entropy.

New to the algorithm? Read reference.py beside this file first: the same model for one stream, written
as the tutorials write it, in one file (a test holds the two equal). This is the fast version: every
vector a row, all B streams and T steps as matrices, the one-hot products as embedding lookups.

For the vanilla cell with one layer (row vectors, x_t one-hot):

    h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)      x_t W_xh is row x_t of W_xh: an embedding lookup
    y_t = h_t W_hy + b_y                            logits over the vocabulary
    loss = mean_t,b  −log softmax(y_t)[target]      nats per token

Layer l > 0 reads the states of layer l − 1 (through inverted dropout while training) with its own
W_xh.l, W_hh.l, b_h.l; LSTM and GRU cells widen these to 4H and 3H columns (see cells.py). Parameters,
gradients and recurrent states are plain dicts of arrays; nothing here keeps state between calls.

With an embedding size D > 0 (ModelConfig.embed_size) the first layer reads learned token vectors
instead, through an input matrix of its own, as the upper layers read the layer below:

    e_t = x_t W_xe                                  row x_t of W_xe (V, D): the token's embedding
    h_t = tanh(e_t W_xh + h_{t-1} W_hh + b_h)       W_xh (D, H)

The product W_xe W_xh (V × H) could be any matrix of rank D, so the model is the one above with a
factored input table: fewer parameters when D < H·V / (V + H), and under Adagrad a different (faster)
path for the gradient of rare tokens (docs/model.md, "One table, or an embedding").
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, NamedTuple, Optional, Union

import numpy as np

from charrnn.model import cells, ops
from charrnn.model.backend import NUMPY, Kernels
from charrnn.config import ModelConfig
from charrnn.model.workspace import Workspace

Params = dict[str, np.ndarray]
Grads = dict[str, Union[np.ndarray, ops.SparseRows]]
Hidden = dict[str, np.ndarray]  # "h.0", "c.0", "h.1", ...: (B, H) each

# LSTM forget-gate biases start at 1 so the cell remembers by default early in training
# (Gers et al. 2000; Jozefowicz et al. 2015); every other bias starts at 0.
LSTM_FORGET_BIAS = 1.0


def _suffix(layer: int) -> str:
    return "" if layer == 0 else f".{layer}"


def _cell_weights(params: Params, config: ModelConfig, layer: int) -> dict[str, np.ndarray]:
    suffix = _suffix(layer)
    names = ["W_hh", *cells.EXTRA_WEIGHTS[config.cell]]
    return {name: params[name + suffix] for name in names}


def param_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter for ``config``, in the order they are initialised."""
    vocab, hidden, embed = config.vocab_size, config.hidden_size, config.embed_size
    width = cells.GATES[config.cell] * hidden
    shapes: dict[str, tuple[int, ...]] = {}
    if embed:
        shapes["W_xe"] = (vocab, embed)
    for layer in range(config.num_layers):
        suffix = _suffix(layer)
        first_inputs = embed or vocab
        shapes[f"W_xh{suffix}"] = (first_inputs if layer == 0 else hidden, width)
        shapes[f"W_hh{suffix}"] = (hidden, width)
        shapes[f"b_h{suffix}"] = (width,)
        for name, shape in cells.EXTRA_WEIGHTS[config.cell].items():
            shapes[f"{name}{suffix}"] = shape(hidden)
    shapes["W_hy"] = (hidden, vocab)
    shapes["b_y"] = (vocab,)
    if config.bidirectional:
        # The right-to-left stack's own weights (U′, W′ and V′ of the tutorial), after the forward
        # model's; the embedding W_xe and the output bias b_y are shared (model/bidirectional.py).
        shapes.update({name + BACKWARD: shapes[name] for name in backward_twins(config)})
    return shapes


# The suffix of the right-to-left stack's parameters: W_hh.back is the backward twin of W_hh.
BACKWARD = ".back"


def backward_twins(config: ModelConfig) -> list[str]:
    """The parameters of ``config``'s forward model that a bidirectional one doubles: all but the token
    embedding W_xe and the output bias b_y, which both directions share."""
    forward = param_shapes(dataclasses.replace(config, bidirectional=False))
    return [name for name in forward if name not in ("W_xe", "b_y")]


def init_params(
    config: ModelConfig,
    rng: np.random.Generator,
    init_scale: Optional[float] = None,
    embedding_scale: Optional[float] = None,
    table_scale: Optional[float] = None,
) -> Params:
    """Fresh parameters in ``config.dtype``: weights random, biases zero (LSTM forget gates 1).

    Weight matrices are drawn from U(−1/√H, 1/√H), as PyTorch initialises its recurrent layers and
    nn.Linear, or with ``init_scale`` from N(0, init_scale²). The token embedding W_xe is drawn from
    N(0, embedding_scale²) and the one-table model's first input matrix W_xh (whose rows are its
    embeddings) from N(0, table_scale²), where given. Draws happen in the order of ``param_shapes`` so
    a seed always gives the same model.
    """
    bound = 1.0 / math.sqrt(config.hidden_size)
    params = {}
    for name, shape in param_shapes(config).items():
        if name.startswith("b_"):
            params[name] = np.zeros(shape, dtype=config.dtype)
            if config.cell == "lstm" and name.startswith("b_h"):
                params[name][config.hidden_size : 2 * config.hidden_size] = LSTM_FORGET_BIAS
            continue
        scale = init_scale
        if name == "W_xe" and embedding_scale is not None:
            scale = embedding_scale
        elif name in ("W_xh", "W_xh" + BACKWARD) and not config.embed_size and table_scale is not None:
            # the one-table model's embedding, and the right-to-left stack's own
            scale = table_scale
        if scale is None:
            weights = rng.uniform(-bound, bound, shape)
        else:
            weights = rng.standard_normal(shape) * scale
        params[name] = weights.astype(config.dtype)
    return params


def initial_hidden(config: ModelConfig, batch_size: int) -> Hidden:
    """The zero recurrent state of every layer for ``batch_size`` streams."""
    return {
        f"{key}.{layer}": np.zeros((batch_size, config.hidden_size), dtype=config.dtype)
        for layer in range(config.num_layers)
        for key in cells.HIDDEN_KEYS[config.cell]
    }


class _LayerCache(NamedTuple):
    inputs: Optional[np.ndarray]  # (T, B, D) what the layer read (after dropout); None for the first layer
    mask: Optional[np.ndarray]  # dropout mask applied to those inputs
    cell: Any


def forward_layers(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    hidden0: Hidden,
    rng: Optional[np.random.Generator],
    workspace: Optional[Workspace] = None,
    kernels: Kernels = NUMPY,
    dropout_rows: Optional[tuple[int, slice]] = None,
) -> tuple[np.ndarray, Hidden, list[_LayerCache]]:
    """Run every layer over ``inputs`` (T, B); returns the top states (T, B, H), final state, caches.

    Dropout is applied only when ``rng`` is given (training); see ``loss_and_grads`` for ``dropout_rows``.
    """
    steps, batch = inputs.shape
    forward = kernels.cell_forward[config.cell]
    state_keys = cells.HIDDEN_KEYS[config.cell]
    last: Hidden = {}
    caches = []
    x = None
    for layer in range(config.num_layers):
        suffix = _suffix(layer)
        mask = None
        if layer == 0 and (not config.embed_size or config.vocab_size <= steps * batch):
            # One row per token of a (V, G·H) table: W_xh itself, or with an embedding the product
            # W_xe W_xh, which costs V·D·G·H multiply-adds against T·B·D·G·H for reading each token's
            # embedding through W_xh (ten times fewer for 85 characters in a batch of 800 tokens).
            table = params["W_xh"] if not config.embed_size else kernels.matmul(params["W_xe"], params["W_xh"])
            shape = (*inputs.shape, table.shape[1])
            out = None if workspace is None else workspace.buffer("x_proj", shape, table.dtype)
            x_proj = ops.embedding_forward(table, inputs, out)  # (T, B, G·H), overwritten by the cell
            x_proj += params["b_h"]
            x = None
        else:
            if layer == 0:
                w_xe = params["W_xe"]
                out = None if workspace is None else workspace.buffer("embedded", (*inputs.shape, w_xe.shape[1]), w_xe.dtype)
                x = ops.embedding_forward(w_xe, inputs, out)  # (T, B, D)
            elif rng is not None and config.dropout > 0:
                if dropout_rows is None:
                    mask = ops.dropout_mask(x.shape, config.dropout, rng, x.dtype)
                else:
                    whole, rows = dropout_rows
                    mask = ops.dropout_mask((steps, whole, x.shape[2]), config.dropout, rng, x.dtype)[:, rows]
                x = x * mask
            x_proj = kernels.matmul(x.reshape(steps * batch, -1), params[f"W_xh{suffix}"])
            x_proj += params[f"b_h{suffix}"]
            x_proj = x_proj.reshape(steps, batch, -1)  # (T, B, G·H)
        layer_state = {key: hidden0[f"{key}.{layer}"] for key in state_keys}
        out = forward(x_proj, layer_state, _cell_weights(params, config, layer), config.activation)
        caches.append(_LayerCache(None if layer == 0 else x, mask, out.cache))
        last.update({f"{key}.{layer}": value for key, value in out.last.items()})
        x = out.hs
    return x, last, caches


class LossResult(NamedTuple):
    """What one training step's forward and backward pass produce."""

    loss_nats: float  # mean cross-entropy per token
    grads: Grads  # same names as the parameters; the embedding's (W_xe, or W_xh) is sparse (rows of seen tokens)
    hidden_last: Hidden  # state after the last step, to carry into the next chunk


def _new_array(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """What a workspace's ``buffer`` gives, without a workspace: a new array each time."""
    return np.empty(shape, dtype=dtype)


def loss_and_grads(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    hidden0: Hidden,
    rng: Optional[np.random.Generator] = None,
    workspace: Optional[Workspace] = None,
    kernels: Kernels = NUMPY,
    dropout_rows: Optional[tuple[int, slice]] = None,
) -> LossResult:
    """Forward and backward pass over one (T, B) block of token ids.

    ``targets`` are the inputs shifted by one token; ``hidden0`` is carried in from the previous chunk;
    ``rng`` draws the dropout masks (no dropout without it). Gradients are of the mean loss. With a
    ``workspace`` the large arrays live in its buffers (valid until the next call) and elementwise
    work uses its threads. ``kernels`` runs the cells, the softmax, the embedding gradient and the large
    matrix products (backend.py). ``dropout_rows`` (B', rows) says that the B streams of ``inputs`` are
    ``rows`` of a batch of B' split among processes (training/distributed.py): the dropout masks are then
    drawn for all B' streams and cut, so that every split of a batch draws the masks one process would.
    """
    steps, batch = inputs.shape
    count, hidden, vocab = steps * batch, config.hidden_size, config.vocab_size
    dtype = params["W_hy"].dtype
    buffer = _new_array if workspace is None else workspace.buffer
    top, last, caches = forward_layers(params, config, inputs, hidden0, rng, workspace, kernels, dropout_rows)
    top_flat = top.reshape(count, hidden)  # (N, H)
    logits = kernels.matmul(top_flat, params["W_hy"], out=buffer("logits", (count, vocab), dtype))  # (N, V)
    loss, d_logits = kernels.softmax_cross_entropy(
        logits, targets.reshape(-1), params["b_y"],
        run_blocks=ops.one_block if workspace is None else workspace.run_blocks,
    )
    d_top, d_w_hy, d_b_y = ops.linear_backward(
        d_logits, top_flat, params["W_hy"],
        buffer("d_top", (count, hidden), dtype), buffer("d_W_hy", (hidden, vocab), dtype), kernels.matmul,
    )
    grads: Grads = {"W_hy": d_w_hy, "b_y": d_b_y}
    grads.update(backward_layers(params, config, inputs, caches, d_top.reshape(steps, batch, hidden), kernels))
    return LossResult(loss, grads, last)


def backward_layers(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    caches: list[_LayerCache],
    d_hs: np.ndarray,
    kernels: Kernels = NUMPY,
) -> Grads:
    """Backpropagation through every layer of ``forward_layers``, top first.

    ``d_hs`` (T, B, H) is the loss gradient reaching the top layer's states; returns the gradients of
    the stack's parameters (the embedding's sparse), not those of the output layer.
    """
    steps, batch = inputs.shape
    hidden = config.hidden_size
    grads: Grads = {}
    backward = kernels.cell_backward[config.cell]
    for layer in range(config.num_layers - 1, -1, -1):
        suffix = _suffix(layer)
        cache = caches[layer]
        d_x_proj, cell_grads, _ = backward(d_hs, cache.cell, _cell_weights(params, config, layer))
        grads.update({f"{name}{suffix}": grad for name, grad in cell_grads.items()})
        if layer == 0 and not config.embed_size:
            grads["W_xh"] = kernels.embedding_backward(d_x_proj, inputs)
            grads["b_h"] = d_x_proj.sum(axis=(0, 1))
        elif layer == 0:
            # Each token's rows of d_x_proj summed first (U distinct tokens, U ≤ T·B): then
            # dW_xh = Σ_n e_{id_n}ᵀ d_n = Σ_u e_uᵀ (Σ_{id_n=u} d_n), and each embedding's gradient is its
            # sum times W_xhᵀ; two (D × U)·(U × G·H)-sized products instead of two of T·B rows.
            per_token = kernels.embedding_backward(d_x_proj, inputs)  # SparseRows (U, G·H)
            grads["W_xh"] = kernels.matmul(params["W_xe"][per_token.rows].T, per_token.values)
            grads["b_h"] = per_token.values.sum(axis=0)
            grads["W_xe"] = ops.SparseRows(per_token.rows, kernels.matmul(per_token.values, params["W_xh"].T))
        else:
            d_x, d_w, d_b = ops.linear_backward(
                d_x_proj.reshape(steps * batch, -1), cache.inputs.reshape(steps * batch, -1), params[f"W_xh{suffix}"],
                matmul=kernels.matmul,
            )
            grads[f"W_xh{suffix}"], grads[f"b_h{suffix}"] = d_w, d_b
            d_hs = d_x.reshape(steps, batch, hidden)
            if cache.mask is not None:
                d_hs *= cache.mask
    return grads


def token_losses(
    params: Params,
    config: ModelConfig,
    inputs: np.ndarray,
    targets: np.ndarray,
    hidden0: Hidden,
    kernels: Kernels = NUMPY,
) -> tuple[np.ndarray, Hidden]:
    """Forward only, no dropout: −log p(target) in nats for every (T, B) position (float64), final state."""
    steps, batch = inputs.shape
    top, last, _ = forward_layers(params, config, inputs, hidden0, None, kernels=kernels)
    logits = ops.linear_forward(top.reshape(steps * batch, -1), params["W_hy"], params["b_y"])
    return kernels.cross_entropy_per_token(logits, targets.reshape(-1)).reshape(steps, batch), last


def step(
    params: Params, config: ModelConfig, ids: np.ndarray, hidden: Hidden, kernels: Kernels = NUMPY
) -> tuple[np.ndarray, Hidden]:
    """Feed one token per stream, ``ids`` (B,), or a run of them, (T, B); no dropout.

    Returns the logits (B, V) after the last token, and the new state.
    """
    top, last, _ = forward_layers(params, config, ids.reshape(-1, ids.shape[-1]), hidden, None, kernels=kernels)
    return ops.linear_forward(top[-1], params["W_hy"], params["b_y"]), last


def count_parameters(params: Params) -> int:
    """Total number of scalar parameters."""
    return sum(int(p.size) for p in params.values())


def _parameter_count(config: ModelConfig) -> int:
    """Scalar parameters of ``config``, from the shapes of at most two layers (the layers above the
    first are all alike), so that even an absurd depth costs no time."""

    def total(layers: int) -> int:
        shapes = param_shapes(dataclasses.replace(config, num_layers=layers)).values()
        return sum(math.prod(shape) for shape in shapes)

    one = total(1)
    return one if config.num_layers == 1 else one + (config.num_layers - 1) * (total(2) - one)


def training_memory(config: ModelConfig, batch_size: int, seq_length: int, optimizer_slots: int) -> dict[str, int]:
    """Bytes a training run of ``config`` holds at its peak, by part; the parts add up to the peak.

    Always held: the parameters and ``optimizer_slots`` arrays like them (Adagrad 1, Adam 2). On top,
    the larger of what a step needs (the gradients, at most one array like the parameters, and the
    activations of its (T, B) positions: per layer the gate pre-activations, their gradient and the
    cell's cache, about (3G + 2)·H values for G gates, plus the logits and top states, V + H, and the
    embedded inputs and their gradient, 2·D, with an embedding size D) and what
    writing a checkpoint needs (the parameters and optimizer state serialized in memory). Python ints,
    so an absurd config gives an absurd number rather than an overflow. The peak resident memory of real
    runs estimated at 300 MB and more (vanilla, LSTM and GRU cells, H from 512 to 4096, B·T up to
    25,600, Adagrad and Adam), less the 40 MB of Python and numpy, was 0.94 to 1.18 times the total.
    """
    item = np.dtype(config.dtype).itemsize
    parameter_bytes = _parameter_count(config) * item
    per_position = config.num_layers * (3 * cells.GATES[config.cell] + 2) * config.hidden_size
    per_position += config.vocab_size + config.hidden_size + 2 * config.embed_size
    if config.bidirectional:  # a second stack and its states for the output (an upper bound: no look-ahead counted)
        per_position += config.num_layers * (3 * cells.GATES[config.cell] + 2) * config.hidden_size + 2 * config.hidden_size
    step = {"gradients": parameter_bytes, "activations": seq_length * batch_size * per_position * item}
    saving = {"checkpoint being written": (1 + optimizer_slots) * parameter_bytes}
    held = {"parameters": parameter_bytes, "optimizer state": optimizer_slots * parameter_bytes}
    return {**held, **max(step, saving, key=lambda part: sum(part.values()))}


def sampling_memory(config: ModelConfig, num_streams: int, prime_length: int = 1) -> int:
    """Bytes that stepping ``num_streams`` streams side by side takes, beyond the parameters.

    Each stream holds its recurrent state and, at every step, its logits in the model's dtype plus
    float64 probabilities, their cumulative sums and a comparison mask (17 bytes a vocabulary entry;
    measured: 21 bytes an entry for float32 models in all); feeding the prime first holds the forward
    activations, (G + 2)·H values a layer, of its ``prime_length`` positions.
    """
    item = np.dtype(config.dtype).itemsize
    layer_values = config.num_layers * (cells.GATES[config.cell] + 2) * config.hidden_size
    per_stream = config.vocab_size * (item + 17) + (1 + prime_length) * layer_values * item
    return num_streams * per_stream
