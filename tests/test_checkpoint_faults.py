"""Crafted and damaged checkpoints (issue 10, items 8 and 9): each one loads as a consistent checkpoint
or is refused with one ``Error:`` line and exit 2 by every command that reads checkpoints; never a
traceback, a hang, a warning, a gigabyte of memory or an unpickled object.
"""

from __future__ import annotations

import re

import pytest

from charrnn.config import ModelConfig, TrainConfig, from_dict
from charrnn.errors import CheckpointError, ConfigError
from charrnn.tokenizer import Tokenizer
from charrnn.train import Progress


def test_from_dict_checks_types_strictly():
    assert from_dict(ModelConfig, {"vocab_size": 5, "hidden_size": 3, "dropout": 0}).dropout == 0.0
    assert from_dict(TrainConfig, {"max_steps": 9, "unknown_future_setting": [1]}).max_steps == 9
    for data, message in [
        ({"vocab_size": True}, "vocab_size must be a whole number, got True"),
        ({"vocab_size": 5.0}, "vocab_size must be a whole number, got 5.0"),
        ({"vocab_size": "5"}, "vocab_size must be a whole number, got '5'"),
        ({"vocab_size": 5, "dropout": float("nan")}, "dropout must be a finite number, got nan"),
        ({"vocab_size": 5, "dropout": 10**400}, "dropout must be a finite number, got " + "1" + "0" * 36 + "..."),
        ({"vocab_size": 5, "cell": None}, "cell must be a string, got None"),
        ({"hidden_size": 5}, "incomplete ModelConfig"),
    ]:
        with pytest.raises(ConfigError, match=re.escape(message)):
            from_dict(ModelConfig, data)
    with pytest.raises(ConfigError, match="the Progress settings must be a JSON object, got 'abc'"):
        from_dict(Progress, "abc")


def test_tokenizer_from_dict_refuses_what_no_decoded_text_holds():
    for data, message in [
        ({"kind": "jieba", "vocab": ["", "a"]}, "not a list of non-empty strings"),
        ({"kind": "char", "vocab": ["a", "\udcff"]}, "lone surrogate"),
        ({"kind": 3, "vocab": ["a"]}, "kind is not a string"),
        (["a"], "not a JSON object"),
        ({"kind": "char", "vocab": ["a"], "unknown": 1}, "unknown is not a string"),
    ]:
        with pytest.raises(CheckpointError, match=message):
            Tokenizer.from_dict(data)
