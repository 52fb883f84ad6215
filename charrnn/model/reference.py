"""The whole vanilla RNN language model in one file, as the tutorials teach it: start reading here.

One stream of tokens (batch 1), float64 column vectors, every input a one-hot (V, 1) vector, and
Python loops over the T tokens of a chunk, forward and backward. This is the algorithm of karpathy's
min-char-rnn, written anew::

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)       a matrix times a column: W_xh (H, V), W_hh (H, H)
    y_t = W_hy h_t + b_y                             W_hy (V, H): the logits of the next token
    p_t = softmax(y_t)
    loss = (1/T) Σ_t −log p_t[target_t]              in nats per token, the mean over the chunk

Backpropagation through time runs the same steps backwards, last token first; every gradient
element is then clipped to ±clip and Adagrad moves each weight: G += g², θ −= lr · g / (√G + ε).

charrnn trains exactly this model (``tests/test_reference.py`` holds the two equal, loss and every
gradient), only faster: see network.py, ops.py, cells.py and optim.py beside this file. There the
vectors are rows (``h @ W``, so every matrix here appears transposed); B streams and all T steps are
processed as matrices at once; ``x_t W_xh`` for a one-hot ``x_t`` is simply row ``x_t`` of W_xh (an
embedding lookup, no one-hot vector is ever built) and its gradient touches only the rows of tokens
that occurred; softmax, the loss gradient, clipping and Adagrad are fused into passes over cache-sized
blocks; and float32 is the default. Nothing here is used by the fast code.

(min-char-rnn sums the loss over the chunk; charrnn, like most trainers, takes the mean over its tokens,
so that the learning rate and the clip mean the same thing whatever the chunk length and batch size.)
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

ADAGRAD_EPSILON = 1e-8

Params = dict[str, np.ndarray]


def init_params(vocab_size: int, hidden_size: int, rng: np.random.Generator, table_scale: float = 0.5) -> Params:
    """Fresh float64 parameters shaped for column vectors: zero biases; each token's column of W_xh (its
    embedding) from N(0, table_scale²), so that different tokens reach the state distinctly from the
    start; W_hh and W_hy from U(−1/√H, 1/√H), as PyTorch starts its recurrent and linear layers.

    The draws are charrnn's for the same seed (``network.init_params`` with ``--embed-size 0``): drawn in
    its row-vector shapes, then transposed.
    """
    bound = 1.0 / np.sqrt(hidden_size)
    W_xh = rng.standard_normal((vocab_size, hidden_size)).T * table_scale  # input -> hidden
    W_hh = rng.uniform(-bound, bound, (hidden_size, hidden_size)).T  # hidden -> hidden
    W_hy = rng.uniform(-bound, bound, (hidden_size, vocab_size)).T  # hidden -> logits
    return {"W_xh": W_xh, "W_hh": W_hh, "W_hy": W_hy, "b_h": np.zeros((hidden_size, 1)), "b_y": np.zeros((vocab_size, 1))}


def loss_and_grads(
    params: Params, inputs: Sequence[int], targets: Sequence[int], h_prev: np.ndarray
) -> tuple[float, Params, np.ndarray]:
    """Forward and backward over one chunk, one token at a time.

    ``inputs`` and ``targets`` are T ids each (the targets are the inputs shifted by one token),
    ``h_prev`` the (H, 1) state carried in from the previous chunk. Returns the mean loss in nats per
    token, the gradients of that mean (same names and shapes as ``params``) and the (H, 1) state
    after the last token.
    """
    W_xh, W_hh, W_hy = params["W_xh"], params["W_hh"], params["W_hy"]
    b_h, b_y = params["b_h"], params["b_y"]
    vocab_size = W_xh.shape[1]

    # Forward: keep every step's one-hot input, state and probabilities for the backward pass.
    one_hots, states, probs = [], [h_prev], []
    loss_nats = 0.0
    for token, target in zip(inputs, targets):
        x = np.zeros((vocab_size, 1))
        x[token] = 1.0
        h = np.tanh(W_xh @ x + W_hh @ states[-1] + b_h)
        logits = W_hy @ h + b_y
        # Shifting by the maximum changes nothing mathematically and keeps exp() from overflowing.
        exp_logits = np.exp(logits - np.max(logits))
        p = exp_logits / np.sum(exp_logits)
        loss_nats -= float(np.log(p[target, 0]))
        one_hots.append(x)
        states.append(h)
        probs.append(p)

    # Backward through time, last token first; states[t + 1] is h_t and states[t] is h_{t-1}.
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dh_next = np.zeros_like(h_prev)  # the gradient reaching h_t from step t + 1
    for t in reversed(range(len(inputs))):
        d_logits = probs[t].copy()
        d_logits[targets[t]] -= 1.0  # softmax followed by cross-entropy: p − onehot(target)
        grads["W_hy"] += d_logits @ states[t + 1].T
        grads["b_y"] += d_logits
        dh = W_hy.T @ d_logits + dh_next  # from the output, and from the next step
        d_pre = (1.0 - states[t + 1] * states[t + 1]) * dh  # through tanh: tanh'(a) = 1 − tanh(a)²
        grads["b_h"] += d_pre
        grads["W_xh"] += d_pre @ one_hots[t].T
        grads["W_hh"] += d_pre @ states[t].T
        dh_next = W_hh.T @ d_pre  # to h_{t-1}
    steps = len(inputs)
    return loss_nats / steps, {name: grad / steps for name, grad in grads.items()}, states[-1]


def adagrad_step(params: Params, grads: Params, memory: Params, learning_rate: float, clip: float) -> None:
    """Clip every gradient element to ±clip, then Adagrad, in place: G += g²; θ −= lr · g / (√G + ε)."""
    for name, param in params.items():
        grad = np.clip(grads[name], -clip, clip)
        memory[name] += grad * grad
        param -= learning_rate * grad / (np.sqrt(memory[name]) + ADAGRAD_EPSILON)


class Trainer:
    """The tutorial's training loop over one stream: the position in the text, the carried state and
    Adagrad's memory."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int = 256,
        seq_length: int = 25,
        learning_rate: float = 0.1,
        clip: float = 5.0,
        seed: int = 0,
    ) -> None:
        self.params = init_params(vocab_size, hidden_size, np.random.default_rng(seed))
        self.memory = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.seq_length = seq_length
        self.learning_rate = learning_rate
        self.clip = clip
        self.position = 0
        self.hidden = np.zeros((hidden_size, 1))

    def train_step(self, ids: np.ndarray) -> float:
        """Train on the next ``seq_length`` tokens of ``ids`` (N,); return their mean loss in nats per token.

        When the next chunk would run past the end of the text, training starts over at its beginning
        with a zero state (an epoch).
        """
        steps = self.seq_length
        if len(ids) < steps + 1:
            raise ValueError(f"{len(ids)} ids are fewer than seq_length + 1 = {steps + 1}")
        start = self.position
        inputs = ids[start : start + steps].tolist()
        targets = ids[start + 1 : start + steps + 1].tolist()
        loss_nats, grads, self.hidden = loss_and_grads(self.params, inputs, targets, self.hidden)
        adagrad_step(self.params, grads, self.memory, self.learning_rate, self.clip)
        self.position = start + steps
        if self.position + steps + 1 > len(ids):
            self.position = 0
            self.hidden = np.zeros_like(self.hidden)
        return loss_nats
