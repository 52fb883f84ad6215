"""Configuration as frozen, validated dataclasses that round-trip through plain dicts (and so JSON).

The command line builds these from its options, the checkpoint stores them with ``asdict()``, and
loading a checkpoint turns the dicts back into the same dataclasses, so one definition of each setting
serves every layer.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Any, Optional, TypeVar

from charrnn.errors import ConfigError

DTYPES = ("float32", "float64")
TOKENIZERS = ("char", "jieba")
CELLS = ("rnn", "lstm", "gru")
ACTIVATIONS = ("tanh", "relu")
OPTIMIZERS = ("adagrad", "rmsprop", "adam")

T = TypeVar("T")

# Counts (sizes, steps, seeds) end up in numpy shapes, int64 arrays and int64 JSON readers: beyond this
# they overflow, so no option may exceed it.
MAX_COUNT = 2**63 - 1
# Rates that multiply float32 weights or clamp float32 gradients (the learning rate, its decay, the clip)
# must be normal float32 numbers: a larger one becomes infinity in float32 and wrecks the weights at the
# first update; a smaller one is subnormal and flushed to zero (fpu.py), so nothing would ever train.
# float64 models obey the same range, so an option means the same thing for either dtype.
FLOAT32_TINY = 2.0**-126  # 1.18e-38, the smallest normal float32
FLOAT32_MAX = (2 - 2.0**-23) * 2.0**127  # 3.40e38
# Epoch counts are compared as float64 fractions of an epoch; above 2^53 a float64 no longer holds every
# whole number, so more epochs than that cannot even be counted (and times steps per epoch overflow).
MAX_EPOCHS = 2.0**53
# Sampling divides logits by the temperature in float64; below the smallest normal float64 (a subnormal
# such as 1e-310) 1/temperature is infinite. Any normal temperature, however small, is the greedy limit.
MIN_TEMPERATURE = sys.float_info.min  # 2.2e-308


def _require_count(name: str, value: int, minimum: int) -> None:
    """``value`` is a count of at least ``minimum`` (0 or 1) that fits in int64."""
    if isinstance(value, float):  # only from a checkpoint's JSON, where NaN would pass every comparison
        _require_finite(name, value)
    if value < minimum:
        raise ConfigError(f"{name} must be {'positive' if minimum else 'zero or positive'}, got {value}")
    if value > MAX_COUNT:
        raise ConfigError(f"{name} must be at most {MAX_COUNT:,} (2^63 - 1), got {value}")


def _require_positive(name: str, value: int) -> None:
    _require_count(name, value, 1)


def _require_non_negative(name: str, value: int) -> None:
    _require_count(name, value, 0)


def _require_finite(name: str, value: float) -> None:
    # NaN compares false with everything, so every range check below would let it through.
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float (from a checkpoint's JSON)
        finite = False
    if not finite:
        raise ConfigError(f"{name} must be a finite number, got {value}")


def _require_rate(name: str, value: float) -> None:
    """A positive float that stays a normal float32 (see FLOAT32_TINY)."""
    _require_finite(name, value)
    if value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")
    if value > FLOAT32_MAX:
        raise ConfigError(f"{name} must be at most {FLOAT32_MAX:.4g}, the largest float32, got {value:g}")
    if value < FLOAT32_TINY:
        raise ConfigError(
            f"{name} must be at least {FLOAT32_TINY:.4g}, the smallest normal float32 (below it float32 "
            f"arithmetic flushes it to zero), got {value:g}"
        )


def _require_fraction(name: str, value: float) -> None:
    """``value`` is in [0, 1)."""
    _require_finite(name, value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be at least 0 and below 1, got {value}")


def _require_epochs(name: str, value: float, positive: bool) -> None:
    """``value`` is a finite number of epochs, positive or at least zero, that a float64 can count."""
    _require_finite(name, value)
    if value < 0 or (positive and value == 0):
        raise ConfigError(f"{name} must be {'positive' if positive else 'zero or positive'}, got {value}")
    if value > MAX_EPOCHS:
        raise ConfigError(f"{name} must be at most {MAX_EPOCHS:.0f} (2^53) epochs, got {value:g}")


def _require_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def describe_value(value: Any) -> str:
    """A short repr for error messages: a value read from a file may be a list of a million items."""
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def is_finite_number(value: Any) -> bool:
    """True for an int or float (not a bool) that is finite as a float: not NaN, ±inf or an int beyond 1.8e308."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


def _checked(name: str, value: Any, hint: Any) -> Any:
    """``value`` if it is of type ``hint`` (bool, int, float, str or Optional of one), else ConfigError.

    JSON has no integer type of its own, so the types are checked strictly: a bool is not an int,
    32.5 (or 32.0) is not an int, and a float must be finite (``json.loads`` turns NaN, Infinity and
    1e999 into floats). An int is accepted where a float is expected, and converted.
    """
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # Optional[X], or X | None
        if value is None:
            return None
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {describe_value(value)}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be a whole number, got {describe_value(value)}")
    if hint is float:
        if is_finite_number(value):
            return float(value)
        raise ConfigError(f"{name} must be a finite number, got {describe_value(value)}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{name} must be a string, got {describe_value(value)}")
    raise TypeError(f"from_dict cannot check a field of type {hint}")  # a new field type: teach _checked


def from_dict(cls: type[T], data: Any) -> T:
    """Build dataclass ``cls`` from ``data``, ignoring unknown keys and failing clearly on bad ones.

    Unknown keys are dropped so that a checkpoint written by a newer charrnn with extra settings still
    loads; missing keys fall back to the field defaults. Every given value must have its field's type
    (see ``_checked``); ranges are the dataclass's own ``__post_init__``'s to check.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"the {cls.__name__} settings must be a JSON object, got {describe_value(data)}")
    hints = typing.get_type_hints(cls)
    values = {f.name: _checked(f.name, data[f.name], hints[f.name])
              for f in dataclasses.fields(cls)  # type: ignore[arg-type]
              if f.name in data}
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"incomplete {cls.__name__}: {exc}") from None


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """The shape of the network: everything needed to rebuild its parameters.

    ``activation`` applies to the vanilla cell only (LSTM and GRU have their fixed nonlinearities);
    ``dropout`` is applied to the input of every layer above the first, while training only.
    """

    vocab_size: int
    hidden_size: int = 128
    num_layers: int = 1
    cell: str = "rnn"
    activation: str = "tanh"
    dropout: float = 0.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        _require_positive("vocabulary size", self.vocab_size)
        _require_positive("--hidden-size", self.hidden_size)
        _require_positive("--num-layers", self.num_layers)
        _require_choice("--cell", self.cell, CELLS)
        _require_choice("--activation", self.activation, ACTIVATIONS)
        _require_choice("--dtype", self.dtype, DTYPES)
        _require_fraction("--dropout", self.dropout)
        if self.activation != "tanh" and self.cell != "rnn":
            raise ConfigError(f"--activation applies to the vanilla rnn cell only, not to {self.cell}")


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters of the optimisation; stored in every checkpoint.

    ``max_steps`` and ``max_epochs`` both count from the start of the model's life; training stops at
    whichever comes first. With ``lr_decay`` below 1 the learning rate is multiplied by it once per
    completed epoch beyond ``lr_decay_after``.
    """

    seq_length: int = 25
    batch_size: int = 32
    optimizer: str = "adagrad"
    learning_rate: float = 0.1
    lr_decay: float = 1.0
    lr_decay_after: float = 10.0
    clip: float = 5.0
    max_steps: Optional[int] = None
    max_epochs: Optional[float] = None
    rng_seed: int = 0
    init_scale: float = 0.01
    # The first layer's input weights are its token embeddings: with one-hot inputs they are the whole
    # input signal, and at 0.01 the cell barely sees which token came in. N(0, 0.5²) gave lower
    # validation loss than 0.01 on both bundled corpora at every size and learning rate tried.
    embedding_init_scale: float = 0.5
    val_fraction: float = 0.05  # the end of the corpus held out for validation (0 with a --val-file)

    def __post_init__(self) -> None:
        _require_positive("--seq-length", self.seq_length)
        _require_positive("--batch-size", self.batch_size)
        _require_choice("--optimizer", self.optimizer, OPTIMIZERS)
        _require_rate("--learning-rate", self.learning_rate)
        _require_finite("--lr-decay", self.lr_decay)
        if not 0.0 < self.lr_decay <= 1.0:
            raise ConfigError(f"--lr-decay must be above 0 and at most 1, got {self.lr_decay}")
        _require_rate("--lr-decay", self.lr_decay)
        _require_epochs("--lr-decay-after", self.lr_decay_after, positive=False)
        _require_rate("--clip", self.clip)
        _require_non_negative("--rng-seed", self.rng_seed)
        _require_rate("initial weight scale", self.init_scale)
        _require_rate("initial embedding scale", self.embedding_init_scale)
        _require_fraction("--val-fraction", self.val_fraction)
        if self.max_steps is not None:
            _require_positive("--steps", self.max_steps)
        if self.max_epochs is not None:
            _require_epochs("--epochs", self.max_epochs, positive=True)
        if self.max_steps is None and self.max_epochs is None:
            raise ConfigError("give --steps or --epochs to say when training stops")


@dataclass(frozen=True, kw_only=True)
class ScheduleConfig:
    """What happens around the optimisation: when to sample and checkpoint, and where to write.

    These may change freely when resuming, so they are not part of the model's identity.
    """

    checkpoint_dir: str = "checkpoints"
    checkpoint_every: int = 1000
    sample_every: int = 500
    sample_length: int = 200
    eval_every: int = 500
    eval_tokens: int = 1_000_000  # validate on at most this many tokens (0: all of them)
    checkpoint_keep: int = 0  # step checkpoints to keep, newest first (0: all)

    def __post_init__(self) -> None:
        _require_non_negative("--checkpoint-every", self.checkpoint_every)
        _require_non_negative("--eval-every", self.eval_every)
        _require_non_negative("--eval-tokens", self.eval_tokens)
        _require_non_negative("--checkpoint-keep", self.checkpoint_keep)
        _require_non_negative("--sample-every", self.sample_every)
        _require_positive("sample length", self.sample_length)


@dataclass(frozen=True, kw_only=True)
class SampleConfig:
    """How to draw text from a model.

    A temperature of 0 is the limit of ever sharper distributions, so it means greedy (argmax)
    decoding, as does ``greedy=True``.
    """

    length: int = 200
    temperature: float = 1.0
    top_k: Optional[int] = None
    greedy: bool = False
    num_samples: int = 1
    rng_seed: Optional[int] = None
    allow_unknown: bool = False  # let the unknown-token marker appear in the output

    def __post_init__(self) -> None:
        _require_positive("--length", self.length)
        _require_finite("--temperature", self.temperature)
        if self.temperature < 0:
            raise ConfigError(f"--temperature must be zero or positive, got {self.temperature}")
        if 0 < self.temperature < MIN_TEMPERATURE:
            raise ConfigError(
                f"--temperature must be 0 (greedy) or at least {MIN_TEMPERATURE:.3g}, got {self.temperature:g}: "
                "logits are divided by it, and 1/temperature must be a finite float64"
            )
        _require_positive("--num-samples", self.num_samples)
        if self.top_k is not None:
            _require_positive("--top-k", self.top_k)
        if self.rng_seed is not None:
            _require_non_negative("--rng-seed", self.rng_seed)

    @property
    def is_greedy(self) -> bool:
        """True when decoding should take the most likely token at every step."""
        return self.greedy or self.temperature == 0
