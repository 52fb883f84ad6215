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

Run it on its own, as min-char-rnn is run: it trains on a text file, printing the smoothed loss and a
sample every ``--print-every`` steps::

    python -m charrnn.model.reference corpus.txt --steps 5000 --hidden-size 100 --seed 0

That is, weight for weight, the model of this charrnn command (the same initial weights from the same
seed, the same steps on the same text, the same losses to float64 rounding; ``tests/test_reference.py``
runs both and compares them)::

    charrnn train corpus.txt --embed-size none --batch-size 1 --dtype float64 --val-fraction 0 \
        --hidden-size 100 --seq-length 25 --learning-rate 0.1 --clip 5 --rng-seed 0 --steps 5000

``--embed-size none`` makes W_xh the embedding (no separate one), ``--batch-size 1`` one stream,
``--dtype float64`` this file's precision, ``--val-fraction 0`` trains on the whole text (charrnn
otherwise holds out its last 5% to validate on); the other settings are charrnn's defaults: one layer,
the vanilla ``rnn`` cell with ``tanh``, Adagrad, no dropout, no learning-rate decay. charrnn's
``--backend numpy`` gives the same numbers to the last few bits; its compiled backend rounds differently.
"""

from __future__ import annotations

import argparse
import math
import sys
from typing import Optional, Sequence

import numpy as np

ADAGRAD_EPSILON = 1e-8
# Weight of the newest step in the smoothed loss, bias-corrected as in Adam; charrnn reports the same
# average (progress.py), so the two print comparable numbers.
LOSS_SMOOTHING = 0.05

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
        hidden_size: int = 100,
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


def smoothed_loss(previous_average: float, steps_before: int, loss_nats: float) -> tuple[float, float]:
    """Fold one step's loss into the moving average; returns (new average, its bias-corrected value).

    ``previous_average`` is the uncorrected average after ``steps_before`` steps (0.0 before the first).
    """
    average = (1.0 - LOSS_SMOOTHING) * previous_average + LOSS_SMOOTHING * loss_nats
    return average, average / (1.0 - (1.0 - LOSS_SMOOTHING) ** (steps_before + 1))


def sample(params: Params, h: np.ndarray, first: int, length: int, rng: np.random.Generator) -> list[int]:
    """``length`` token ids drawn one at a time from the model, starting after token ``first`` from
    the (H, 1) state ``h``; each drawn token is the next input."""
    W_xh, W_hh, W_hy = params["W_xh"], params["W_hh"], params["W_hy"]
    token, drawn = first, []
    for _ in range(length):
        h = np.tanh(W_xh[:, [token]] + W_hh @ h + params["b_h"])  # W_xh @ one_hot(token) is a column of W_xh
        logits = W_hy @ h + params["b_y"]
        p = np.exp(logits - np.max(logits))
        token = int(rng.choice(len(p), p=(p / np.sum(p)).ravel()))
        drawn.append(token)
    return drawn


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m charrnn.model.reference corpus.txt``: train on the file, printing the smoothed loss and
    a sample every ``--print-every`` steps."""
    parser = argparse.ArgumentParser(
        prog="python -m charrnn.model.reference",
        description="Train the textbook character RNN of this file on a text file, as min-char-rnn does.",
    )
    parser.add_argument("corpus", help="a text file")
    parser.add_argument("--steps", type=int, default=5000, help="training steps (default: %(default)s)")
    parser.add_argument("--hidden-size", type=int, default=100, help="hidden units (default: %(default)s)")
    parser.add_argument("--seq-length", type=int, default=25,
                        help="tokens per step of backpropagation through time (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="Adagrad's rate (default: %(default)s)")
    parser.add_argument("--clip", type=float, default=5.0, help="clip gradients to ±this (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the initial weights and of the samples (default: %(default)s)")
    parser.add_argument("--print-every", type=int, default=100,
                        help="print the loss and a sample every N steps (default: %(default)s)")
    parser.add_argument("--sample-length", type=int, default=200,
                        help="characters per sample (default: %(default)s)")
    parser.add_argument("--encoding", default="utf-8-sig", help="the file's codec (default: UTF-8)")
    args = parser.parse_args(argv)
    for name in ("steps", "hidden_size", "seq_length", "print_every", "sample_length"):
        if getattr(args, name) <= 0:
            parser.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("learning_rate", "clip"):
        if not (math.isfinite(getattr(args, name)) and getattr(args, name) > 0):
            parser.error(f"--{name.replace('_', '-')} must be a positive number, got {getattr(args, name)}")
    try:
        # Universal newlines, as charrnn reads text: \r\n and \r become \n.
        with open(args.corpus, encoding=args.encoding) as f:
            text = f.read()
    except (OSError, UnicodeDecodeError, LookupError) as exc:
        parser.error(f"cannot read {args.corpus}: {exc}")
    # Sorted, never list(set(text)), whose order changes from one Python process to the next.
    vocab = sorted(set(text))
    index = {char: i for i, char in enumerate(vocab)}
    ids = np.array([index[char] for char in text], dtype=np.int64)
    if len(ids) < args.seq_length + 1:
        parser.error(f"{args.corpus} has {len(ids)} characters, fewer than --seq-length + 1 = {args.seq_length + 1}")
    print(f"{args.corpus}: {len(ids):,} characters, {len(vocab):,} distinct; hidden {args.hidden_size}, "
          f"sequence {args.seq_length}, learning rate {args.learning_rate:g}, seed {args.seed}")
    trainer = Trainer(len(vocab), args.hidden_size, args.seq_length, args.learning_rate, args.clip, args.seed)
    sampling_rng = np.random.default_rng([args.seed, 1])
    average = 0.0
    for step in range(1, args.steps + 1):
        average, loss_nats = smoothed_loss(average, step - 1, trainer.train_step(ids))
        if step % args.print_every == 0 or step == args.steps:
            drawn = sample(trainer.params, trainer.hidden, int(ids[trainer.position]), args.sample_length,
                           sampling_rng)
            print(f"step {step}: loss {loss_nats:.4f} nats/token")
            print(f"----\n{''.join(vocab[i] for i in drawn)}\n----", flush=True)
    return 0


# --- the tutorial's bidirectional RNN: the blank between two texts ---------------------------------------
#
# A second RNN with weights of its own (the tutorial's U′, W′, V′; here W_xh_back, W_hh_back, W_hy_back
# and b_h_back) reads the text right to left, and token x_t is predicted from both directions' states
# next to it, never from x_t itself (charrnn/model/bidirectional.py is the fast version)::
#
#     h_t  = tanh(W_xh x_t + W_hh h_{t-1} + b_h)                    left to right
#     g_t  = tanh(W_xh_back x_t + W_hh_back g_{t+1} + b_h_back)      right to left
#     p(x_t | x_<t, x_>t) = softmax(W_hy h_{t-1} + W_hy_back g_{t+1} + b_y)
#
# A chunk trains on the targets x_1 … x_T read from x_0 … x_{T-1} (h carried in, as above), and g starts
# from zero after the ``ahead`` tokens past the chunk: the state from the future cannot be carried.


def init_bidirectional_params(vocab_size: int, hidden_size: int, rng: np.random.Generator, table_scale: float = 0.5) -> Params:
    """``init_params`` and the right-to-left twins of W_xh, W_hh, b_h and W_hy (the output bias is shared),
    drawn as their left-to-right originals are."""
    params = init_params(vocab_size, hidden_size, rng, table_scale)
    bound = 1.0 / np.sqrt(hidden_size)
    params.update({
        "W_xh_back": rng.standard_normal((hidden_size, vocab_size)) * table_scale,
        "W_hh_back": rng.uniform(-bound, bound, (hidden_size, hidden_size)),
        "W_hy_back": rng.uniform(-bound, bound, (vocab_size, hidden_size)),
        "b_h_back": np.zeros((hidden_size, 1)),
    })
    return params


def bidirectional_loss_and_grads(
    params: Params, inputs: Sequence[int], targets: Sequence[int], ahead: Sequence[int], h_prev: np.ndarray
) -> tuple[float, Params, np.ndarray]:
    """Forward and backward over one chunk of the bidirectional RNN, one token at a time.

    ``inputs`` x_0 … x_{T-1} and ``targets`` x_1 … x_T as in ``loss_and_grads``; ``ahead`` the tokens after
    x_T that the right-to-left RNN reads first. Returns the mean of −log p(x_t | x_<t, x_>t) over the
    targets, its gradients and the left-to-right state after the last input (to carry on).
    """
    W_xh, W_hh, W_hy, b_h, b_y = (params[n] for n in ("W_xh", "W_hh", "W_hy", "b_h", "b_y"))
    U_xh, U_hh, U_hy, c_h = (params[n] for n in ("W_xh_back", "W_hh_back", "W_hy_back", "b_h_back"))
    vocab_size = W_xh.shape[1]

    def one_hot(token: int) -> np.ndarray:
        x = np.zeros((vocab_size, 1))
        x[token] = 1.0
        return x

    # Left to right: states[t + 1] is h after x_t (states[0] = h_prev).
    states = [h_prev]
    for token in inputs:
        states.append(np.tanh(W_xh @ one_hot(token) + W_hh @ states[-1] + b_h))
    # Right to left over the tokens after each target, x_2 … x_{T+M}: back[j] is g after reading right[j]
    # (and everything after it); back[len(right)] is the zero state nothing has been read into.
    right = list(targets[1:]) + list(ahead)
    back = [np.zeros_like(h_prev) for _ in range(len(right) + 1)]
    for j in reversed(range(len(right))):
        back[j] = np.tanh(U_xh @ one_hot(right[j]) + U_hh @ back[j + 1] + c_h)

    # Target k = x_{k+1} reads h after x_k (states[k + 1]) and g after x_{k+2} (back[k]).
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    d_states = [np.zeros_like(h_prev) for _ in states]
    d_back = [np.zeros_like(h_prev) for _ in back]
    loss_nats = 0.0
    for k, target in enumerate(targets):
        logits = W_hy @ states[k + 1] + U_hy @ back[k] + b_y
        exp_logits = np.exp(logits - np.max(logits))
        p = exp_logits / np.sum(exp_logits)
        loss_nats -= float(np.log(p[target, 0]))
        d_logits = p.copy()
        d_logits[target] -= 1.0
        grads["W_hy"] += d_logits @ states[k + 1].T
        grads["W_hy_back"] += d_logits @ back[k].T
        grads["b_y"] += d_logits
        d_states[k + 1] += W_hy.T @ d_logits
        d_back[k] += U_hy.T @ d_logits

    # Backpropagation through time, each RNN against its own direction.
    dh_next = np.zeros_like(h_prev)
    for t in reversed(range(len(inputs))):
        d_pre = (1.0 - states[t + 1] * states[t + 1]) * (d_states[t + 1] + dh_next)
        grads["b_h"] += d_pre
        grads["W_xh"] += d_pre @ one_hot(inputs[t]).T
        grads["W_hh"] += d_pre @ states[t].T
        dh_next = W_hh.T @ d_pre
    dg_next = np.zeros_like(h_prev)  # the gradient reaching back[j] from back[j - 1], which read it
    for j in range(len(right)):
        d_pre = (1.0 - back[j] * back[j]) * (d_back[j] + dg_next)
        grads["b_h_back"] += d_pre
        grads["W_xh_back"] += d_pre @ one_hot(right[j]).T
        grads["W_hh_back"] += d_pre @ back[j + 1].T
        dg_next = U_hh.T @ d_pre
    steps = len(targets)
    return loss_nats / steps, {name: grad / steps for name, grad in grads.items()}, states[-1]


if __name__ == "__main__":
    sys.exit(main())
