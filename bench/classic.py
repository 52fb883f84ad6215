"""The classic single-stream char-RNN as the RNN tutorials teach it: bench/throughput.py's slow baseline.

This is the algorithm of karpathy's min-char-rnn, written anew: one stream (batch 1), float64 column
vectors, every input token a one-hot (V, 1) vector multiplied by the whole W_xh (H, V), and Python
loops over the T tokens of a chunk in both the forward and the backward pass::

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)      a matrix times a column state
    p_t = softmax(W_hy h_t + b_y)
    loss = Σ_t −log p_t[target_t]                  summed over the chunk, as the tutorial does

Every gradient element is clipped to ±clip, then Adagrad: G += g²;  θ −= lr · g / √(G + 1e-8).
The hidden state is carried from chunk to chunk and reset to zero when the text runs out. Nothing
here is vectorised over time or batch on purpose: it is the baseline that charrnn's batching beats.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Optional, Sequence

import numpy as np

ADAGRAD_EPSILON = 1e-8
WEIGHT_NAMES = ("W_xh", "W_hh", "W_hy", "b_h", "b_y")

Params = dict[str, np.ndarray]


def init_params(vocab_size: int, hidden_size: int, rng: np.random.Generator) -> Params:
    """Weights from N(0, 0.01²) and zero biases, float64, shaped for column vectors."""
    return {
        "W_xh": rng.standard_normal((hidden_size, vocab_size)) * 0.01,  # input -> hidden
        "W_hh": rng.standard_normal((hidden_size, hidden_size)) * 0.01,  # hidden -> hidden
        "W_hy": rng.standard_normal((vocab_size, hidden_size)) * 0.01,  # hidden -> logits
        "b_h": np.zeros((hidden_size, 1)),
        "b_y": np.zeros((vocab_size, 1)),
    }


def loss_and_grads(
    params: Params, inputs: Sequence[int], targets: Sequence[int], h_prev: np.ndarray
) -> tuple[float, Params, np.ndarray]:
    """Forward and backward over one chunk, one token at a time.

    ``inputs`` and ``targets`` are T ids each, ``h_prev`` the (H, 1) state carried in. Returns the
    summed loss in nats, the gradients of that sum (same names and shapes as ``params``) and the
    (H, 1) state after the last token.
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
        h = np.tanh(np.dot(W_xh, x) + np.dot(W_hh, states[-1]) + b_h)
        logits = np.dot(W_hy, h) + b_y
        # Shifting by the maximum changes nothing mathematically and keeps exp() from overflowing.
        exp_logits = np.exp(logits - np.max(logits))
        p = exp_logits / np.sum(exp_logits)
        loss_nats -= float(np.log(p[target, 0]))
        one_hots.append(x)
        states.append(h)
        probs.append(p)

    # Backward through time, last token first; states[t + 1] is h_t and states[t] is h_{t-1}.
    grads = {name: np.zeros_like(value) for name, value in params.items()}
    dh_from_next = np.zeros_like(h_prev)
    for t in reversed(range(len(inputs))):
        d_logits = probs[t].copy()
        d_logits[targets[t]] -= 1.0  # softmax followed by cross-entropy: p − onehot(target)
        grads["W_hy"] += np.dot(d_logits, states[t + 1].T)
        grads["b_y"] += d_logits
        dh = np.dot(W_hy.T, d_logits) + dh_from_next
        d_pre = (1.0 - states[t + 1] * states[t + 1]) * dh  # tanh'(a) = 1 − tanh(a)²
        grads["b_h"] += d_pre
        grads["W_xh"] += np.dot(d_pre, one_hots[t].T)
        grads["W_hh"] += np.dot(d_pre, states[t].T)
        dh_from_next = np.dot(W_hh.T, d_pre)
    return loss_nats, grads, states[-1]


class ClassicTrainer:
    """The tutorial's training loop over one stream: position, carried state and Adagrad memory."""

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
        """Train on the next ``seq_length`` tokens of ``ids`` (N,); return the mean loss in nats per token."""
        steps = self.seq_length
        if len(ids) < steps + 1:
            raise ValueError(f"{len(ids)} ids are fewer than seq_length + 1 = {steps + 1}")
        start = self.position
        # Plain Python ints, as the tutorial indexes a list of characters.
        inputs = ids[start : start + steps].tolist()
        targets = ids[start + 1 : start + steps + 1].tolist()
        loss_nats, grads, self.hidden = loss_and_grads(self.params, inputs, targets, self.hidden)
        for name in WEIGHT_NAMES:
            grad = np.clip(grads[name], -self.clip, self.clip)
            self.memory[name] += grad * grad
            self.params[name] += -self.learning_rate * grad / np.sqrt(self.memory[name] + ADAGRAD_EPSILON)
        self.position = start + steps
        if self.position + steps + 1 > len(ids):
            self.position = 0
            self.hidden = np.zeros_like(self.hidden)
        return loss_nats / steps


def measure_tokens_per_s(
    ids: np.ndarray,
    vocab_size: int,
    hidden_size: int = 256,
    seq_length: int = 25,
    steps: int = 20,
    warmup: int = 2,
    seed: int = 0,
) -> tuple[float, list[float]]:
    """Train ``warmup`` untimed then ``steps`` timed steps on ``ids``; return (tokens/s, every step's loss).

    Tokens per step are ``seq_length`` (batch 1); the losses are in nats per token, warm-up included.
    """
    trainer = ClassicTrainer(vocab_size, hidden_size, seq_length, seed=seed)
    losses = [trainer.train_step(ids) for _ in range(warmup)]
    started = time.perf_counter()
    for _ in range(steps):
        losses.append(trainer.train_step(ids))
    elapsed_s = time.perf_counter() - started
    return steps * seq_length / elapsed_s, losses


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Time the classic algorithm on a UTF-8 corpus and print tokens/s and the loss."""
    parser = argparse.ArgumentParser(description="Time the classic single-stream char-RNN on a corpus.")
    parser.add_argument("corpus", help="a UTF-8 text file")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--steps", type=int, default=20, help="timed steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    args = parser.parse_args(argv)
    with open(args.corpus, encoding="utf-8", newline=None) as f:
        text = f.read()
    vocab = sorted(set(text))  # sorted, so the ids do not change between runs
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int32, count=len(text))
    tokens_per_s, losses = measure_tokens_per_s(
        ids, len(vocab), args.hidden_size, args.seq_length, args.steps, args.warmup
    )
    print(f"classic (batch 1, float64), vocabulary {len(vocab)}, hidden {args.hidden_size}: "
          f"{tokens_per_s:,.0f} tokens/s; loss {losses[0]:.3f} -> {losses[-1]:.3f} nats/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
