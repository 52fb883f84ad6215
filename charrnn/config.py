"""Every setting of charrnn, defined once: frozen, validated dataclasses that round-trip through JSON.

Each setting is a dataclass field: its type, its default, and (for those a user sets) an ``Option`` in
the field's metadata (charrnn/settings.py) with the command-line flag, help text, metavar and what a
resumed run may do with it. The command line generates its options from these fields
(charrnn/cli/options.py), a resumed run derives which settings the checkpoint fixes from them
(training/resume.py), the checkpoint stores the dataclasses with ``asdict()``, and loading turns the dicts
back into the same dataclasses (``settings.from_dict``). Validation errors name each setting by its flag.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Optional

from charrnn.errors import ConfigError
from charrnn.settings import (
    CHANGEABLE, FIXED, FLOAT32_MAX, MIN_TEMPERATURE, Checks, option, require_finite,
)

DTYPES = ("float32", "float64")
TOKENIZERS = ("char", "jieba")
CELLS = ("rnn", "lstm", "gru")
ACTIVATIONS = ("tanh", "relu")
OPTIMIZERS = ("adagrad", "rmsprop", "adam")
BACKENDS = ("auto", "numpy", "numba")
VAL_SPLITS = ("spread", "tail")

# The folder that holds a folder per run (checkpoints/tang300/, checkpoints/tang300-2/...), where the
# commands that read a model look when they are given none.
DEFAULT_CHECKPOINT_DIR = "checkpoints"
DEFAULT_CACHE_DIR = os.path.join("data", ".cache")
# Standard input (or a pipe, a FIFO) is copied into the cache before it is tokenized; `yes | charrnn
# train -` would otherwise fill the disk at hundreds of MB/s. Far above any char-RNN corpus piped in.
DEFAULT_SPOOL_LIMIT_MB = 4000
# Training stops after this many epochs when neither --steps nor --epochs is given.
DEFAULT_EPOCHS = 50.0
# Validations in a row without a new best before the rate is reduced, or once the reductions are spent,
# training stops early (docs/quality.md, "The learning-rate schedule"). The README's walkthrough
# (validating every 100 steps) was best at step 300 and only worse after it: 3 stopped it at step 600
# instead of training on to 2,500.
DEFAULT_PATIENCE = 3
# Each optimizer's default rate up to hidden size RATE_HIDDEN_SIZE; above it the rate shrinks as 1/H
# (default_learning_rate; docs/model.md, "Choosing a learning rate"). RMSProp and Adam divide by a running
# average of g², so their steps are about lr from the start; 0.002 is char-rnn's setting for RMSProp.
DEFAULT_LEARNING_RATES = {"adagrad": 0.02, "rmsprop": 0.002, "adam": 0.002}
RATE_HIDDEN_SIZE = 256
# Tokens a bidirectional model's right-to-left stack reads past each training window (docs/fill.md, "Training
# windows": measured against 0 and against the window's length).
DEFAULT_LOOK_AHEAD = 0


# relu's state is unbounded: at the tanh cell's rate (and with every rate down to 0.005) its first
# steps on the Tang poems reached thousands to billions of nats/token (docs/quality.md), so it trains
# at a tenth of that rate, from the small N(0, 0.01²) weights (and N(0, 0.5²) embeddings) that kept its
# first steps below 2 ln V there.
RELU_RATE_FACTOR = 0.1
RELU_INIT_SCALE = 0.01
RELU_EMBEDDING_INIT_SCALE = 0.5


def default_learning_rate(optimizer: str, hidden_size: int, activation: str = "tanh") -> float:
    """The learning rate a run of ``optimizer`` at ``hidden_size`` gets when none is given.

    The first steps of all three optimizers move every weight by about ±lr whatever its gradient (Adagrad
    divides the first gradient by its own size), so a unit's input from W_hh changes by up to lr·H at
    once: at hidden 1024, Adagrad at 0.02 diverged within 250 steps. Scaling the rate by 256/H above
    hidden 256 keeps that first change (lr·H) at most what it is at hidden 256, where the rate was tuned.
    """
    rate = DEFAULT_LEARNING_RATES[optimizer] * min(1.0, RATE_HIDDEN_SIZE / hidden_size)
    return rate * (RELU_RATE_FACTOR if activation == "relu" else 1.0)


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The shape of the network: everything needed to rebuild its parameters.

    ``activation`` applies to the vanilla cell only (LSTM and GRU have their fixed nonlinearities);
    ``dropout`` is applied to the input of every layer above the first, while training only.
    ``vocab_size`` is None only in a training request, before the corpus that decides it is read.
    ``embed_size`` D > 0 maps each token to a learned D-vector that the first layer multiplies by its own
    input matrix (D × G·H); 0 is the textbook model, whose first input matrix (V × G·H) is the embedding.
    Not given (None), it is the hidden size, as in a PyTorch model of nn.Embedding(V, H) and a cell.
    """

    vocab_size: Optional[int] = None
    # None until __post_init__ makes it the hidden size (docs/model.md, "One table, or an embedding").
    embed_size: Optional[int] = option(
        None, "Size of the learned token embedding the first layer reads (0 or none: the first layer's input "
        "weights are the embedding, one row per token).", metavar="D", on_resume=FIXED, words=(("none", 0),),
        default_text="H, the hidden size",
    )
    hidden_size: int = option(128, "Hidden units per layer.", metavar="H", on_resume=FIXED)
    num_layers: int = option(1, "Stacked recurrent layers.", metavar="L", on_resume=FIXED)
    cell: str = option("rnn", "Recurrent cell: vanilla rnn, lstm or gru.", on_resume=FIXED)
    activation: str = option("tanh", "Nonlinearity of the vanilla rnn cell.", on_resume=FIXED)
    dropout: float = option(0.0, "Dropout rate between stacked layers while training.", metavar="P",
                            on_resume=FIXED)
    dtype: str = option("float32", "Floating-point type of the weights (float64 for checking the math).",
                        on_resume=FIXED)
    # The tutorial's bidirectional RNN as a blank filler (model/bidirectional.py; docs/fill.md): a second
    # stack of its own weights reads the text right to left, and token t is predicted from the states
    # just before and just after it, p(x_t | x_<t, x_>t). Such a model fills blanks (charrnn fill); it
    # cannot generate text.
    bidirectional: bool = option(
        False, "Train a blank-filling model for charrnn fill: a second stack reads the text right to left, and "
        "each token is predicted from the text on both sides of it (it cannot sample).", on_resume=FIXED,
    )

    def __post_init__(self) -> None:
        check = Checks(self)
        check.positive("vocab_size", "hidden_size", "num_layers")
        if self.embed_size is None:  # a frozen dataclass: the default is settled once, here
            object.__setattr__(self, "embed_size", self.hidden_size)
        check.non_negative("embed_size")
        check.choice("cell", CELLS)
        check.choice("activation", ACTIVATIONS)
        check.choice("dtype", DTYPES)
        check.fraction("dropout")
        if self.activation != "tanh" and self.cell != "rnn":
            raise ConfigError(f"{check.name('activation')} applies to the vanilla rnn cell only, not to {self.cell}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters of the optimisation; stored in every checkpoint.

    ``max_steps`` and ``max_epochs`` both count from the start of the model's life; training stops at
    whichever comes first. Both may be None when a time budget (ScheduleConfig.max_seconds) ends the
    run instead (session.require_a_limit). With ``lr_decay`` below 1 the learning rate is multiplied by it once per
    completed epoch beyond ``lr_decay_after``.
    """

    seq_length: int = option(25, "Steps of truncated backpropagation through time.", metavar="T",
                             on_resume=FIXED)
    batch_size: int = option(32, "Parallel streams per step.", metavar="B", on_resume=FIXED)
    optimizer: str = option("adagrad", "Optimizer.", on_resume=FIXED)
    # None until settled() fills in default_learning_rate for the model's hidden size.
    learning_rate: Optional[float] = option(
        None, "Learning rate.", metavar="LR", on_resume=CHANGEABLE,
        default_text=", ".join(f"{rate:g} for {name}" for name, rate in DEFAULT_LEARNING_RATES.items())
        + f"; times {RATE_HIDDEN_SIZE}/H above --hidden-size {RATE_HIDDEN_SIZE}; a tenth of that for --activation relu",
    )
    lr_decay: float = option(1.0, "Multiply the learning rate by this after every epoch beyond --lr-decay-after.",
                             metavar="D", on_resume=CHANGEABLE)
    lr_decay_after: float = option(10.0, "Epochs at the full learning rate before --lr-decay starts.", metavar="E",
                                   on_resume=CHANGEABLE)
    lr_reductions: int = option(
        3, "When --patience validations in a row bring no new best, halve the learning rate and go on, up to N "
        "times; stop early only after that (0: stop at once).", metavar="N", on_resume=CHANGEABLE,
    )
    # What each reduction multiplies the rate by.
    lr_reduction_factor: float = 0.5
    anneal: bool = option(
        True, "With --max-seconds, lower the learning rate over the second half of the time budget (cosine, to "
        "a tenth by the end), so the run ends at a low rate wherever the budget cuts it off.", on_resume=CHANGEABLE,
    )
    clip: float = option(5.0, "Clip every gradient element to ±this.", metavar="C", on_resume=CHANGEABLE)
    max_steps: Optional[int] = option(None, "Stop after this many steps in the model's life.", flag="--steps",
                                      metavar="N", on_resume=CHANGEABLE)
    max_epochs: Optional[float] = option(
        None, "Stop after this many passes over the corpus (fractions allowed).", flag="--epochs", metavar="E",
        on_resume=CHANGEABLE, default_text=f"{DEFAULT_EPOCHS:g} if no --steps or --max-seconds",
    )
    rng_seed: int = option(0, "Seed for a reproducible run.", metavar="N", on_resume=FIXED,
                           default_text="random, recorded")
    # Weight matrices start as PyTorch's recurrent layers and nn.Linear start theirs, U(−1/√H, 1/√H)
    # (None), and the token embedding W_xe as nn.Embedding's, N(0, 1): at charrnn's former N(0, 0.01²)
    # the cell barely saw its input or its own state at first, and the vanilla RNN learnt less per token
    # than the same model in PyTorch (docs/quality.md). A number gives every weight N(0, init_scale²),
    # as files from before record (0.01).
    init_scale: Optional[float] = None
    embedding_init_scale: float = 1.0
    # The one-table model's first input matrix (--embed-size 0) is its embedding and feeds tanh directly:
    # N(0, 0.5²) gave lower validation loss than 0.01 on both bundled corpora at every size tried.
    table_init_scale: float = 0.5
    # Adagrad's sums of squared gradients start here rather than at zero (optim.init_state).
    adagrad_initial_accumulator: float = 0.0
    val_fraction: float = option(0.05, "Hold out this fraction of the corpus for validation (0: none); see --val-split.",
                                 metavar="F", on_resume=FIXED)
    # A bidirectional model's backward stack starts from a zero state at the end of every window: the
    # state from the future cannot be carried the way the forward one is. It reads up to this many tokens
    # past the window first, so that the window's last tokens see some right context (docs/fill.md).
    look_ahead: int = option(
        DEFAULT_LOOK_AHEAD, "Tokens past each training window that a --bidirectional model's right-to-left stack "
        "reads first (0: it starts at the window's end).", metavar="N", on_resume=FIXED,
    )
    # Checkpoints written before the setting existed held out the tail: metadata.py reads them so.
    val_split: str = option(
        "spread", "Which text --val-fraction holds out: spread (every 20th block of whole lines for 5%, "
        "spread across the corpus from a seeded start) or tail (the end of the corpus).", on_resume=FIXED,
    )
    # The spread split's nominal block length in tokens: None until the corpus decides it
    # (streams.spread_block_tokens), then recorded so that a resumed run cuts the same blocks.
    val_block_tokens: Optional[int] = None
    val_seed: int = 0  # the spread split's phase; the same for every run, so runs on a corpus validate alike

    def __post_init__(self) -> None:
        check = Checks(self)
        check.positive("seq_length", "batch_size", "max_steps")
        check.non_negative("look_ahead")
        check.non_negative("lr_reductions")
        check.choice("optimizer", OPTIMIZERS)
        if self.learning_rate is not None:
            check.rate("learning_rate")
        require_finite(check.name("lr_decay"), self.lr_decay)
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"{check.name('lr_decay')} must be above 0 and at most 1, got {self.lr_decay}")
        check.rate("lr_decay", "clip", "embedding_init_scale", "table_init_scale")
        if self.init_scale is not None:
            check.rate("init_scale")
        if not 0.0 < self.lr_reduction_factor < 1.0:
            raise ConfigError(f"{check.name('lr_reduction_factor')} must be above 0 and below 1, got {self.lr_reduction_factor}")
        name = check.name("adagrad_initial_accumulator")
        require_finite(name, self.adagrad_initial_accumulator)
        if not 0.0 <= self.adagrad_initial_accumulator <= FLOAT32_MAX:
            raise ConfigError(f"{name} must be from 0 to {FLOAT32_MAX:.4g}, got {self.adagrad_initial_accumulator}")
        check.epochs("lr_decay_after", positive=False)
        check.epochs("max_epochs", positive=True)
        check.non_negative("rng_seed")
        check.fraction("val_fraction")
        check.choice("val_split", VAL_SPLITS)
        check.positive("val_block_tokens")
        check.non_negative("val_seed")

    def initial_scales(self, model: ModelConfig) -> tuple[Optional[float], float, float]:
        """(weights, embedding, one-table) scales that a fresh ``model`` is drawn with (network.init_params):
        these settings', except that a relu cell left at the default weights starts small (RELU_INIT_SCALE)."""
        if model.activation == "relu" and self.init_scale is None:
            return RELU_INIT_SCALE, RELU_EMBEDDING_INIT_SCALE, self.table_init_scale
        return self.init_scale, self.embedding_init_scale, self.table_init_scale

    def settled(self, model: ModelConfig) -> TrainConfig:
        """This config with its learning rate decided: the given one, else ``default_learning_rate`` for
        the optimizer at ``model``'s hidden size. A model trains (and its checkpoint records) this rate."""
        if self.learning_rate is not None:
            return self
        rate = default_learning_rate(self.optimizer, model.hidden_size, model.activation)
        return dataclasses.replace(self, learning_rate=rate)


@dataclass(frozen=True, kw_only=True)
class DataConfig:
    """How corpus files become token ids. ``tokenizer`` and ``max_vocab`` shape the vocabulary, so a
    checkpoint fixes them; the others only say how to read and where to cache."""

    tokenizer: str = option("char", "Tokens are characters, or words cut by jieba (precise mode).",
                            on_resume=FIXED)
    encoding: str = option("auto", "Codec of the text files; auto tries a byte-order mark, UTF-8, then GB18030 (GBK).",
                           metavar="CODEC")
    max_vocab: Optional[int] = option(
        None, "Keep the N most frequent tokens; the rest become <unk> (for word vocabularies).", metavar="N",
        on_resume=FIXED,
    )
    cache_dir: str = option(DEFAULT_CACHE_DIR, "Where tokenized corpora are kept (see charrnn prepare).",
                            metavar="DIR")
    spool_limit_mb: int = option(
        DEFAULT_SPOOL_LIMIT_MB, "Standard input, a pipe or a FIFO is copied into --cache-dir before it is "
        "tokenized: refuse one longer than this many megabytes (0: no limit but the disk's free space).",
        metavar="MB",
    )

    def __post_init__(self) -> None:
        check = Checks(self)
        check.choice("tokenizer", TOKENIZERS)
        check.positive("max_vocab")
        check.non_negative("spool_limit_mb")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """What happens around the optimisation: when to validate, sample and checkpoint, where to write,
    and how long this run may take.

    These may change freely when resuming, so they are not part of the model's identity.
    ``max_seconds`` counts the wall-clock time of this run's training (periodic validation, samples
    and checkpoints included), from its first step; the final validation and save come after it. A run
    trains at least one step whatever its budget, so it always saves a model of its own.
    """

    # None: a new run gets a folder of its own (training/folder.py, secure_run_folder), a resumed run
    # writes beside the checkpoint it resumes.
    checkpoint_dir: Optional[str] = option(
        None, "Folder for this run's checkpoints; one that holds another model is refused (see --overwrite).",
        metavar="DIR", default_text=f"a new folder {DEFAULT_CHECKPOINT_DIR}/<corpus name>/ (<corpus name>-2/ and so "
        "on when that one holds another model); with --resume, the resumed checkpoint's folder",
    )
    checkpoint_every: int = option(1000, "Save a checkpoint every N steps (0: only at the end).", metavar="N")
    checkpoint_keep: int = option(0, "Keep only the K newest step checkpoints, besides latest and best (0: keep all).",
                                  metavar="K")
    eval_every: int = option(500, "Validate every N steps (0: only at the end).", metavar="N")
    patience: int = option(
        DEFAULT_PATIENCE, "Stop early after N validations in a row without a new best validation loss (0: never); "
        "best.npz keeps the best.", metavar="N",
    )
    eval_tokens: int = option(1_000_000, "Validate on at most the first N validation tokens (0: all).", metavar="N")
    sample_every: int = option(500, "Print a sample every N steps (0: never).", metavar="N")
    max_seconds: Optional[float] = option(
        None, "Stop after S seconds of training in this run (at least one step), then validate and save as at "
              "any end (for a time budget per run).", metavar="S",
    )
    sample_length: int = 200

    def __post_init__(self) -> None:
        check = Checks(self)
        check.non_negative("checkpoint_every", "checkpoint_keep", "eval_every", "eval_tokens", "sample_every", "patience")
        check.positive("sample_length")
        if self.max_seconds is not None:
            name = check.name("max_seconds")
            require_finite(name, self.max_seconds)
            if self.max_seconds <= 0:
                raise ConfigError(f"{name} must be positive, got {self.max_seconds:g}")


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """How to draw text from a model.

    A temperature of 0 is the limit of ever sharper distributions, so it means greedy (argmax)
    decoding, as does ``greedy=True``.
    """

    length: int = option(200, "Tokens to generate.", metavar="N")
    temperature: float = option(1.0, "Below 1: safer text; above 1: wilder; 0 means --greedy.", metavar="T")
    top_k: Optional[int] = option(None, "Sample only among the K most likely tokens.", metavar="K")
    greedy: bool = option(False, "Always take the most likely token.")
    num_samples: int = option(1, "Independent samples, generated together as one batch.", metavar="N")
    rng_seed: Optional[int] = option(None, "Seed for reproducible samples.", metavar="N", default_text="random")
    allow_unknown: bool = option(False, "Let <unk> (a token cut by --max-vocab) appear in the output.",
                                 flag="--allow-unk")

    def __post_init__(self) -> None:
        check = Checks(self)
        check.positive("length", "num_samples", "top_k")
        check.non_negative("rng_seed")
        name = check.name("temperature")
        require_finite(name, self.temperature)
        if self.temperature < 0:
            raise ConfigError(f"{name} must be zero or positive, got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ConfigError(
                f"{name} must be 0 (greedy) or at least {MIN_TEMPERATURE:.3g}, got {self.temperature:g}: "
                "logits are divided by it, and 1/temperature must be a finite float64"
            )

    @property
    def is_greedy(self) -> bool:
        """True when decoding should take the most likely token at every step."""
        return self.greedy or self.temperature == 0


@dataclass(frozen=True, kw_only=True)
class ComputeConfig:
    """How the hot loops run (model/backend.py): never what is computed, so no checkpoint fixes it."""

    backend: str = option(
        "auto", "Run the hot loops on numpy, or on numba's compiled kernels (pip install '.[fast]' from the "
        "checkout); auto: numba where it is installed, except for sampling, which it does not speed up.",
        envvar="CHARRNN_BACKEND",
    )

    def __post_init__(self) -> None:
        Checks(self).choice("backend", BACKENDS)
