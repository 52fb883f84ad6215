"""What a resumed run may change: the settings a checkpoint fixes, and those a resume may set anew.

Each option says in its metadata (config.py, ``Option.on_resume``) whether a checkpoint FIXES it (the
model's shape, its data), lets a resume CHANGE it (the learning rate, the limits), or does not store it
at all (FREE: where to write, how often to validate). A resume that explicitly asks for a fixed setting
other than the checkpoint's is refused rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from charrnn.config import DataConfig, ModelConfig, TrainConfig
from charrnn.errors import ConfigError
from charrnn.settings import CHANGEABLE, FIXED, flag, options


def settings_on_resume(kind: str) -> dict[str, tuple[type, str]]:
    """field name -> (config class, flag) of the stored settings a resumed run treats as ``kind``."""
    return {
        f.name: (cls, flag(cls, f.name))
        for cls in (ModelConfig, TrainConfig, DataConfig)
        for f, found in options(cls)
        if found.on_resume == kind
    }


def check_conflicts(
    given: dict[str, Any], explicit: frozenset[str], stored: dict[str, Any]
) -> None:
    """Refuse (ConfigError) a resume that explicitly gives a fixed setting other than the checkpoint's.

    ``given`` and ``stored`` map field names to the request's and the checkpoint's values; ``explicit``
    names the fields the user gave.
    """
    for name, (_, flag_name) in settings_on_resume(FIXED).items():
        if name in explicit and given[name] != stored[name]:
            raise ConfigError(
                f"{flag_name} {given[name]} conflicts with the checkpoint, which has {stored[name]}; "
                "leave it out when resuming (or train a new network)"
            )


def resumed_train_config(
    stored: TrainConfig, requested: TrainConfig, explicit: frozenset[str]
) -> tuple[TrainConfig, list[str]]:
    """The checkpoint's train settings with the changeable ones the user gave; and a note for each change.

    A new limit replaces both old ones: --steps alone means no epoch limit, and the other way round.
    """
    changeable = settings_on_resume(CHANGEABLE)
    changes = {name: getattr(requested, name) for name in changeable if name in explicit}
    if explicit & {"max_steps", "max_epochs"}:
        changes["max_steps"], changes["max_epochs"] = requested.max_steps, requested.max_epochs
    notes = [
        f"{changeable[name][1]} is now {value}"
        for name, value in changes.items()
        if value is not None and value != getattr(stored, name)
    ]
    return dataclasses.replace(stored, **changes), notes
