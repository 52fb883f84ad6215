"""How a setting is declared and checked: the ``Option`` metadata of config fields, and value checks.

A setting is a dataclass field (charrnn/config.py); a field that the user sets carries an ``Option`` in
its metadata: the command-line flag, help text, metavar and what a resumed run may do with it. The
command line generates its options from them (charrnn/cli/options.py). The checks here raise
ConfigError naming the setting by its flag, for values from the command line and from a checkpoint's
JSON alike (``from_dict``).
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

T = TypeVar("T")

# Counts (sizes, steps, seeds) end up in numpy shapes, int64 arrays and int64 JSON readers: beyond this
# they overflow, so no option may exceed it.
MAX_COUNT = 2**63 - 1
# Rates that multiply float32 weights or clamp float32 gradients (the learning rate, its decay, the clip)
# must be normal float32 numbers: a larger one becomes infinity in float32 and wrecks the weights at the
# first update; a smaller one is subnormal, and the steps it scales, below 1e-38, would change no weight
# (slowly: x86 processors compute subnormals in microcode), so nothing would ever train.
# float64 models obey the same range, so an option means the same thing for either dtype.
FLOAT32_TINY = 2.0**-126  # 1.18e-38, the smallest normal float32
FLOAT32_MAX = (2 - 2.0**-23) * 2.0**127  # 3.40e38
# Epoch counts are compared as float64 fractions of an epoch; above 2^53 a float64 no longer holds every
# whole number, so more epochs than that cannot even be counted (and times steps per epoch overflow).
MAX_EPOCHS = 2.0**53
# Sampling divides logits by the temperature in float64; below the smallest normal float64 (a subnormal
# such as 1e-310) 1/temperature is infinite. Any normal temperature, however small, is the greedy limit.
MIN_TEMPERATURE = sys.float_info.min  # 2.2e-308


# What a resumed run may do with a setting: FIXED settings define the model or its data, and giving a
# value other than the checkpoint's is an error; CHANGEABLE ones take the new value (and say so); FREE
# ones are not stored in checkpoints at all.
FIXED, CHANGEABLE, FREE = "fixed", "changeable", "free"


@dataclass(frozen=True)
class Option:
    """How a config field is set from the command line (and the environment)."""

    help: str
    flag: str = ""  # default: the field's name as --a-flag
    metavar: Optional[str] = None  # default: the choices, or N for whole numbers and X for other values
    on_resume: str = FREE
    default_text: Optional[str] = None  # what the help shows as the default when the field's default is None
    envvar: Optional[str] = None  # an environment variable that sets it for every command, besides CHARRNN_<COMMAND>_<FLAG>
    words: tuple[tuple[str, Any], ...] = ()  # words the command line accepts for values, e.g. (("none", 0),)


def option(default: Any, help: str, **settings: Any) -> Any:
    """A dataclass field with ``default`` that is also a command-line option (see ``Option``)."""
    return dataclasses.field(default=default, metadata={"option": Option(help, **settings)})


def options(cls: type) -> list[tuple[dataclasses.Field, Option]]:
    """The fields of config class ``cls`` that are command-line options, in order, with their Option."""
    return [(f, f.metadata["option"]) for f in dataclasses.fields(cls) if "option" in f.metadata]


def flag(cls: type, name: str) -> str:
    """The command-line flag of field ``name`` of ``cls`` (``--hidden-size``), or the name in words."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            found = f.metadata.get("option")
            if found is not None:
                return found.flag or "--" + name.replace("_", "-")
    return name.replace("_", " ")


class Checks:
    """Range checks of one config's fields, each error naming the field by its flag."""

    def __init__(self, config: Any) -> None:
        self.config = config

    def name(self, field: str) -> str:
        """The flag (or the words) that an error about ``field`` names."""
        return flag(type(self.config), field)

    def count(self, field: str, minimum: int) -> None:
        """A whole number of at least ``minimum`` that fits in int64 (None is allowed: not set)."""
        value = getattr(self.config, field)
        if value is not None:
            _require_count(self.name(field), value, minimum)

    def positive(self, *fields: str) -> None:
        """Each field is a count of at least 1."""
        for field in fields:
            self.count(field, 1)

    def non_negative(self, *fields: str) -> None:
        """Each field is a count of at least 0."""
        for field in fields:
            self.count(field, 0)

    def rate(self, *fields: str) -> None:
        """Each field is a positive normal float32 (see FLOAT32_TINY)."""
        for field in fields:
            _require_rate(self.name(field), getattr(self.config, field))

    def fraction(self, *fields: str) -> None:
        """Each field is in [0, 1)."""
        for field in fields:
            _require_fraction(self.name(field), getattr(self.config, field))

    def epochs(self, field: str, positive: bool) -> None:
        """A number of epochs a float64 can count (None is allowed: not set)."""
        value = getattr(self.config, field)
        if value is not None:
            _require_epochs(self.name(field), value, positive)

    def choice(self, field: str, choices: tuple[str, ...]) -> None:
        """One of ``choices``."""
        _require_choice(self.name(field), getattr(self.config, field), choices)


def _require_count(name: str, value: int, minimum: int) -> None:
    """``value`` is a count of at least ``minimum`` (0 or 1) that fits in int64."""
    if isinstance(value, float):  # only from a checkpoint's JSON, where NaN would pass every comparison
        require_finite(name, value)
    if value < minimum:
        raise ConfigError(f"{name} must be {'positive' if minimum else 'zero or positive'}, got {value}")
    if value > MAX_COUNT:
        raise ConfigError(f"{name} must be at most {MAX_COUNT:,} (2^63 - 1), got {value}")


def require_finite(name: str, value: float) -> None:
    # NaN compares false with everything, so every range check below would let it through.
    try:
        finite = math.isfinite(value)
    except OverflowError:  # an integer beyond any float (from a checkpoint's JSON)
        finite = False
    if not finite:
        raise ConfigError(f"{name} must be a finite number, got {value}")


def _require_rate(name: str, value: float) -> None:
    """A positive float that stays a normal float32 (see FLOAT32_TINY)."""
    require_finite(name, value)
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
    require_finite(name, value)
    if not 0.0 <= value < 1.0:
        raise ConfigError(f"{name} must be at least 0 and below 1, got {value}")


def _require_epochs(name: str, value: float, positive: bool) -> None:
    """``value`` is a finite number of epochs, positive or at least zero, that a float64 can count."""
    require_finite(name, value)
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
