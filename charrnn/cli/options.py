"""Click options generated from the config dataclasses, so that each option is defined once (config.py).

``config_options(ModelConfig, ...)`` adds an option for every field that carries an ``Option``: the
flag, the help text, the default (shown in the help, or the Option's ``default_text``), the metavar,
the type (whole numbers, numbers, text, a choice, or a flag for booleans), and None as the default of
an optional setting. ``build(ModelConfig, values)`` turns the parsed values back into the dataclass.
"""

from __future__ import annotations

import dataclasses
import typing
from typing import Any, Callable, Optional, TypeVar

import click
from click.core import ParameterSource

from charrnn import config

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# The allowed values of each field that has a fixed set of them.
CHOICES = {
    "cell": config.CELLS, "activation": config.ACTIVATIONS, "dtype": config.DTYPES, "optimizer": config.OPTIMIZERS,
    "tokenizer": config.TOKENIZERS,
}


def _value_type(cls: type, field: dataclasses.Field) -> Any:
    """The field's type with Optional taken off."""
    hint = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def param_name(cls: type, name: str) -> str:
    """The click parameter of field ``name``: named after its flag (``--steps``: ``steps``), so that its
    environment variable is too (CHARRNN_TRAIN_STEPS)."""
    return config.flag(cls, name).lstrip("-").replace("-", "_")


class _WithWords(click.ParamType):
    """A value of ``base`` type, or one of the words that stand for a value (``none`` for 0)."""

    def __init__(self, base: click.ParamType, words: dict[str, Any]) -> None:
        self.base, self.words = base, words
        self.name = f"{base.name} or {' or '.join(words)}"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, str) and value.strip().lower() in self.words:
            return self.words[value.strip().lower()]
        return self.base.convert(value, param, ctx)


def _click_option(cls: type, field: dataclasses.Field, found: config.Option) -> Callable[[F], F]:
    flag, name = config.flag(cls, field.name), param_name(cls, field.name)
    kind = _value_type(cls, field)
    if kind is bool:
        return click.option(flag, name, is_flag=True, default=field.default, help=found.help)
    choices = CHOICES.get(field.name)
    if choices is not None:
        click_type: Any = click.Choice(choices)
        metavar = found.metavar or "[" + "|".join(choices) + "]"
    else:
        click_type = {int: click.INT, float: click.FLOAT, str: click.STRING}[kind]
        metavar = found.metavar or ("N" if kind is int else "X")
        if found.words:
            click_type = _WithWords(click_type, dict(found.words))
    help_text = found.help + (f" [default: {found.default_text}]" if found.default_text else "")
    # A default described in words is a rule the command applies when the option is not given.
    default = None if found.default_text else field.default
    return click.option(flag, name, type=click_type, default=default, metavar=metavar,
                        show_default=found.default_text is None and field.default is not None, help=help_text)


def config_options(*classes: type, only: Optional[set[str]] = None) -> Callable[[F], F]:
    """Decorate a click command with the options of every field of ``classes`` (or of those ``only``)."""

    def decorate(function: F) -> F:
        for cls in reversed(classes):
            for field, found in reversed(config.options(cls)):
                if only is None or field.name in only:
                    function = _click_option(cls, field, found)(function)
        return function

    return decorate


def build(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from the parsed option ``values`` (by parameter name; other options among them)."""
    return cls(**{field.name: values[param_name(cls, field.name)] for field, _ in config.options(cls)})


def given_fields(ctx: click.Context, *classes: type) -> frozenset[str]:
    """The fields of ``classes`` whose options the user gave, on the command line or in the environment."""
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(
        field.name for cls in classes for field, _ in config.options(cls)
        if ctx.get_parameter_source(param_name(cls, field.name)) in sources
    )
