"""Click options generated from the config dataclasses, so that each option is defined once (config.py).

``config_options(ModelConfig, ...)`` adds an option for every field that carries an ``Option``: the
flag, the help text, the default (shown in the help, or the Option's ``default_text``), the metavar,
the type (whole numbers, numbers, text, a choice, or a flag for booleans), and None as the default of
an optional setting. ``build(ModelConfig, values)`` turns the parsed values back into the dataclass.

Every option, generated or plain (``option``, for the command-line switches), is named after its long
flag, so its environment variable is too: ``--json`` of ``eval`` is CHARRNN_EVAL_JSON. A bad value
from the environment is reported by the variable's name, since that is where the user must fix it.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from typing import Any, Callable, Optional, TypeVar

import click
from click.core import ParameterSource

from charrnn import config, settings
from charrnn.errors import ConfigError

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")
# The allowed values of each field that has a fixed set of them.
CHOICES = {
    "cell": config.CELLS, "activation": config.ACTIVATIONS, "dtype": config.DTYPES, "optimizer": config.OPTIMIZERS,
    "tokenizer": config.TOKENIZERS, "backend": config.BACKENDS, "val_split": config.VAL_SPLITS,
}


class EnvOption(click.Option):
    """A click option whose errors name its environment variable when the value came from there."""

    def envvar_name(self, ctx: click.Context) -> Optional[str]:
        """The variable this option is read from: its own (CHARRNN_BACKEND) when that is set, else
        CHARRNN_<COMMAND>_<OPTION> (None outside charrnn)."""
        if isinstance(self.envvar, str) and os.environ.get(self.envvar):  # click reads it first
            return self.envvar
        if ctx.auto_envvar_prefix is None or not self.name:
            return None
        return f"{ctx.auto_envvar_prefix}_{self.name.upper()}"

    def get_error_hint(self, ctx: Optional[click.Context]) -> str:
        """``'--hidden-size'``, or ``CHARRNN_TRAIN_HIDDEN_SIZE (--hidden-size)`` for a value from the environment."""
        hint = super().get_error_hint(ctx)
        if ctx is not None and ctx.get_parameter_source(self.name) == ParameterSource.ENVIRONMENT:
            name = self.envvar_name(ctx)
            if name:
                return f"{name} ({max(self.opts, key=len)})"
        return hint


def option(*declarations: str, **settings: Any) -> Callable[[F], F]:
    """``click.option`` for a plain command-line switch, as an EnvOption named after its long flag."""
    return click.option(*declarations, cls=EnvOption, **settings)


def _quiet_here_or_before(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """-q given to the command, or to charrnn before it (``charrnn -q info``)."""
    return value or bool(ctx.parent is not None and ctx.parent.params.get("quiet"))


def quiet_option(help: str = "No informational messages on stderr.") -> Callable[[F], F]:
    """-q/--quiet, which may also come before the command (``charrnn -q eval ...``)."""
    return option("-q", "--quiet", is_flag=True, callback=_quiet_here_or_before, help=help)


def environment_source(ctx: click.Context, cls: type, field_name: str) -> Optional[str]:
    """The environment variable that set field ``field_name`` of ``cls``, or None if it was not set there."""
    name = param_name(cls, field_name)
    if ctx.get_parameter_source(name) != ParameterSource.ENVIRONMENT:
        return None
    param = next((p for p in ctx.command.params if p.name == name), None)
    return param.envvar_name(ctx) if isinstance(param, EnvOption) else None


def _value_type(cls: type, field: dataclasses.Field) -> Any:
    """The field's type with Optional taken off."""
    hint = typing.get_type_hints(cls)[field.name]
    if typing.get_origin(hint) is typing.Union:
        (hint,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    return hint


def param_name(cls: type, name: str) -> str:
    """The click parameter of field ``name``: named after its flag (``--steps``: ``steps``), so that its
    environment variable is too (CHARRNN_TRAIN_STEPS)."""
    return settings.flag(cls, name).lstrip("-").replace("-", "_")


class _WithWords(click.ParamType):
    """A value of ``base`` type, or one of the words that stand for a value (``none`` for 0)."""

    def __init__(self, base: click.ParamType, words: dict[str, Any]) -> None:
        self.base, self.words = base, words
        self.name = f"{base.name} or {' or '.join(words)}"

    def convert(self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]) -> Any:
        if isinstance(value, str) and value.strip().lower() in self.words:
            return self.words[value.strip().lower()]
        return self.base.convert(value, param, ctx)


def _click_option(cls: type, field: dataclasses.Field, found: settings.Option) -> Callable[[F], F]:
    flag, name = settings.flag(cls, field.name), param_name(cls, field.name)
    kind = _value_type(cls, field)
    envvar = {"envvar": found.envvar} if found.envvar else {}  # CHARRNN_<COMMAND>_<FLAG> works as well
    if kind is bool:
        # A setting that is on by default needs a way to turn it off: --anneal/--no-anneal.
        flags = f"{flag}/--no-{flag[2:]}" if field.default else flag
        return click.option(flags, name, cls=EnvOption, is_flag=True, default=field.default, help=found.help,
                            show_default=bool(field.default), **envvar)
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
    return click.option(flag, name, cls=EnvOption, type=click_type, default=default, metavar=metavar,
                        show_default=found.default_text is None and field.default is not None, help=help_text,
                        **envvar)


def config_options(*classes: type, only: Optional[set[str]] = None) -> Callable[[F], F]:
    """Decorate a click command with the options of every field of ``classes`` (or of those ``only``)."""

    def decorate(function: F) -> F:
        for cls in reversed(classes):
            for field, found in reversed(settings.options(cls)):
                if only is None or field.name in only:
                    function = _click_option(cls, field, found)(function)
        return function

    return decorate


def build(cls: type[T], values: dict[str, Any]) -> T:
    """``cls`` from the parsed option ``values`` (by parameter name; other options among them).

    A value out of range raises the config's ConfigError; when that value came from an environment
    variable, the message names the variable too (the flag alone would send the user to the command line).
    """
    try:
        return cls(**{field.name: values[param_name(cls, field.name)] for field, _ in settings.options(cls)})
    except ConfigError as exc:
        ctx = click.get_current_context(silent=True)
        message = str(exc)
        for field, _ in settings.options(cls) if ctx is not None else ():
            variable = environment_source(ctx, cls, field.name)
            if variable and message.startswith(settings.flag(cls, field.name) + " "):
                raise ConfigError(f"{message} (set by {variable})") from None
        raise


def given_fields(ctx: click.Context, *classes: type) -> frozenset[str]:
    """The fields of ``classes`` whose options the user gave, on the command line or in the environment."""
    sources = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)
    return frozenset(
        field.name for cls in classes for field, _ in settings.options(cls)
        if ctx.get_parameter_source(param_name(cls, field.name)) in sources
    )
