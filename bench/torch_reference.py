"""charrnn's model as a PyTorch user writes it: the reference that bench/throughput.py races against.

    ids (T, B) -> nn.Embedding(V, H) -> nn.RNN | nn.LSTM | nn.GRU (H -> H, L layers) -> nn.Linear(H, V)
    loss = nn.CrossEntropyLoss (mean nats per token);  optimizer torch.optim.Adagrad(lr, eps=1e-8)

Training is truncated BPTT over B contiguous streams exactly as charrnn.training.loop does it: the ids are cut
into B streams of L = N // B tokens (the tail dropped), each step takes columns [p, p + T] of the
(B, L) streams (inputs p..p+T-1, targets p+1..p+T), every gradient element is clamped to ±clip, the
hidden state is carried (detached) into the next step, and when the next chunk would run past the
streams' end (p + T + 1 > L) training starts over at p = 0 from a zero state.

Where this differs from charrnn's vanilla RNN, it is because that is what PyTorch code looks like:

- nn.RNN multiplies its input by a matrix of its own (W_ih, H×H) and adds a second bias, so after the
  embedding it holds H² + H more parameters and does 6·H² more FLOPs per token than charrnn, whose
  embedding row already is x_t W_xh.
- Weights start from PyTorch's default initialisation, unless ``init_scale`` is given: then every weight
  is drawn from N(0, init_scale²) (the embedding from N(0, embedding_scale²) if that is given) and every
  bias is zero, as charrnn does.
- ``identity_input=True`` fixes the first layer's W_ih at the identity and its b_hh at zero, which
  makes the model exactly charrnn's (for loss comparisons only; it still pays for the product).
- nn.Embedding's gradient is dense (V, H), so the optimizer updates all V rows every step, unless
  ``sparse_embedding=True`` (nn.Embedding(sparse=True): only the step's rows, as charrnn does; for Adagrad
  the update is the same, a zero gradient leaving its row and its sum unchanged, only cheaper).
- Subnormal floats are not flushed to zero, unless ``flush_denormal=True`` (torch.set_flush_denormal, as
  charrnn's steps do).
- Adagrad's sums start at ``initial_accumulator`` (torch's ``initial_accumulator_value``, 0 by default);
  bench/quality.py passes charrnn's, so both run the same optimizer.

Run as a script to train on a corpus and print tokens/s and the loss::

    python -m bench.torch_reference CORPUS --hidden-size 256 --batch-size 32 --seq-length 25 --steps 100

It needs only torch and numpy, not charrnn; bench/throughput.py imports it to time it against charrnn
and (``--loss-check``) to compare the two losses.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from typing import Optional, Sequence, Union

import numpy as np

try:
    import torch
    from torch import nn
except ImportError as exc:
    raise ImportError(
        "bench/torch_reference.py needs PyTorch: pip install -r bench/requirements.txt"
    ) from exc

# Adagrad's sparse update says once that it skips PyTorch's own checks of sparse tensors; the ones it
# gets here come straight from nn.Embedding's backward.
warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")

CELLS = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}
NONLINEARITIES = ("tanh", "relu")
OPTIMIZERS = ("adagrad", "rmsprop", "adam")
ADAGRAD_EPSILON = 1e-8
# Tokens evaluated per forward call in evaluate(): bounds the (chunk, V) logits, not the result.
EVAL_CHUNK_TOKENS = 1024
# Same smoothing as charrnn's progress display, so the two printed losses are comparable.
LOSS_SMOOTHING = 0.05

Streams = Union[np.ndarray, "torch.Tensor"]
RecurrentState = Union["torch.Tensor", tuple["torch.Tensor", "torch.Tensor"], None]


class CharLanguageModel(nn.Module):
    """Embedding, a (possibly stacked) recurrent layer and a linear read-out to vocabulary logits."""

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        sparse_embedding: bool = False,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {', '.join(CELLS)}; got {cell!r}")
        # sparse=True: the embedding's gradient holds only the rows of the step's tokens, as charrnn's does.
        self.embedding = nn.Embedding(vocab_size, hidden_size, sparse=sparse_embedding)
        options: dict = {"num_layers": num_layers}
        # nn.RNN applies dropout between stacked layers only, and warns when there is just one.
        if num_layers > 1:
            options["dropout"] = dropout
        if cell == "rnn":
            if nonlinearity not in NONLINEARITIES:
                raise ValueError(f"nonlinearity must be tanh or relu; got {nonlinearity!r}")
            options["nonlinearity"] = nonlinearity
        self.recurrent = CELLS[cell](hidden_size, hidden_size, **options)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, ids: torch.Tensor, state: RecurrentState) -> tuple[torch.Tensor, RecurrentState]:
        """Logits (T, B, V) for ids (T, B) from ``state`` (None means zeros), and the state after."""
        hidden_states, state = self.recurrent(self.embedding(ids), state)  # (T, B, H)
        return self.output(hidden_states), state


def _detach(state: RecurrentState) -> RecurrentState:
    """Cut the graph behind the carried state (truncated BPTT); an LSTM carries a pair (h, c)."""
    if isinstance(state, tuple):
        return tuple(s.detach() for s in state)  # type: ignore[return-value]
    return state.detach() if state is not None else None


def _init_like_charrnn(model: nn.Module, init_scale: float, embedding_scale: Optional[float] = None) -> None:
    """Every weight from N(0, init_scale²) (the embedding from N(0, embedding_scale²) if given) and every
    bias zero, as charrnn.model.network.init_params does."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "bias" in name:
                param.zero_()
            elif embedding_scale is not None and name.startswith("embedding"):
                param.normal_(0.0, embedding_scale)
            else:
                param.normal_(0.0, init_scale)


def _freeze_identity_input(model: CharLanguageModel) -> None:
    """Fix the first layer's W_ih at the identity and b_hh at zero: exactly charrnn's vanilla RNN.

    Then h_t = tanh(E[x_t] + b_ih + h_{t-1} W_hh^T), the embedding row playing charrnn's x_t W_xh.
    Not what a PyTorch user writes; it lets a loss check tell the model's difference from the code's.
    """
    recurrent = model.recurrent
    if not isinstance(recurrent, nn.RNN):
        raise ValueError("identity_input applies to the vanilla rnn cell only")
    with torch.no_grad():
        recurrent.weight_ih_l0.copy_(torch.eye(recurrent.hidden_size))
        recurrent.bias_hh_l0.zero_()
    recurrent.weight_ih_l0.requires_grad_(False)
    recurrent.bias_hh_l0.requires_grad_(False)


def _make_optimizer(kind: str, params, lr: float, initial_accumulator: float = 0.0) -> torch.optim.Optimizer:
    if kind == "adagrad":
        # torch's Adagrad is G += g², θ -= lr·g/(√G + eps) with G starting at initial_accumulator_value:
        # charrnn's update, given the same eps and initial accumulator.
        return torch.optim.Adagrad(params, lr=lr, eps=ADAGRAD_EPSILON, initial_accumulator_value=initial_accumulator)
    if kind == "rmsprop":
        return torch.optim.RMSprop(params, lr=lr)
    if kind == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}; got {kind!r}")


class TorchTrainer:
    """A CharLanguageModel with its optimizer and truncated-BPTT position; see the module docstring.

    ``train_step`` mirrors ``charrnn.training.loop.train_step``: it takes the whole (B, L) streams and keeps
    the position and the carried hidden state itself.
    """

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        num_layers: int = 1,
        cell: str = "rnn",
        nonlinearity: str = "tanh",
        dropout: float = 0.0,
        lr: float = 0.1,
        clip: float = 5.0,
        optimizer: str = "adagrad",
        seq_length: int = 25,
        seed: int = 0,
        init_scale: Optional[float] = None,
        embedding_scale: Optional[float] = None,
        num_threads: Optional[int] = None,
        identity_input: bool = False,
        initial_accumulator: float = 0.0,
        sparse_embedding: bool = False,
        flush_denormal: bool = False,
    ) -> None:
        # A process-wide setting: all of torch's intra-op threads, one per core unless told otherwise.
        torch.set_num_threads(num_threads or os.cpu_count() or 1)
        # Also process-wide: subnormal floats flushed to zero (charrnn keeps them out by arithmetic, optim.py);
        # without it, late in training the elementwise passes can crawl through subnormals.
        self.flush_denormal = flush_denormal
        torch.set_flush_denormal(flush_denormal)
        # Seed only the model's construction; fork_rng leaves the caller's global generator alone.
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.model = CharLanguageModel(vocab_size, hidden_size, num_layers, cell, nonlinearity, dropout,
                                           sparse_embedding)
            if init_scale is not None:
                _init_like_charrnn(self.model, init_scale, embedding_scale)
        if identity_input:
            _freeze_identity_input(self.model)
        self.vocab_size = vocab_size
        self.seq_length = seq_length
        self.clip = clip
        self.loss_fn = nn.CrossEntropyLoss()  # mean over all T·B tokens, in nats
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = _make_optimizer(optimizer, trainable, lr, initial_accumulator)
        self.position = 0  # offset in each stream of the next chunk's first input token
        self.state: RecurrentState = None  # None: a zero state

    def parameter_count(self) -> int:
        """Number of trained scalar parameters (with nn.RNN's own W_ih and second bias, unless frozen)."""
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    def train_step(self, streams: Streams) -> float:
        """Train on the next T tokens of every stream of ``streams`` (B, L); return the mean loss in nats.

        ``streams`` may be a numpy array (shared with torch without a copy) or an integer tensor.
        """
        streams = torch.as_tensor(streams)
        stream_length = streams.shape[1]
        steps = self.seq_length
        if stream_length < steps + 1:
            raise ValueError(f"streams of {stream_length} tokens are shorter than seq_length + 1 = {steps + 1}")
        start = self.position
        chunk = streams[:, start : start + steps + 1].t().long()  # (T + 1, B)
        inputs, targets = chunk[:-1], chunk[1:]
        self.model.train()
        logits, state = self.model(inputs, self.state)  # (T, B, V)
        loss = self.loss_fn(logits.reshape(-1, self.vocab_size), targets.reshape(-1))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        for param in self.model.parameters():
            if param.grad is None:
                continue
            if param.grad.is_sparse:  # clip_grad_value_ takes dense gradients only: clamp the stored values
                param.grad = param.grad.coalesce()
                param.grad._values().clamp_(-self.clip, self.clip)
            else:
                param.grad.clamp_(-self.clip, self.clip)
        self.optimizer.step()

        self.position = start + steps
        if self.position + steps + 1 > stream_length:
            self.position, self.state = 0, None
        else:
            self.state = _detach(state)
        return loss.item()

    def evaluate(self, ids: Union[np.ndarray, Sequence[int]]) -> float:
        """Mean loss in nats per token of predicting ``ids[1:]`` from ``ids[:-1]`` (shape (N,)).

        The ids are read as ONE stream from a zero state, with the state carried across chunks of
        EVAL_CHUNK_TOKENS, so every prediction sees all the text before it. Dropout is off, no
        gradient is kept, and the training position and state are left untouched.
        """
        ids_tensor = torch.as_tensor(np.asarray(ids)).long().reshape(-1)
        if ids_tensor.numel() < 2:
            raise ValueError("evaluate needs at least two ids (one input and its target)")
        was_training = self.model.training
        self.model.eval()
        total_nats, count = 0.0, ids_tensor.numel() - 1
        state: RecurrentState = None
        try:
            with torch.no_grad():
                for start in range(0, count, EVAL_CHUNK_TOKENS):
                    stop = min(start + EVAL_CHUNK_TOKENS, count)
                    inputs = ids_tensor[start:stop].unsqueeze(1)  # (T, 1)
                    targets = ids_tensor[start + 1 : stop + 1]
                    logits, state = self.model(inputs, state)
                    total_nats += nn.functional.cross_entropy(
                        logits.reshape(-1, self.vocab_size), targets, reduction="sum"
                    ).item()
        finally:
            self.model.train(was_training)
        return total_nats / count


def make_trainer(
    vocab_size: int,
    hidden_size: int,
    num_layers: int = 1,
    cell: str = "rnn",
    dropout: float = 0.0,
    lr: float = 0.1,
    clip: float = 5.0,
    optimizer: str = "adagrad",
    seed: int = 0,
    **options,
) -> TorchTrainer:
    """A TorchTrainer; ``options`` passes the rest (seq_length, nonlinearity, init_scale, embedding_scale,
    num_threads, identity_input, initial_accumulator)."""
    return TorchTrainer(
        vocab_size,
        hidden_size,
        num_layers=num_layers,
        cell=cell,
        dropout=dropout,
        lr=lr,
        clip=clip,
        optimizer=optimizer,
        seed=seed,
        **options,
    )


# --- data, as a standalone PyTorch script would prepare it --------------------------------------------


def fit_vocabulary(text: str) -> tuple[list[str], np.ndarray]:
    """The sorted set of characters of ``text`` and the text's ids (int32, shape (N,)).

    Sorting by code point gives the same ids as charrnn's ``Tokenizer.fit(text, "char")``.
    """
    vocab = sorted(set(text))
    index = {ch: i for i, ch in enumerate(vocab)}
    return vocab, np.fromiter((index[ch] for ch in text), dtype=np.int32, count=len(text))


def split_streams(ids: np.ndarray, batch_size: int) -> np.ndarray:
    """``ids`` (N,) cut into ``batch_size`` contiguous streams, the last N mod B ids dropped: (B, N // B)."""
    stream_length = len(ids) // batch_size
    return ids[: batch_size * stream_length].reshape(batch_size, stream_length)


def read_text(path: str, encoding: str = "utf-8") -> str:
    """The decoded text of ``path``, with \\r\\n and \\r turned into \\n as charrnn does."""
    with open(path, encoding=encoding, newline=None) as f:
        return f.read()


class SmoothedLoss:
    """Bias-corrected exponential moving average of step losses, as charrnn reports it."""

    def __init__(self) -> None:
        self.average, self.count = 0.0, 0

    def add(self, loss_nats: float) -> float:
        """Fold in one step's loss and return the current smoothed value."""
        self.average = (1.0 - LOSS_SMOOTHING) * self.average + LOSS_SMOOTHING * loss_nats
        self.count += 1
        return self.average / (1.0 - (1.0 - LOSS_SMOOTHING) ** self.count)


# --- command line -------------------------------------------------------------------------------------


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the PyTorch reference char-RNN on a corpus and print tokens/s and the loss."
    )
    parser.add_argument("corpus", nargs="+", help="text files, read in order and joined")
    parser.add_argument("--encoding", default="utf-8")
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-length", type=int, default=25)
    parser.add_argument("--steps", type=int, default=100, help="timed training steps")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the timed ones")
    parser.add_argument("--cell", choices=tuple(CELLS), default="rnn")
    parser.add_argument("--nonlinearity", choices=NONLINEARITIES, default="tanh")
    parser.add_argument("--num-layers", type=int, default=1)
    parser.add_argument("--dropout", type=float, default=0.0, help="between stacked layers")
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default="adagrad")
    parser.add_argument("--learning-rate", type=float, default=0.1)
    parser.add_argument("--clip", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--init-scale", type=float, default=None,
        help="N(0, s²) weights and zero biases as charrnn does (default: PyTorch's own initialisation)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument(
        "--holdout", type=float, default=0.0,
        help="fraction of the text kept out of training and evaluated at the end (e.g. 0.1)",
    )
    return parser.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Train the reference model as the options say; print tokens/s and the loss on stdout."""
    args = _parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        print("Error: --steps must be at least 1 and --warmup at least 0", file=sys.stderr)
        return 2
    text = "".join(read_text(path, args.encoding) for path in args.corpus)
    vocab, ids = fit_vocabulary(text)
    held_out = ids[len(ids) - int(len(ids) * args.holdout) :] if args.holdout > 0 else ids[:0]
    train_ids = ids[: len(ids) - len(held_out)]
    streams = split_streams(train_ids, args.batch_size)
    if streams.shape[1] < args.seq_length + 1:
        print(f"Error: {len(train_ids)} tokens are too few for --batch-size {args.batch_size} and "
              f"--seq-length {args.seq_length}", file=sys.stderr)
        return 2
    trainer = TorchTrainer(
        len(vocab), args.hidden_size, num_layers=args.num_layers, cell=args.cell,
        nonlinearity=args.nonlinearity, dropout=args.dropout, lr=args.learning_rate, clip=args.clip,
        optimizer=args.optimizer, seq_length=args.seq_length, seed=args.seed,
        init_scale=args.init_scale, num_threads=args.threads,
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; vocabulary {len(vocab)}, "
          f"{len(train_ids):,} training tokens, {trainer.parameter_count():,} parameters")
    smoothed = SmoothedLoss()
    for _ in range(args.warmup):
        smoothed.add(trainer.train_step(streams))
    started = time.perf_counter()
    for _ in range(args.steps):
        loss_nats = trainer.train_step(streams)
        smoothed_nats = smoothed.add(loss_nats)
    elapsed_s = time.perf_counter() - started
    tokens = args.steps * args.batch_size * args.seq_length
    print(f"{args.steps} steps after {args.warmup} warm-up: {tokens / elapsed_s:,.0f} tokens/s; "
          f"last loss {loss_nats:.3f}, smoothed {smoothed_nats:.3f} nats/token")
    if len(held_out) > 1:
        held_out_nats = trainer.evaluate(held_out)
        print(f"held-out loss ({len(held_out):,} tokens, one stream): {held_out_nats:.3f} nats/token")
    return 0


if __name__ == "__main__":
    sys.exit(main())
